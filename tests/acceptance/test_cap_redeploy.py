"""A deploy that raises or removes a tenant cap releases the events held at the old cap: a starting
worker runs the jobs of throttled events now, and an event still over a cap is held again without a
model call and without a second alert. Real web, worker, Postgres; the fake Messages API."""

from __future__ import annotations

import asyncio
import time

import httpx

from tests.acceptance.test_limits import GOOD, USAGE, deliver, env, event_body, make_config, settings_for  # noqa: F401
from tests.chaos_support import wait_until
from tests.fakes.messages_api import FakeMessagesAPI, reply
from tests.harness import Receiver, rows, wait_for_status, web_server, worker_task

OPS = [{"type": "http", "url_env": "HL_OPS_URL"}]


def job_runs(db_url: str, event_id: int) -> int:
    """How often the event's process_event job ran (procrastinate counts every retry)."""
    ((n,),) = rows(
        db_url,
        "SELECT attempts FROM procrastinate_jobs WHERE task_name = 'hookline:process_event' AND args->>'event_id' = %s",
        str(event_id),
    )
    return int(n)


async def held_at_one_per_hour(db_url: str, fake: FakeMessagesAPI) -> tuple[int, int]:
    """Two events of tenant t under events_per_hour = 1: the first answered, the second throttled."""
    low = make_config(tenants={"*": {"events_per_hour": 1}}, alerts=OPS)
    settings = settings_for(db_url, fake)
    async with web_server(settings, low) as base, worker_task(settings, low), httpx.AsyncClient() as client:
        first = await deliver(client, base, event_body("evt_cap0", tenant="t"))
        assert (await wait_for_status(db_url, first))["status"] == "succeeded"
        second = await deliver(client, base, event_body("evt_cap1", tenant="t"))
        held = await wait_for_status(db_url, second, ("throttled",))
    assert "events_per_hour = 1" in str(held["detail"])
    # the job is rescheduled just after the status is written (procrastinate's retry): wait for it
    deadline = time.monotonic() + 10
    later = False
    while not later and time.monotonic() < deadline:
        ((later,),) = rows(
            db_url,
            "SELECT scheduled_at > now() + interval '1 minute' FROM procrastinate_jobs WHERE args->>'event_id' = %s",
            str(second),
        )
        if not later:
            await asyncio.sleep(0.05)
    assert later  # held until the hour's window reopens
    return first, second


async def test_a_raised_cap_releases_the_held_events_at_the_next_start(
    db_url: str, fake: FakeMessagesAPI, receiver: Receiver
) -> None:
    fake.set_default(reply(GOOD, usage=USAGE))
    _, second = await held_at_one_per_hour(db_url, fake)
    raised = make_config(tenants={"*": {"events_per_hour": 1000}}, alerts=OPS)
    async with worker_task(settings_for(db_url, fake), raised):
        assert (await wait_for_status(db_url, second))["status"] == "succeeded"
    assert len(fake.calls_to("/v1/messages")) == 2


async def test_an_event_still_over_its_cap_is_held_again_without_a_call_or_an_alert(
    db_url: str, fake: FakeMessagesAPI, receiver: Receiver
) -> None:
    fake.set_default(reply(GOOD, usage=USAGE))
    _, second = await held_at_one_per_hour(db_url, fake)
    alerts = [x for x in receiver.received if x.path == "/ops"]
    assert len(alerts) == 1  # the cap was reached: one alert for this window
    runs = job_runs(db_url, second)
    same = make_config(tenants={"*": {"events_per_hour": 1}}, alerts=OPS)
    async with worker_task(settings_for(db_url, fake), same):
        await wait_until(lambda: job_runs(db_url, second) > runs, timeout=20, what="the held job to run at the start")
        held = await wait_for_status(db_url, second, ("throttled",))
    assert "events_per_hour = 1" in str(held["detail"])
    assert len(fake.calls_to("/v1/messages")) == 1  # only the first event's
    assert len([x for x in receiver.received if x.path == "/ops"]) == 1  # no second alert
