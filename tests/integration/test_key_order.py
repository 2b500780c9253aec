"""Events of one ordering key run in arrival order, whatever their priorities (migration 0029).

An event's job carries its ordering key as procrastinate lock. Both statements that hand out jobs, the
worker's fetch (procrastinate_fetch_job_v2, inside fetch_job) and the batch claim (hookline.claimable_jobs,
inside start_events), let a job of a lock run only when no earlier job of that lock waits (due or not:
a retry scheduled ahead still holds its key) and none runs. Priority still orders different keys and
unkeyed events. Here the job rows are read and written through the functions themselves, as a worker's
connection calls them.
"""

from __future__ import annotations

from typing import Any

import psycopg
import pytest

from app.core import jobs as jobnames

FETCH = "SELECT id FROM procrastinate_fetch_job_v2(ARRAY[%s, %s]::varchar[], %s)"
CLAIM = "SELECT * FROM hookline.claimable_jobs(%s, %s, 10)"


def _event(cur: psycopg.Cursor[Any], delivery_id: str, *, key: str | None, priority: int = 0) -> int:
    """A queued event (its job deferred by the enqueue trigger); returns its job id."""
    row = cur.execute(
        "INSERT INTO hookline.events (source, delivery_id, event_type, payload, ordering_key, priority) "
        "VALUES ('stripe', %s, 'invoice.created', '{}', %s, %s) RETURNING id",
        (delivery_id, key, priority),
    ).fetchone()
    assert row is not None
    job = cur.execute("SELECT id FROM procrastinate_jobs WHERE (args ->> 'event_id')::bigint = %s", (row[0],))
    found = job.fetchone()
    assert found is not None
    return int(found[0])


def _fetch(cur: psycopg.Cursor[Any], worker: int) -> int | None:
    """procrastinate's fetch as the worker sends it: the job it hands over (now doing), or None."""
    row = cur.execute(FETCH, (jobnames.SYNC_QUEUE, jobnames.QUEUE, worker)).fetchone()
    assert row is not None
    return None if row[0] is None else int(row[0])


def _claimable(cur: psycopg.Cursor[Any]) -> list[int]:
    """The batch claim's candidates, in the order it claims them (rolled back: nothing is claimed)."""
    cur.execute("SAVEPOINT peek")
    got = [int(r[0]) for r in cur.execute(CLAIM, (jobnames.QUEUE, jobnames.PROCESS_EVENT)).fetchall()]
    cur.execute("ROLLBACK TO SAVEPOINT peek")
    return got


@pytest.fixture
def cur(hookline_db: psycopg.Connection) -> Any:
    hookline_db.autocommit = False
    with hookline_db.cursor() as c:
        yield c
    hookline_db.rollback()


@pytest.fixture
def worker(cur: psycopg.Cursor[Any]) -> int:
    row = cur.execute("INSERT INTO procrastinate_workers DEFAULT VALUES RETURNING id").fetchone()
    assert row is not None
    return int(row[0])


def test_a_later_event_of_higher_priority_waits_for_the_earlier_one_of_its_key(
    cur: psycopg.Cursor[Any], worker: int
) -> None:
    routine = _event(cur, "evt_first", key="cus_1", priority=0)
    urgent = _event(cur, "evt_second", key="cus_1", priority=10)
    other_key = _event(cur, "evt_other", key="cus_2", priority=5)
    unkeyed = _event(cur, "evt_free", key=None, priority=0)

    # priority orders different keys; within cus_1 the earlier event comes first, its successor not at all
    assert _claimable(cur) == [other_key, routine, unkeyed]
    assert _fetch(cur, worker) == other_key
    assert _fetch(cur, worker) == routine
    assert _claimable(cur) == [unkeyed]  # cus_1's first event runs: its successor still waits
    assert _fetch(cur, worker) == unkeyed
    assert _fetch(cur, worker) is None
    cur.execute("UPDATE procrastinate_jobs SET status = 'succeeded' WHERE id = %s", (routine,))
    assert _claimable(cur) == [urgent]
    assert _fetch(cur, worker) == urgent


def test_an_earlier_event_waiting_for_its_retry_holds_its_key(cur: psycopg.Cursor[Any], worker: int) -> None:
    """The reviewer's case: the routine event failed and retries in a few seconds (todo, scheduled ahead);
    the urgent event of the same key that arrived meanwhile waits for it."""
    routine = _event(cur, "evt_first", key="cus_1", priority=0)
    assert _fetch(cur, worker) == routine
    cur.execute(
        "UPDATE procrastinate_jobs SET status = 'todo', worker_id = NULL, scheduled_at = now() + interval '3 seconds' "
        "WHERE id = %s",
        (routine,),
    )
    urgent = _event(cur, "evt_second", key="cus_1", priority=10)
    sync = _event(cur, "evt_sync", key="cus_1", priority=0)
    cur.execute(
        "UPDATE procrastinate_jobs SET queue_name = %s, priority = 1000 WHERE id = %s", (jobnames.SYNC_QUEUE, sync)
    )
    free = _event(cur, "evt_free", key="cus_2", priority=0)

    assert _claimable(cur) == [free]
    assert _fetch(cur, worker) == free
    assert _fetch(cur, worker) is None  # neither the urgent nor the sync event of cus_1 passes its retry

    cur.execute("UPDATE procrastinate_jobs SET scheduled_at = now() - interval '1 second' WHERE id = %s", (routine,))
    assert _fetch(cur, worker) == routine  # the retry is due: it goes first, then its key's others in order
    cur.execute("UPDATE procrastinate_jobs SET status = 'succeeded' WHERE id = %s", (routine,))
    assert _fetch(cur, worker) == urgent
    assert _fetch(cur, worker) is None
    cur.execute("UPDATE procrastinate_jobs SET status = 'succeeded' WHERE id = %s", (urgent,))
    assert _fetch(cur, worker) == sync


def test_a_running_job_holds_its_key_even_when_it_arrived_later(cur: psycopg.Cursor[Any], worker: int) -> None:
    """A later job of a key left running by the old rule (it passed an earlier one on priority) still
    holds the key: one job of a lock runs at a time (procrastinate_jobs_lock_idx_v1 allows no second)."""
    earlier = _event(cur, "evt_first", key="cus_1", priority=0)
    later = _event(cur, "evt_second", key="cus_1", priority=10)
    cur.execute("UPDATE procrastinate_jobs SET status = 'doing', worker_id = %s WHERE id = %s", (worker, later))
    assert _claimable(cur) == []
    assert _fetch(cur, worker) is None
    cur.execute("UPDATE procrastinate_jobs SET status = 'succeeded' WHERE id = %s", (later,))
    assert _fetch(cur, worker) == earlier


def test_the_replaced_functions_keep_their_settings(hookline_db: psycopg.Connection) -> None:
    """CREATE OR REPLACE resets a function's settings: migration 0029 states those of migrations 0013
    (sorting off) and 0022 (sequential scans off) again."""
    rows = hookline_db.execute(
        "SELECT p.oid::regprocedure::text, p.proconfig FROM pg_proc p "
        "WHERE p.oid IN ('procrastinate_fetch_job_v2(varchar[], bigint)'::regprocedure, "
        "'hookline.claimable_jobs(text, text, integer)'::regprocedure) ORDER BY 1"
    ).fetchall()
    assert [(name, sorted(config)) for name, config in rows] == [
        ("hookline.claimable_jobs(text,text,integer)", ["enable_sort=off"]),
        ("procrastinate_fetch_job_v2(character varying[],bigint)", ["enable_seqscan=off", "enable_sort=off"]),
    ]
