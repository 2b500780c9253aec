"""Today's row of hookline.costs_daily reads today's model calls, not every call (migration 0049).

The view groups the calls by their UTC day, an expression the index on created_at cannot serve: a
filter on ``day`` read the whole of hookline.llm_calls. The plan is checked without running the query
(EXPLAIN without ANALYZE), never its time.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import psycopg

CALLS = 60_000  # over 60 days: a thousand a day
#: README's "today's spend per tenant" (The tables, for DBAs)
TODAY = (
    "SELECT tenant, sum(usd) AS usd, sum(input_tokens + output_tokens) AS tokens "
    "FROM hookline.costs_daily WHERE day = (now() AT TIME ZONE 'UTC')::date GROUP BY 1 ORDER BY 2 DESC"
)


def _nodes(plan: dict[str, Any]) -> Iterator[dict[str, Any]]:
    yield plan
    for child in plan.get("Plans", ()):
        yield from _nodes(child)


def test_todays_spend_reads_todays_calls_by_index(hookline_db: psycopg.Connection) -> None:
    hookline_db.autocommit = True
    with hookline_db.cursor() as cur:
        cur.execute(
            "INSERT INTO hookline.events (source, delivery_id, event_type, payload, tenant) "
            "SELECT 'stripe', 'evt_' || i, 'invoice.paid', '{}', 't' || (i %% 20) FROM generate_series(1, %s) AS i",
            (CALLS,),
        )
        cur.execute(
            "INSERT INTO hookline.llm_calls (event_id, pipeline, model, status, request, cost_usd, created_at) "
            "SELECT id, 'p', 'm', 'succeeded', '{}', 0.01, now() - (id - min(id) OVER ()) * interval '86 s' "
            "FROM hookline.events"
        )
        cur.execute("ANALYZE hookline.events, hookline.llm_calls")
        row = cur.execute("EXPLAIN (FORMAT JSON) " + TODAY).fetchone()
    assert row is not None
    nodes = list(_nodes(row[0][0]["Plan"]))
    on_calls = [n for n in nodes if n.get("Relation Name") == "llm_calls"]
    assert [n["Node Type"] for n in on_calls] != ["Seq Scan"], on_calls
    assert [n.get("Index Name") for n in on_calls] == ["llm_calls_day_idx"], on_calls
