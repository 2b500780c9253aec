"""hookline.event_timeline and the metric rollup, written to by SQL the way the worker writes."""

from __future__ import annotations

from decimal import Decimal

import psycopg

from app.core import db
from app.core.timeline import load_event_story


def _event(conn: psycopg.Connection, delivery: str, tenant: str | None = "acme") -> int:
    row = conn.execute(
        "INSERT INTO hookline.events (source, delivery_id, event_type, tenant, payload, request_id) "
        "VALUES ('stripe', %s, 'invoice.paid', %s, '{}', 'req-1') RETURNING id",
        (delivery, tenant),
    ).fetchone()
    assert row is not None
    return int(row[0])


def _work(conn: psycopg.Connection, event_id: int) -> None:
    """What a worker does: start, one model call (invalid then valid), one action, finish."""
    conn.execute(
        "UPDATE hookline.events SET status = 'processing', attempts = 1, started_at = received_at + interval '2 s' "
        "WHERE id = %s",
        (event_id,),
    )
    for status, cost in (("invalid_output", "0.001"), ("succeeded", "0.002")):
        conn.execute(
            "INSERT INTO hookline.llm_calls (event_id, pipeline, model, status, request, input_tokens, "
            "output_tokens, cache_read_input_tokens, cost_usd, latency_ms, created_at) "
            "SELECT %s, 'recovery', 'claude-haiku-5-5', %s, '{}', 100, 20, 5, %s, 1500, "
            "received_at + interval '4 s' FROM hookline.events WHERE id = %s",
            (event_id, status, Decimal(cost), event_id),
        )
    conn.execute(
        "INSERT INTO hookline.action_runs (event_id, pipeline, action, action_type, status, idempotency_key, "
        "started_at, finished_at) SELECT id, 'recovery', 'http#0', 'http', 'succeeded', 'k', "
        "received_at + interval '5 s', received_at + interval '5.25 s' FROM hookline.events WHERE id = %s",
        (event_id,),
    )
    conn.execute(
        "UPDATE hookline.events SET status = 'succeeded', finished_at = received_at + interval '6 s' WHERE id = %s",
        (event_id,),
    )


def test_timeline_tells_what_happened_in_order(conn: psycopg.Connection) -> None:
    event_id = _event(conn, "evt_t1")
    _work(conn, event_id)
    steps = conn.execute(
        "SELECT step, extract(epoch FROM at - (SELECT received_at FROM hookline.events WHERE id = %s))::numeric(6,2), "
        "duration_ms, pipeline, name, status, input_tokens, cost_usd FROM hookline.event_timeline "
        "WHERE event_id = %s ORDER BY at, step_rank, ref_id",
        (event_id, event_id),
    ).fetchall()
    assert steps == [
        ("received", Decimal("0.00"), 0, None, None, None, None, None),
        ("queued", Decimal("0.00"), 2000, None, None, None, None, None),
        ("started", Decimal("2.00"), 4000, None, None, None, None, None),
        ("model_call", Decimal("2.50"), 1500, "recovery", "claude-haiku-5-5", "invalid_output", 100, Decimal("0.001")),
        ("model_call", Decimal("2.50"), 1500, "recovery", "claude-haiku-5-5", "succeeded", 100, Decimal("0.002")),
        ("action", Decimal("5.00"), 250, "recovery", "http#0", "succeeded", None, None),
        ("finished", Decimal("6.00"), 6000, None, None, "succeeded", None, None),
    ]


def test_after_a_replay_queued_is_the_wait_since_the_replay(conn: psycopg.Connection) -> None:
    """README: queued is "the wait for a worker". An event that arrived a week ago and is replayed now
    waits from the replay (it read a week), by either form of hookline.replay; the first run's steps
    stay where they were, and finished stays received to finished."""
    ids = [_event(conn, f"evt_replayed_{i}") for i in (1, 2)]
    for event_id in ids:
        _work(conn, event_id)
        conn.execute(
            "UPDATE hookline.events SET received_at = received_at - interval '7 days' WHERE id = %s", (event_id,)
        )
    one, bulk = ids
    with conn.transaction():  # one now(): the replay's and the claim's, 3 s later
        conn.execute("SELECT hookline.replay(%s::bigint)", (one,))
        conn.execute(
            "SELECT * FROM hookline.replay(p_event_type => 'invoice.paid', p_since => now() - interval '8 days')"
        )
        conn.execute(
            "UPDATE hookline.events SET status = 'processing', attempts = 1, started_at = now() + interval '3 s' "
            "WHERE id = ANY(%s)",
            (ids,),
        )
    for event_id in (one, bulk):
        queued = conn.execute(
            "SELECT t.at = e.started_at - interval '3 s', t.duration_ms, t.detail "
            "FROM hookline.event_timeline t JOIN hookline.events e ON e.id = t.event_id "
            "WHERE t.event_id = %s AND t.step = 'queued'",
            (event_id,),
        ).fetchall()
        assert queued == [(True, 3000, "replayed 1 time(s)")], (event_id, queued)


async def test_loader_gives_the_same_story(conn: psycopg.Connection, db_url: str) -> None:
    event_id = _event(conn, "evt_t2")
    _work(conn, event_id)
    c = await db.connect(db_url)
    try:
        story = await load_event_story(c, event_id)
        assert await load_event_story(c, event_id + 1000) is None
    finally:
        await c.close()
    assert story is not None
    assert story.event["request_id"] == "req-1" and story.event["status"] == "succeeded"
    assert [s["step"] for s in story.timeline] == [
        "received", "queued", "started", "model_call", "model_call", "action", "finished",
    ]  # fmt: skip
    assert [c["status"] for c in story.calls] == ["invalid_output", "succeeded"]
    assert [a["action"] for a in story.actions] == ["http#0"]
    assert story.tokens == (200, 40) and story.cost_usd == Decimal("0.003")
    out = story.as_json()
    assert out["timeline"][3]["cost_usd"] == 0.001 and isinstance(out["event"]["received_at"], str)


def test_rollup_counts_calls_tokens_cost_and_finished_events(conn: psycopg.Connection) -> None:
    for i in range(3):
        _work(conn, _event(conn, f"evt_r{i}", tenant="acme" if i else None))
    skipped = _event(conn, "evt_skip")
    conn.execute("UPDATE hookline.events SET status = 'skipped', finished_at = now() WHERE id = %s", (skipped,))
    totals = {
        tuple(r[:6]): r[6]
        for r in conn.execute(
            "SELECT metric, pipeline, model, tenant, kind, status, sum(value) FROM hookline.metric_totals "
            "GROUP BY 1, 2, 3, 4, 5, 6"
        ).fetchall()
    }
    m = "claude-haiku-5-5"
    assert totals == {
        ("model_calls", "", m, "", "", "invalid_output"): 3,
        ("model_calls", "", m, "", "", "succeeded"): 3,
        ("tokens", "", m, "acme", "input", ""): 400,
        ("tokens", "", m, "", "input", ""): 200,
        ("tokens", "", m, "acme", "output", ""): 80,
        ("tokens", "", m, "", "output", ""): 40,
        ("tokens", "", m, "acme", "cache_read", ""): 20,
        ("tokens", "", m, "", "cache_read", ""): 10,
        ("cost_usd", "", m, "acme", "", ""): Decimal("0.006"),
        ("cost_usd", "", m, "", "", ""): Decimal("0.003"),
        ("events_finished", "recovery", "", "", "", "succeeded"): 3,
        ("events_finished", "", "", "", "", "skipped"): 1,
    }
