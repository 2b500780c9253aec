"""A tenant's day cap full only of reservations of calls in flight: the event waits for those calls to
settle (a moment), not for the next UTC day, sends no budget alert and is no dead letter under
``on_cap = "dead"``. A cap full of settled spend still waits for the window. ``handle_event`` driven
directly against the real Postgres and the fake Messages API; the call in flight is the reservation
the Gate takes before sending one (``limits.reserve``)."""

from __future__ import annotations

from decimal import Decimal

import pytest

from tests.fakes.messages_api import FakeMessagesAPI, reply
from tests.harness import Receiver, rows
from tests.worker.test_flow import (
    GOOD,
    USAGE,
    event_row,
    insert_event,
    make_config,
    reservation_tokens,
    runtime_for,
)
from worker import limits
from worker.prompt import build_request
from worker.runtime import Runtime
from worker.tasks import RetryLater, handle_event

ALERTS = [{"type": "http", "url_env": "HL_OPS_URL"}]


pytestmark = pytest.mark.usefixtures("stripe_and_crm")


@pytest.fixture(autouse=True)
def env(monkeypatch: pytest.MonkeyPatch, receiver: Receiver) -> None:
    monkeypatch.setenv("HL_OPS_URL", receiver.url.replace("/hook", "/ops"))


async def held_for(rt: Runtime, db_url: str, event_id: int) -> tuple[float, str]:
    """Run the event's job once; it must be held. Its reschedule delay and detail."""
    with pytest.raises(RetryLater) as later:
        await handle_event(rt, event_id)
    ((status, detail),) = rows(db_url, "SELECT status, detail FROM hookline.events WHERE id = %s", event_id)
    assert status == "throttled", detail
    return later.value.delay, str(detail)


@pytest.mark.parametrize("on_cap", ["throttle", "dead"])
async def test_a_cap_full_only_of_calls_in_flight_waits_for_them_not_for_the_next_day(
    db_url: str, fake: FakeMessagesAPI, receiver: Receiver, opened: list[Runtime], on_cap: str
) -> None:
    fake.set_default(reply(GOOD, usage=USAGE))  # every call: 150 tokens
    first, waiting = insert_event(db_url, "evt_f0", "t"), insert_event(db_url, "evt_f1", "t")
    r = reservation_tokens(make_config({}), event_row(db_url, first))
    config = make_config({}, tenants={"*": {"tokens_per_day": r + 1000, "on_cap": on_cap}}, alerts=ALERTS)
    rt = await runtime_for(db_url, fake, config)
    opened.append(rt)
    # first's call is in flight: its worst case (r) is reserved; r + r > the cap, nothing settled yet
    request = build_request(config.pipelines["triage"], event_row(db_url, first))
    res = await limits.reserve(rt, event_row(db_url, first), request, lease_seconds=60)

    delay, detail = await held_for(rt, db_url, waiting)
    assert "1 call(s) in flight" in detail and "waits for calls in flight to settle" in detail, detail
    assert "reopen" not in detail
    assert delay <= limits.IN_FLIGHT_RETRY_SECONDS * 1.5  # retried shortly, not at the next UTC midnight
    await rt.wait_for_alerts()  # alerts go on their own task (worker.alerts)
    assert [x for x in receiver.received if x.path == "/ops"] == []  # no "reached 100%" budget alert
    assert rows(db_url, "SELECT count(*) FROM hookline.dead_letters") == [(0,)]

    # first's call answers: 150 tokens settle in place of its reservation; the waiting event goes on
    await limits.settle(rt, event_row(db_url, first), res, USAGE, Decimal(0))
    assert await handle_event(rt, waiting) == "succeeded"
    window = rows(
        db_url, "SELECT tokens, reserved_tokens FROM hookline.budget_windows WHERE tenant = 't' AND period = 'day'"
    )
    assert window == [(300, 0)]


async def test_a_cap_full_of_settled_spend_still_waits_for_the_window_and_alerts(
    db_url: str, fake: FakeMessagesAPI, receiver: Receiver, opened: list[Runtime]
) -> None:
    fake.set_default(reply(GOOD, usage=USAGE))
    first, waiting = insert_event(db_url, "evt_s0", "t"), insert_event(db_url, "evt_s1", "t")
    r = reservation_tokens(make_config({}), event_row(db_url, first))
    config = make_config({}, tenants={"*": {"tokens_per_day": r + 100}}, alerts=ALERTS)
    rt = await runtime_for(db_url, fake, config)
    opened.append(rt)
    assert await handle_event(rt, first) == "succeeded"  # 150 settled: 150 + r > r + 100

    delay, detail = await held_for(rt, db_url, waiting)
    ((tomorrow,),) = rows(
        db_url, "SELECT window_start + interval '1 day' FROM hookline.budget_windows WHERE period = 'day'"
    )
    assert f"waits for the window to reopen at {tomorrow.isoformat()}" in detail, detail  # the next UTC day
    assert "in flight" not in detail and delay > limits.IN_FLIGHT_RETRY_SECONDS * 1.5
    await rt.wait_for_alerts()
    alerts = [x for x in receiver.received if x.path == "/ops"]
    assert len(alerts) == 1 and alerts[0].json()["output"]["tenant"] == "t"
