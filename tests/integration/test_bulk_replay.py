"""The bulk form of hookline.replay (README "The tables (for DBAs)"; `hookline replay --status dead`, POST
/admin/api/replay): many events in one call, and events that change under it (migration 0040).

Measured in row writes (this transaction's own statistics) and in what the call returns, never in time.
"""

from __future__ import annotations

import threading
import time
from typing import Any

import psycopg

from tests.harness import rows


def _dead(conn: psycopg.Connection, n: int, *, key: str | None = None) -> list[int]:
    got = conn.execute(
        "INSERT INTO hookline.events (source, delivery_id, status, body, payload, ordering_key, priority, "
        "finished_at) "
        "SELECT 'stripe', 'dead_' || g, 'dead', '\\x7b7d', '{}', %s, 3, now() FROM generate_series(1, %s) g "
        "RETURNING id",
        (key, n),
    ).fetchall()
    return sorted(int(r[0]) for r in got)


def test_a_bulk_replay_moves_the_status_counts_once_not_once_per_event(conn: psycopg.Connection) -> None:
    """Each event's own UPDATE rewrote the same counter rows of hookline.event_status_counts (200 row
    versions of one row for 100 events, found by walking the versions before them: 64,000 dead letters
    took minutes). One UPDATE for them all moves each count once; the events are re-queued as
    hookline.replay(id) does it, their jobs deferred in id order with their lock, priority and flags."""
    ids = _dead(conn, 100, key="cus_1")
    with conn.transaction():
        got = conn.execute(
            "SELECT event_id, job_id FROM hookline.replay(p_status => 'dead', p_recompute => true)"
        ).fetchall()
        writes = conn.execute(
            "SELECT n_tup_ins + n_tup_upd FROM pg_stat_xact_user_tables "
            "WHERE relid = 'hookline.event_status_counts'::regclass"
        ).fetchone()
    assert writes is not None and writes[0] <= 4, writes  # an upsert for queued, one for dead (was 201)
    assert [e for e, _ in got] == ids
    assert [j for _, j in got] == sorted(j for _, j in got)  # deferred in arrival order
    jobs = conn.execute(
        "SELECT (args->>'event_id')::bigint, args->>'recompute', args->>'force_actions', lock, priority, "
        "queue_name, status::text FROM procrastinate_jobs WHERE id = ANY (%s) ORDER BY id",
        ([j for _, j in got],),
    ).fetchall()
    assert jobs == [(e, "true", "false", "hookline:stripe:cus_1", 3, "hookline", "todo") for e in ids]
    events = conn.execute(
        "SELECT DISTINCT status, attempts, replays, detail, finished_at FROM hookline.events WHERE id = ANY (%s)",
        (ids,),
    ).fetchall()
    assert events == [("queued", 0, 1, "replay, recompute", None)]
    assert conn.execute("SELECT status, n FROM hookline.events_by_status").fetchall() == [("queued", 100)]


def _blocked(conn: psycopg.Connection, pid: int) -> bool:
    row = conn.execute("SELECT wait_event_type FROM pg_stat_activity WHERE pid = %s", (pid,)).fetchone()
    return row is not None and row[0] == "Lock"


def test_events_replayed_or_pruned_meanwhile_are_left_out_not_the_whole_call(
    db_url: str, conn: psycopg.Connection
) -> None:
    """The dashboard's Replay button on one dead letter, and the payload prune of another, while `hookline
    replay --status dead` runs: the bulk call read both as replayable, waited for the first one's lock,
    found it queued and raised, replaying nothing. Now it replays the rest and leaves those two out."""
    ids = _dead(conn, 4)
    conn.execute("UPDATE hookline.events SET received_at = now() - interval '40 days' WHERE id = %s", (ids[2],))
    first = psycopg.connect(db_url)
    first.autocommit = False
    try:
        first.execute("SELECT hookline.replay(%s::bigint)", (ids[1],))  # not committed yet: holds the rows
        assert first.execute("SELECT hookline.prune_payloads(30, 10)").fetchone() == (1,)
        result: dict[str, Any] = {}

        def bulk() -> None:
            try:
                with psycopg.connect(db_url) as other:
                    result["pid"] = other.info.backend_pid
                    result["rows"] = other.execute("SELECT * FROM hookline.replay(p_status => 'dead')").fetchall()
            except psycopg.Error as e:
                result["error"] = e

        with psycopg.connect(db_url, autocommit=True) as watch:
            thread = threading.Thread(target=bulk)
            thread.start()
            while thread.is_alive() and not ("pid" in result and _blocked(watch, result["pid"])):
                time.sleep(0.01)
            first.commit()  # the row it waited for is queued now
            thread.join()
    finally:
        first.close()
    assert "error" not in result, result.get("error")
    assert [e for e, _ in result["rows"]] == [ids[0], ids[3]]
    replays = "SELECT status, replays FROM hookline.events WHERE id = ANY (%s) ORDER BY id"
    assert rows(db_url, replays, ids) == [("queued", 1), ("queued", 1), ("dead", 0), ("queued", 1)]
    assert rows(db_url, "SELECT count(*) FROM procrastinate_jobs") == [(3,)]
