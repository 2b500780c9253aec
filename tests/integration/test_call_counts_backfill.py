"""Migration 0034 on a database that already holds micro-batch answers: each combined answer's parts
(one row per event, sharing the one Messages API response) count one call from then on, on their
first answered row; every other row (a lone call, a failed combined round trip, a part whose response
retention dropped) keeps counting one."""

from __future__ import annotations

import json

import psycopg

from app.core import migrations

_CALL = (
    "INSERT INTO hookline.llm_calls (event_id, pipeline, model, status, request, response, route, cost_usd) "
    "VALUES (%s, 'p', 'claude-haiku-5-5', %s, '{}', %s, %s, 0.001) RETURNING id"
)


def _event(conn: psycopg.Connection, n: int) -> int:
    row = conn.execute(
        "INSERT INTO hookline.events (source, delivery_id, event_type, payload, status) "
        "VALUES ('s', %s, 't', '{}', 'succeeded') RETURNING id",
        (f"d{n}",),
    ).fetchone()
    assert row is not None
    return int(row[0])


def _call(conn: psycopg.Connection, event_id: int, status: str, response: object, route: str) -> int:
    row = conn.execute(_CALL, (event_id, status, json.dumps(response) if response else None, route)).fetchone()
    assert row is not None
    return int(row[0])


def test_each_stored_micro_batch_counts_one_call_after_the_migration(empty_db_url: str) -> None:
    found = migrations.discover()
    migrations.migrate(empty_db_url, [m for m in found if m.version < 34])
    first = {"id": "msg_1", "content": [{"type": "text", "text": '{"results": [1, 2, 3]}'}]}
    second = {"id": "msg_2", "content": [{"type": "text", "text": '{"results": [4, 5]}'}]}
    with psycopg.connect(empty_db_url, autocommit=True) as conn:
        ev = [_event(conn, n) for n in range(9)]
        # a batch of three whose leader's own part was invalid: counted on the first valid part
        a = [
            _call(conn, ev[0], "invalid_output", first, "micro_batch:3"),
            _call(conn, ev[1], "succeeded", first, "micro_batch:3"),
            _call(conn, ev[2], "superseded", first, "micro_batch:3"),
        ]
        # a failed combined round trip (under the leader), then the batch of two that answered
        failed = _call(conn, ev[3], "failed", None, "micro_batch:2")
        b = [
            _call(conn, ev[3], "succeeded", second, "micro_batch:2+fallback:overloaded"),
            _call(conn, ev[4], "succeeded", second, "micro_batch:2+fallback:overloaded"),
        ]
        pruned = [_call(conn, ev[n], "succeeded", None, "micro_batch:2") for n in (5, 6)]  # retention dropped them
        lone = _call(conn, ev[7], "succeeded", {"id": "msg_3", "content": []}, "primary")
        dry = _call(conn, ev[8], "dry_run", None, "primary")
        before = conn.execute("SELECT sum(calls) FROM hookline.costs_daily").fetchone()
    assert before == (9,)  # every row was a call: 3 + 1 + 2 + 2 + 1, the dry run left out

    migrations.migrate(empty_db_url)
    with psycopg.connect(empty_db_url) as conn:
        calls: dict[int, int] = dict(conn.execute("SELECT id, calls FROM hookline.llm_calls").fetchall())
        after = conn.execute("SELECT sum(calls), sum(usd) FROM hookline.costs_daily").fetchone()
    assert [calls[i] for i in a] == [0, 1, 0]
    assert calls[failed] == 1 and [calls[i] for i in b] == [1, 0]
    assert [calls[i] for i in pruned] == [1, 1] and calls[lone] == 1 and calls[dry] == 1
    assert after is not None and after[0] == 1 + 1 + 1 + 2 + 1  # round trips; the cost is untouched
    assert float(after[1]) == 0.009
