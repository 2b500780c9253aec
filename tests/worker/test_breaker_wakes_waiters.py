"""Events held by an open breaker run again as soon as its half-open probe closes it. While the probe
is out, every other call of the model is told to come back when the probe would be presumed lost
(PROBE_TIMEOUT_SECONDS, 2 minutes): without a wake-up, a probe that succeeded in a second left the
events it held throttled for two more minutes. ``handle_event`` against the real Postgres (the events'
real procrastinate jobs) and the fake Messages API."""

from __future__ import annotations

import asyncio
import contextlib

import pytest

from tests.fakes._steps import Step, error, rate_limited
from tests.fakes.messages_api import FakeMessagesAPI, held, reply
from tests.harness import rows
from tests.worker.test_breaker_probe import BREAKER, open_breaker_due_for_its_probe
from tests.worker.test_flow import GOOD, MODEL, USAGE, insert_event, make_config, runtime_for
from worker.outcomes import RetryLater
from worker.runtime import Runtime
from worker.tasks import handle_event

pytestmark = pytest.mark.usefixtures("stripe_and_crm")


def job_due(db_url: str, event_id: int) -> bool:
    (row,) = rows(
        db_url,
        "SELECT scheduled_at IS NULL OR scheduled_at <= now() FROM procrastinate_jobs "
        "WHERE task_name = 'hookline:process_event' AND status = 'todo' AND (args->>'event_id')::bigint = %s",
        event_id,
    )
    return bool(row[0])


async def test_a_probe_that_closes_the_breaker_wakes_the_events_it_held(
    db_url: str, fake: FakeMessagesAPI, opened: list[Runtime]
) -> None:
    rt = await runtime_for(db_url, fake, make_config({}, models={MODEL: {"breaker": BREAKER}}))
    opened.append(rt)
    open_breaker_due_for_its_probe(db_url)
    probe, waiting = insert_event(db_url, "evt_bw_probe"), insert_event(db_url, "evt_bw_wait")
    fake.enqueue(held(reply(GOOD, usage=USAGE)))
    fake.set_default(reply(GOOD, usage=USAGE))

    probing = asyncio.create_task(handle_event(rt, probe))
    await asyncio.to_thread(fake.wait_for_calls, "/v1/messages", 1, 30.0)  # the probe is out, held by the fake
    with pytest.raises(RetryLater) as hold:
        await handle_event(rt, waiting)
    assert "circuit breaker" in str(hold.value)
    assert hold.value.delay > 60  # told to come back when the probe would be presumed lost
    # what procrastinate does with the hold: the job runs again in hold.value.delay seconds
    rows(
        db_url,
        "UPDATE procrastinate_jobs SET scheduled_at = now() + make_interval(secs => %s) "
        "WHERE task_name = 'hookline:process_event' AND (args->>'event_id')::bigint = %s RETURNING 1",
        hold.value.delay,
        waiting,
    )
    assert not job_due(db_url, waiting)

    fake.open_gate()
    assert await probing == "succeeded"
    assert rows(db_url, "SELECT state FROM hookline.breakers WHERE model = %s", MODEL) == [("closed",)]
    assert job_due(db_url, waiting)  # woken by the probe that closed the breaker


def hold_job(db_url: str, event_id: int, delay: float) -> None:
    """What procrastinate does with a hold: the event's job runs again in ``delay`` seconds."""
    rows(
        db_url,
        "UPDATE procrastinate_jobs SET scheduled_at = now() + make_interval(secs => %s) "
        "WHERE task_name = 'hookline:process_event' AND (args->>'event_id')::bigint = %s RETURNING 1",
        delay,
        event_id,
    )


@pytest.mark.parametrize("answer", [rate_limited(0), error(400, "invalid_request_error")], ids=["429", "400"])
async def test_a_probe_given_back_wakes_one_held_event_to_probe_next(
    db_url: str, fake: FakeMessagesAPI, opened: list[Runtime], answer: Step
) -> None:
    """A probe answered 4xx/429 is given back (the breaker stays open, due for a probe): the events the
    open breaker held must not sit out PROBE_TIMEOUT_SECONDS. The longest held one runs at once and
    takes the probe; the others stay held (one probe, no herd) until that probe decides."""
    rt = await runtime_for(db_url, fake, make_config({}, models={MODEL: {"breaker": BREAKER}}))
    opened.append(rt)
    open_breaker_due_for_its_probe(db_url)
    probe = insert_event(db_url, "evt_gb_probe")
    first, second = insert_event(db_url, "evt_gb_1"), insert_event(db_url, "evt_gb_2")
    fake.enqueue(held(answer))
    fake.set_default(reply(GOOD, usage=USAGE))

    probing = asyncio.create_task(handle_event(rt, probe))
    await asyncio.to_thread(fake.wait_for_calls, "/v1/messages", 1, 30.0)
    for waiting in (first, second):
        with pytest.raises(RetryLater) as hold:
            await handle_event(rt, waiting)
        assert "circuit breaker" in str(hold.value) and hold.value.delay > 60
        hold_job(db_url, waiting, hold.value.delay)
    assert not job_due(db_url, first) and not job_due(db_url, second)

    fake.open_gate()
    with contextlib.suppress(Exception):
        await probing  # a 429 is retried later, a 400 is the probe event's own failure
    (state,) = rows(db_url, "SELECT state, probe_at IS NULL FROM hookline.breakers WHERE model = %s", MODEL)
    assert state == ("open", True)  # given back, not closed: the model's health is still unknown
    assert job_due(db_url, first), "the longest held event still waits for PROBE_TIMEOUT_SECONDS"
    assert not job_due(db_url, second)  # one event woken to probe, not every held one
    if answer.status == 400:  # 429's retry-after holds the model's rate limit for a moment
        assert await handle_event(rt, first) == "succeeded"  # the next probe, which closes the breaker
        assert job_due(db_url, second)
