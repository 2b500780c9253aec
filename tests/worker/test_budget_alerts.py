"""Budget and loop-guard alerts: a tenant's day budget alerts once when its settled spend crosses
``alert_at`` and once more when the cap is reached and events are held, each once per window; every
alert logs one WARNING line (``alert (KIND): …``), with or without ``[[alerts]]``. ``handle_event``
driven directly against the real Postgres and the fake Messages API; the alerts go to the receiver."""

from __future__ import annotations

import logging

import psycopg
import pytest

from app.cli.spend import spend_today
from tests.fakes.messages_api import FakeMessagesAPI, reply
from tests.harness import Receiver, rows
from tests.worker.test_flow import (
    GOOD,
    USAGE,
    event_row,
    held,
    insert_event,
    make_config,
    reservation_tokens,
    runtime_for,
)
from tests.worker.test_reserved_in_flight import ALERTS
from tests.worker.test_reserved_in_flight import env as env  # HL_OPS_URL: the receiver's /ops
from worker.runtime import Runtime
from worker.tasks import handle_event

pytestmark = pytest.mark.usefixtures("stripe_and_crm")


def alert_lines(caplog: pytest.LogCaptureFixture, kind: str) -> list[str]:
    return [r.getMessage() for r in caplog.records if r.getMessage().startswith(f"alert ({kind}): ")]


@pytest.mark.parametrize("configured", [True, False], ids=["alerts", "no alerts"])
async def test_a_day_budget_alerts_at_alert_at_and_again_when_its_cap_holds_events(
    db_url: str,
    fake: FakeMessagesAPI,
    receiver: Receiver,
    opened: list[Runtime],
    caplog: pytest.LogCaptureFixture,
    configured: bool,
) -> None:
    fake.set_default(reply(GOOD, usage=USAGE))  # every call: 150 tokens
    ids = [insert_event(db_url, f"evt_b{i}", "t") for i in range(3)]
    r = reservation_tokens(make_config({}), event_row(db_url, ids[0]))
    cap = r + 100  # room for one call's reservation, then 150 settled + r is over it
    alert_at = round(150 / cap * 0.9, 6)  # the first call's 150 tokens cross it
    tenants = {"*": {"tokens_per_day": cap, "alert_at": alert_at}}
    config = make_config({}, tenants=tenants, alerts=ALERTS if configured else [])
    rt = await runtime_for(db_url, fake, config)
    opened.append(rt)

    with caplog.at_level(logging.WARNING, logger="hookline"):
        assert await handle_event(rt, ids[0]) == "succeeded"  # settles 150: alert_at crossed
        await held(rt, ids[1])  # at the cap: held
        await held(rt, ids[2])  # held again: no third alert
        await rt.wait_for_alerts()  # alerts go on their own task (worker.alerts)

    ((tomorrow,),) = rows(
        db_url, "SELECT window_start + interval '1 day' FROM hookline.budget_windows WHERE period = 'day'"
    )
    first = f"alert (budget): tenant 't' reached {150 / cap:.0%} of its day budget (alert_at = {alert_at:g})"
    second = f"alert (budget): tenant 't' reached its day budget; its events are held until {tomorrow.isoformat()}"
    assert alert_lines(caplog, "budget") == [first, second]  # one line each, with or without [[alerts]]
    sent = [x.json()["output"] for x in receiver.received if x.path == "/ops"]
    if configured:
        assert [(o["message"], o["reached"], o["tenant"]) for o in sent] == [
            (first.removeprefix("alert (budget): "), "alert_at", "t"),
            (second.removeprefix("alert (budget): "), "cap", "t"),
        ]
        assert not any("evt_b" in str(o) for o in sent)  # no payload value
    else:
        assert sent == []


@pytest.mark.parametrize("configured", [True, False], ids=["alerts", "no alerts"])
async def test_a_loop_guard_alert_logs_one_warning_with_or_without_alerts(
    db_url: str,
    fake: FakeMessagesAPI,
    receiver: Receiver,
    opened: list[Runtime],
    caplog: pytest.LogCaptureFixture,
    configured: bool,
) -> None:
    fake.set_default(reply(GOOD, usage=USAGE))
    config = make_config({"loop_guard": {"max_events": 1, "window_seconds": 600}}, alerts=ALERTS if configured else [])
    rt = await runtime_for(db_url, fake, config)
    opened.append(rt)
    ids = [insert_event(db_url, f"evt_g{i}", "acme") for i in range(3)]

    with caplog.at_level(logging.WARNING, logger="hookline"):
        assert await handle_event(rt, ids[0]) == "succeeded"
        detail = (await held(rt, ids[1])).removeprefix("throttled: ")
        await held(rt, ids[2])  # the same key and hour: no second alert
        await rt.wait_for_alerts()

    assert alert_lines(caplog, "loop_guard") == [f"alert (loop_guard): {detail}"]
    sent = [x.json()["output"] for x in receiver.received if x.path == "/ops"]
    assert [o["message"] for o in sent] == ([detail] if configured else [])


async def test_an_hour_cap_alerts_once_when_it_holds_events(
    db_url: str, fake: FakeMessagesAPI, opened: list[Runtime], caplog: pytest.LogCaptureFixture
) -> None:
    fake.set_default(reply(GOOD, usage=USAGE))
    config = make_config({}, tenants={"*": {"events_per_hour": 1}})
    rt = await runtime_for(db_url, fake, config)
    opened.append(rt)
    ids = [insert_event(db_url, f"evt_h{i}", "t") for i in range(3)]

    with caplog.at_level(logging.WARNING, logger="hookline"):
        assert await handle_event(rt, ids[0]) == "succeeded"
        await held(rt, ids[1])
        await held(rt, ids[2])

    ((next_hour,),) = rows(
        db_url, "SELECT window_start + interval '1 hour' FROM hookline.budget_windows WHERE period = 'hour'"
    )
    until = next_hour.isoformat()
    assert alert_lines(caplog, "budget") == [
        f"alert (budget): tenant 't' reached its events_per_hour (1); its events are held until {until}"
    ]
    with psycopg.connect(db_url) as conn:
        (spend,) = spend_today(conn, config)
    assert spend["alerted"]  # hookline status: the cap alert's claim counts
