"""``[[alerts]]`` take "any action type": an ``sql`` alert calls its function (in a transaction of its
own: an alert has no action run to record), where it used to fail every time ("does not run outside a
transaction", a warning in the log and nothing else). The real worker runtime and Postgres."""

from __future__ import annotations

import psycopg
import pytest

from tests.fakes.messages_api import FakeMessagesAPI
from tests.harness import rows
from tests.worker.test_flow import make_config, runtime_for
from worker.limits import send_alert
from worker.runtime import Runtime

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
