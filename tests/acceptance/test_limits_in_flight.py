"""A day cap full only of reservations of calls in flight: the event that finds no room waits for those
calls to settle, not for the next UTC day, and no budget alert says the tenant reached its cap. Real
web, worker, Postgres and the anthropic SDK against the fake Messages API."""

from __future__ import annotations

import httpx

from tests.acceptance.test_limits import (
    GOOD,
    USAGE,
    deliver,
    env,  # noqa: F401  (autouse fixture)
    event_body,
    make_config,
    reservation_of,
    settings_for,
    statuses,
    wait_until,
)
from tests.fakes.messages_api import FakeMessagesAPI, held, reply
from tests.harness import Receiver, rows, wait_for_status, web_server, worker_task


async def test_calls_in_flight_hold_the_next_event_only_until_they_settle(
    db_url: str, fake: FakeMessagesAPI, receiver: Receiver
) -> None:
    fake.set_default(held(reply(GOOD, usage=USAGE)))  # every call: 150 tokens, once the test opens the gate
    probe = make_config(pipelines={"triage": {"max_tokens": 2000}})
    r = reservation_of(probe, event_body("evt_a0", tenant="a"))
    cap = r + 1000  # room for one reservation in flight at a time, and for many calls of 150 tokens
    config = make_config(
        pipelines={"triage": {"max_tokens": 2000}},
        tenants={"*": {"tokens_per_day": cap}},
        alerts=[{"type": "http", "url_env": "HL_OPS_URL"}],
    )
    settings = settings_for(db_url, fake)
    async with web_server(settings, config) as base, worker_task(settings, config), httpx.AsyncClient() as client:
        events = [await deliver(client, base, event_body(f"evt_a{i}", tenant="a")) for i in range(2)]

        def waiting_for_calls() -> bool:
            return any(s == "throttled" and "in flight" in str(d) for s, d in statuses(db_url).values())

        await wait_until(waiting_for_calls, "an event throttled by the call in flight")
        (detail,) = [d for s, d in statuses(db_url).values() if s == "throttled"]
        assert "waits for calls in flight to settle" in str(detail) and "reopen" not in str(detail), detail
        fake.open_gate()  # the call in flight answers: 150 tokens settle in place of its reservation
        for eid in events:
            assert (await wait_for_status(db_url, eid, timeout=30))["status"] == "succeeded"
    day = rows(db_url, "SELECT tokens, reserved_tokens FROM hookline.budget_windows WHERE period = 'day'")
    assert day == [(300, 0)]
    assert fake.max_in_flight("/v1/messages") == 1  # the cap never let both worst cases be in flight
    assert [x for x in receiver.received if x.path == "/ops"] == []  # 300 of the cap: no budget alert
