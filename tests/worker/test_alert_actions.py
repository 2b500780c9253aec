"""``[[alerts]]``: an ``sql`` alert calls its function (in a transaction of its own: an alert has no action
run to record), where it used to fail every time ("does not run outside a transaction", a warning in the
log and nothing else); and an alert's destination never holds up the event that raised it. The real
worker runtime and Postgres, the fake Messages API."""

from __future__ import annotations

import time

import psycopg
import pytest

from tests.fakes.messages_api import FakeMessagesAPI, reply
from tests.harness import rows
from tests.worker.test_breaker_no_flap import state
from tests.worker.test_breaker_probe import BREAKER
from tests.worker.test_flow import GOOD, MODEL, USAGE, insert_event, make_config, runtime_for
from worker.alerts import send_alert
from worker.runtime import ALERT_WAIT_FLOOR_S, Runtime
from worker.tasks import handle_event

pytestmark = pytest.mark.usefixtures("stripe_and_crm")


async def test_an_sql_alert_calls_its_function(db_url: str, fake: FakeMessagesAPI, opened: list[Runtime]) -> None:
    with psycopg.connect(db_url, autocommit=True) as conn:
        conn.execute("CREATE TABLE public.ops_alerts (event_id bigint, output jsonb)")
        conn.execute(
            "CREATE FUNCTION public.record_alert(event_id bigint, output jsonb) RETURNS text LANGUAGE sql AS "
            "$$ INSERT INTO public.ops_alerts VALUES (event_id, output) RETURNING 'noted' $$"
        )
    rt = await runtime_for(db_url, fake, make_config({}, alerts=[{"type": "sql", "function": "public.record_alert"}]))
    opened.append(rt)
    await send_alert(rt, "breaker", "circuit breaker of m is open", {"model": "m", "state": "open"})
    await rt.wait_for_alerts()
    assert rows(db_url, "SELECT event_id, output->>'alert', output->>'state' FROM public.ops_alerts") == [
        (0, "breaker", "open")
    ]


async def test_the_worker_checks_an_sql_alerts_function_at_start(
    db_url: str, fake: FakeMessagesAPI, opened: list[Runtime]
) -> None:
    from worker.main import sql_action_problems

    rt = await runtime_for(db_url, fake, make_config({}, alerts=[{"type": "sql", "function": "public.no_such"}]))
    opened.append(rt)
    assert await sql_action_problems(rt) == [
        "alerts.0.function: no function public.no_such in pg_proc (see the README for what a DBA creates)"
    ]


async def test_an_alert_whose_destination_hangs_does_not_hold_the_event(
    db_url: str, fake: FakeMessagesAPI, opened: list[Runtime], unreachable: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The half-open probe's success closes the breaker and raises an alert to an endpoint that never
    answers (its connect times out after 3 s). The alert was sent inside the event's run, within its
    pipeline's timeout_seconds (1 s): the event failed with a timeout, its answer in hand, because of the
    alert. Now the alert goes on its own and the event succeeds; closing the runtime waits for it."""
    monkeypatch.setenv("HL_OPS_URL", unreachable)
    config = make_config(
        {"timeout_seconds": 1},
        models={MODEL: {"breaker": BREAKER}},
        alerts=[{"type": "http", "url_env": "HL_OPS_URL", "timeout_seconds": 3}],
    )
    rt = await runtime_for(db_url, fake, config)
    opened.append(rt)
    rows(
        db_url,
        "INSERT INTO hookline.breakers (model, state, failures, opened_at, open_until) "
        "VALUES (%s, 'open', 1, now() - interval '40 seconds', now() - interval '10 seconds') RETURNING 1",
        MODEL,
    )
    fake.set_default(reply(GOOD, usage=USAGE))
    assert await handle_event(rt, insert_event(db_url, "evt_alert_hangs")) == "succeeded"
    assert state(db_url) == "closed"


async def test_a_closing_worker_gives_its_alerts_what_is_left_of_the_shutdown_timeout(
    db_url: str, fake: FakeMessagesAPI, opened: list[Runtime]
) -> None:
    """The running jobs' drain takes up to HOOKLINE_SHUTDOWN_TIMEOUT from the stop request; the alerts'
    wait at close took a whole second one after it (40 s at the default, past a PaaS's 30 s grace)."""
    rt = await runtime_for(db_url, fake, make_config({}))
    opened.append(rt)
    full = rt.settings.shutdown_timeout
    assert rt.alert_wait() == full  # no stop asked for (a closing test, a loop that ended)
    rt.stop_requested_at = time.monotonic() - (full - 5)
    assert 4 < rt.alert_wait() <= 5
    rt.stop_requested_at = time.monotonic() - full - 60  # the drain used it all
    assert rt.alert_wait() == ALERT_WAIT_FLOOR_S
