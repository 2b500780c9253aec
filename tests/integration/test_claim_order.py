"""Fetching a job costs the same with 3,000 jobs waiting as with one (migration 0013).

procrastinate_jobs is analyzed while nearly empty, then a backlog arrives before autovacuum looks again:
the statistics still describe an empty queue. With them the planner would read every todo job and sort
the lot for each fetch. procrastinate_fetch_job_v2 and hookline.claimable_jobs are planned with
sorting off, so they walk the priority index and stop at the first runnable job. Measured in shared
buffers touched (EXPLAIN BUFFERS counts what the function itself reads), never in time.
"""

from __future__ import annotations

from typing import Any

import psycopg
import pytest

from app.core import jobs as jobnames

BACKLOG = 3000
FETCH = "SELECT * FROM procrastinate_fetch_job_v2(ARRAY[%s]::varchar[], %s)"
CLAIM = "SELECT * FROM hookline.claimable_jobs(%s, %s, 9)"


def _buffers(cur: psycopg.Cursor[Any], sql: str, params: tuple[Any, ...]) -> int:
    row = cur.execute("EXPLAIN (ANALYZE, BUFFERS, FORMAT JSON) " + sql, params).fetchone()
    assert row is not None
    plan = row[0][0]["Plan"]
    return int(plan["Shared Hit Blocks"]) + int(plan["Shared Read Blocks"])


def _stale_backlog(cur: psycopg.Cursor[Any]) -> int:
    """Statistics of an empty queue, then BACKLOG jobs; returns a worker id to fetch for."""
    cur.execute("ANALYZE procrastinate_jobs")  # transactional: rolled back with the test
    cur.execute(
        "INSERT INTO hookline.events (source, delivery_id, event_type, payload) "
        "SELECT 'stripe', 'evt_' || i, 'invoice.paid', '{}' FROM generate_series(1, %s) AS i",
        (BACKLOG,),
    )
    row = cur.execute("INSERT INTO procrastinate_workers DEFAULT VALUES RETURNING id").fetchone()
    assert row is not None
    return int(row[0])


def test_fetch_and_batch_claim_walk_the_queue_in_index_order(hookline_db: psycopg.Connection) -> None:
    hookline_db.autocommit = False
    with hookline_db.cursor() as cur:
        worker = _stale_backlog(cur)
        # what the statistics make of the plan without the setting: the backlog read and sorted
        cur.execute("SAVEPOINT unset")
        cur.execute("ALTER FUNCTION procrastinate_fetch_job_v2(varchar[], bigint) RESET enable_sort")
        cur.execute("ALTER FUNCTION hookline.claimable_jobs(text, text, integer) RESET enable_sort")
        sorted_fetch = _buffers(cur, FETCH, (jobnames.QUEUE, worker))
        sorted_claim = _buffers(cur, CLAIM, (jobnames.QUEUE, jobnames.PROCESS_EVENT))
        cur.execute("ROLLBACK TO SAVEPOINT unset")
        if sorted_fetch < 50 and sorted_claim < 50:
            pytest.skip("this Postgres plans the index walk even with stale statistics")

        fetch = _buffers(cur, FETCH, (jobnames.QUEUE, worker))
        claim = _buffers(cur, CLAIM, (jobnames.QUEUE, jobnames.PROCESS_EVENT))
        assert fetch < 50 < sorted_fetch, (fetch, sorted_fetch)
        assert claim < 50 < sorted_claim, (claim, sorted_claim)
        # and they hand out the right jobs: the oldest of the highest priority, none twice
        got = cur.execute("SELECT id FROM procrastinate_jobs WHERE status = 'doing' ORDER BY id").fetchall()
        first = cur.execute(
            "SELECT min(id) FROM procrastinate_jobs WHERE queue_name = %s", (jobnames.QUEUE,)
        ).fetchone()
        assert first is not None and [r[0] for r in got] == [first[0]]
        claimed = [r[0] for r in cur.execute(CLAIM, (jobnames.QUEUE, jobnames.PROCESS_EVENT)).fetchall()]
        todo = cur.execute("SELECT id FROM procrastinate_jobs WHERE status = 'todo' ORDER BY priority DESC, id LIMIT 9")
        assert claimed == [r[0] for r in todo.fetchall()]
    hookline_db.rollback()


def test_the_fetch_procrastinate_calls_is_the_one_tuned() -> None:
    """An upgrade to a procrastinate_fetch_job_v3 must carry the setting over (a new migration)."""
    from importlib.resources import files

    text = (files("procrastinate.sql") / "queries.sql").read_text()
    assert "procrastinate_fetch_job_v2(" in text


def test_the_workers_fetch_reads_only_todo_jobs_whatever_the_table_holds(hookline_db: psycopg.Connection) -> None:
    """fetch_job (worker.handover) asks whether another job is runnable; with statistics of an empty
    queue and thousands of finished jobs kept, that question must not read the finished ones."""
    from psycopg.rows import dict_row

    from worker.db import Q

    hookline_db.autocommit = False
    with hookline_db.cursor() as plain:
        worker = _stale_backlog(plain)
    with hookline_db.cursor(row_factory=dict_row) as cur:
        cur.execute(
            "UPDATE procrastinate_jobs SET status = 'succeeded' WHERE id < (SELECT max(id) FROM procrastinate_jobs)"
        )
        params = {
            "queues": [jobnames.SYNC_QUEUE, jobnames.QUEUE],
            "worker_id": worker,
            "claim": True,  # a lone job's event is claimed in the same statement (migration 0019)
            "task": jobnames.PROCESS_EVENT,
            "pickup": True,
        }
        # The question is hookline.job_waiting (migration 0022). Its body, planned with the function's own
        # settings, walks the todo index alone (the queue_name index holds every job, finished included:
        # paired with it, the EXISTS read all 50,000 entries of a 50,000-job table, 1 ms per fetch).
        fn = cur.execute(
            "SELECT prosrc, proconfig FROM pg_proc WHERE oid = 'hookline.job_waiting(varchar[], bigint)'::regprocedure"
        ).fetchone()
        assert fn is not None and fn["proconfig"]
        cur.execute("SAVEPOINT settings")
        for setting in fn["proconfig"]:
            name, value = setting.split("=", 1)
            cur.execute(f"SET LOCAL {name} = {value}")
        body = fn["prosrc"].replace("p_queues", "%(queues)s::varchar[]").replace("p_except", "0")
        row = cur.execute("EXPLAIN (ANALYZE, FORMAT JSON) " + body, params).fetchone()
        cur.execute("ROLLBACK TO SAVEPOINT settings")
        assert row is not None
        explained = row["QUERY PLAN"]
        plan = str((explained[0] if isinstance(explained, list) else explained)["Plan"])
        assert "procrastinate_jobs_priority_idx_v1" in plan or "procrastinate_jobs_queueing_lock_idx_v1" in plan
        assert "procrastinate_jobs_queue_name_idx_v1" not in plan and "Seq Scan" not in plan
        assert "Bitmap" not in plan  # an index scan stops at the first runnable job; a bitmap reads them all
        last = cur.execute("SELECT max(id) AS id FROM procrastinate_jobs").fetchone()
        got = cur.execute(Q["fetch_job"], params).fetchone()
        assert last is not None and got is not None and got["id"] == last["id"]  # the one todo job
        assert got["more_waiting"] is False  # nothing else is runnable: the lone job's event is claimed with it
        assert got["claimed"] is True and got["claim_id"] == got["args"]["event_id"]
        again = cur.execute(Q["fetch_job"], params).fetchone()
        assert again is not None and again["id"] is None and again["more_waiting"] is True and not again["claimed"]
