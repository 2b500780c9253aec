"""Lookups by id stay lookups by id, whatever the planner knows (migrations 0020 and 0021).

hookline.notify_events_stored (after every ingest batch) and hookline.claim_events (every claim of the
worker) look events up by id and test their status. Planned with the status index, each call read
every waiting event: with a backlog, once per batch and once per claim, exactly when the system is
busiest. The scenario here is the one a new deployment lives through before autoanalyze: the
session's plans are made while the table is nearly empty, then a backlog arrives. Measured in rows
read and scans started (this transaction's own statistics), never in time.

The worker's batch claim (start_events, migration 0021) is the same story on procrastinate_jobs, which
keeps every finished job until retention prunes it: a plan made while the table was small scanned all
of it for each claim.
"""

from __future__ import annotations

from typing import Any, Protocol

import psycopg

from app.core import jobs as jobnames
from app.core.sqlfiles import queries
from tests.harness import scans_and_reads

BACKLOG = 10_000


def _reads(cur: psycopg.Cursor[Any]) -> tuple[int, int, int]:
    """hookline.events in this transaction so far: sequential scans, index scans, rows read by both."""
    row = cur.execute(
        "SELECT seq_scan, coalesce(idx_scan, 0), seq_tup_read + coalesce(idx_tup_fetch, 0) "
        "FROM pg_stat_xact_user_tables WHERE relid = 'hookline.events'::regclass"
    ).fetchone()
    assert row is not None
    return int(row[0]), int(row[1]), int(row[2])


def _add(cur: psycopg.Cursor[Any], prefix: str, n: int) -> list[int]:
    rows = cur.execute(
        "INSERT INTO hookline.events (source, delivery_id, payload) "
        "SELECT 's', %s || i, '{}' FROM generate_series(1, %s) AS i RETURNING id",
        (prefix, n),
    ).fetchall()
    return [int(r[0]) for r in rows]


def test_the_wake_up_check_and_the_claim_read_only_their_own_events_with_a_backlog(
    hookline_db: psycopg.Connection,
) -> None:
    hookline_db.autocommit = False
    with hookline_db.cursor() as cur:
        few = _add(cur, "early-", 20)
        for _ in range(8):  # plans made now, with the table nearly empty, stay cached in this session
            cur.execute("SELECT hookline.notify_events_stored(%s)", (few[:13],))
            cur.execute("SELECT count(*) FROM hookline.claim_events_v2(%s)", (few[13:],))
        batch = _add(cur, "backlog-", BACKLOG)[-13:]  # a backlog: every one of them waits (queued)

        seq0, _, read0 = _reads(cur)
        sent = cur.execute("SELECT hookline.notify_events_stored(%s)", (batch,)).fetchone()
        seq1, idx1, read1 = _reads(cur)
        assert sent is not None and sent[0] == 3  # the batch's events wait: the workers' wake-up goes too
        assert seq1 == seq0, "the wake-up check scanned the table"
        assert read1 - read0 <= 13, read1 - read0  # one row per id, not every waiting event

        claimed = cur.execute("SELECT id, attempts FROM hookline.claim_events_v2(%s)", (batch,)).fetchall()
        seq2, idx2, read2 = _reads(cur)
        assert sorted(r[0] for r in claimed) == sorted(batch) and {r[1] for r in claimed} == {1}
        assert seq2 == seq1, "the claim scanned the table"
        assert idx2 - idx1 == 1, idx2 - idx1  # the primary key alone (not paired with the status index)
        assert read2 - read1 <= 13, read2 - read1

        again = cur.execute("SELECT hookline.notify_events_stored(%s)", (batch,)).fetchone()
        assert again is not None and again[0] == 1  # all claimed now: nobody to wake
    hookline_db.rollback()


def _job_reads(cur: psycopg.Cursor[Any]) -> tuple[int, int, int]:
    """procrastinate_jobs in this transaction so far: sequential scans, rows they read, and rows read
    through an index (a full index scan reads every row too: turning sequential scans off does not
    forbid one)."""
    row = cur.execute(
        "SELECT seq_scan, seq_tup_read, coalesce(idx_tup_fetch, 0) FROM pg_stat_xact_user_tables "
        "WHERE relid = 'procrastinate_jobs'::regclass"
    ).fetchone()
    assert row is not None
    return int(row[0]), int(row[1]), int(row[2])


def _hand_over(cur: psycopg.Cursor[Any], worker: int) -> tuple[int, int]:
    """What procrastinate's fetch does before start_events: the oldest todo job becomes this worker's."""
    row = cur.execute(
        "UPDATE procrastinate_jobs SET status = 'doing', worker_id = %s "
        "WHERE id = (SELECT min(id) FROM procrastinate_jobs WHERE status = 'todo') "
        "RETURNING id, (args ->> 'event_id')::bigint",
        (worker,),
    ).fetchone()
    assert row is not None
    return int(row[0]), int(row[1])


class _Claim(Protocol):
    def __call__(self, job: int, event: int, more: int) -> list[tuple[Any, ...]]: ...


def _claimer(cur: psycopg.Cursor[Any], *, pickup: bool) -> tuple[int, _Claim]:
    """A worker row, and ``claim(job, event, more)``: start_events prepared as the worker's connection
    prepares it (the batch claim when ``more`` > 0)."""
    start = queries("worker")["start_events"]
    row = cur.execute("INSERT INTO procrastinate_workers DEFAULT VALUES RETURNING id").fetchone()
    assert row is not None

    def claim(job: int, event: int, more: int) -> list[tuple[Any, ...]]:
        params = {"event_id": event, "job_id": job, "queue": jobnames.QUEUE, "task": jobnames.PROCESS_EVENT}
        return cur.execute(start, {**params, "more": more, "pickup": pickup}, prepare=True).fetchall()

    return int(row[0]), claim


def test_the_batch_claim_finds_its_jobs_by_primary_key_however_large_the_table_grew(
    hookline_db: psycopg.Connection,
) -> None:
    """start_events' batch claim (migration 0021), prepared as the worker's connection prepares it."""
    hookline_db.autocommit = False
    with hookline_db.cursor() as cur:
        worker, claim = _claimer(cur, pickup=False)
        _add(cur, "early-", 20)  # each event's job is deferred with it
        for _ in range(8):  # the plan is made now, with a few jobs, and stays cached in this session
            claim(*_hand_over(cur, worker), more=1)
        _add(cur, "backlog-", BACKLOG)
        job, event = _hand_over(cur, worker)
        waiting = cur.execute(
            "SELECT id FROM procrastinate_jobs WHERE status = 'todo' ORDER BY priority DESC, id LIMIT 9"
        ).fetchall()

        seq0, read0, idx0 = _job_reads(cur)
        rows = claim(job, event, more=9)
        seq1, read1, idx1 = _job_reads(cur)
        assert [r[1] for r in rows] == [None] + [w[0] for w in waiting]  # the handed-over job, then the 9
        assert all(r[3] is not None for r in rows)  # each event claimed with its job
        owners = cur.execute(
            "SELECT DISTINCT worker_id, status FROM procrastinate_jobs WHERE id = ANY (%s)",
            ([w[0] for w in waiting],),
        ).fetchall()
        assert owners == [(worker, "doing")]
        assert (seq1 - seq0, read1 - read0) == (0, 0), "the batch claim scanned procrastinate_jobs"
        assert idx1 - idx0 <= 40, idx1 - idx0  # a few probes for each of the 10 jobs, not the backlog
    hookline_db.rollback()


def _log_reads(cur: psycopg.Cursor[Any]) -> tuple[int, int]:
    """procrastinate_events (procrastinate's job event log) in this transaction so far: sequential scans,
    and rows read by scans of either kind."""
    return scans_and_reads(cur, "procrastinate_events")


def test_the_pickup_delay_reads_the_job_event_log_by_job(hookline_db: psycopg.Connection) -> None:
    """hookline.job_pickup_seconds, called by start_events and fetch_job when the worker serves metrics,
    is planned once per session inside them (migration 0024): a plan made while procrastinate's event log
    was small still reads each job's own rows once the log holds thousands (three rows per job)."""
    hookline_db.autocommit = False
    with hookline_db.cursor() as cur:
        worker, claim = _claimer(cur, pickup=True)
        _add(cur, "early-", 20)
        cur.execute("ANALYZE procrastinate_jobs, procrastinate_events")  # statistics of a new deployment
        for _ in range(8):  # the plans are made now, with a short event log, and stay cached
            claim(*_hand_over(cur, worker), more=1)
        _add(cur, "backlog-", BACKLOG)
        job, event = _hand_over(cur, worker)

        seq0, read0 = _log_reads(cur)
        rows = claim(job, event, more=9)
        seq1, read1 = _log_reads(cur)
        assert len(rows) == 10 and all(r[-1] is not None and r[-1] >= 0 for r in rows)  # every pickup measured
        assert seq1 == seq0, "the pickup delay scanned procrastinate_events"
        assert read1 - read0 <= 60, read1 - read0  # a few rows for each of the 10 jobs, not the whole log
    hookline_db.rollback()


def test_the_fetch_asks_whether_more_jobs_wait_from_the_todo_jobs_alone(hookline_db: psycopg.Connection) -> None:
    """fetch_job's more_waiting (hookline.job_waiting, migration 0022) after a burst has drained: the
    statistics say nearly every job waits, the table keeps many finished jobs, nothing else waits (the
    usual case at a steady rate), and the table is not read."""
    fetch = queries("worker")["fetch_job"]
    hookline_db.autocommit = False
    with hookline_db.cursor() as cur:
        row = cur.execute("INSERT INTO procrastinate_workers DEFAULT VALUES RETURNING id").fetchone()
        assert row is not None
        params = {
            "queues": [jobnames.QUEUE],
            "worker_id": int(row[0]),
            "claim": True,
            "task": jobnames.PROCESS_EVENT,
            "pickup": False,
        }
        _add(cur, "burst-", 200)
        cur.execute("ANALYZE procrastinate_jobs")  # autoanalyze during a burst: nearly every job waits
        for _ in range(8):  # the plan is made now, and stays cached in this session
            got = cur.execute(fetch, params, prepare=True).fetchone()
            assert got is not None and got[0] is not None
        _add(cur, "done-", BACKLOG)  # their jobs ran long ago: kept until retention prunes them
        cur.execute(
            "UPDATE procrastinate_jobs SET status = 'succeeded' "
            "WHERE status = 'todo' AND id < (SELECT max(id) FROM procrastinate_jobs)"
        )

        seq0, read0, idx0 = _job_reads(cur)
        cur.execute(fetch, params, prepare=True)
        assert cur.description is not None
        fetched = dict(zip([d.name for d in cur.description], cur.fetchone() or (), strict=True))
        seq1, read1, idx1 = _job_reads(cur)
        assert fetched["more_waiting"] is False and fetched["claimed"] is True  # the lone job's event claimed with it
        assert (seq1 - seq0, read1 - read0) == (0, 0), "the fetch scanned procrastinate_jobs"
        assert idx1 - idx0 <= 20, idx1 - idx0  # the fetched job and a few probes, not the finished ones
    hookline_db.rollback()


def test_counting_a_batch_of_answers_reads_each_call_s_event_by_key(hookline_db: psycopg.Connection) -> None:
    """hookline.count_llm_calls (the statement trigger on llm_calls, migration 0022) reads each new
    call's event for its tenant: by primary key, not by a scan of every event."""
    hookline_db.autocommit = False
    with hookline_db.cursor() as cur:
        insert = (
            "INSERT INTO hookline.llm_calls "
            "(event_id, pipeline, model, status, request, input_tokens, output_tokens, cost_usd) "
            "SELECT id, 'triage', 'claude-test', 'succeeded', '{}', 10, 5, 0.001 FROM unnest(%s::bigint[]) AS id"
        )
        few = _add(cur, "early-", 20)
        for k in range(8):  # the trigger's plan is made now, with a few events, and stays cached
            cur.execute(insert, (few[2 * k : 2 * k + 2],))
        batch = _add(cur, "backlog-", BACKLOG)[-13:]
        cur.execute("UPDATE hookline.events SET tenant = 'acme' WHERE id = ANY (%s)", (batch,))

        seq0, _, read0 = _reads(cur)
        cur.execute(insert, (batch,))
        seq1, _, read1 = _reads(cur)
        assert seq1 == seq0, "counting the answers scanned hookline.events"
        assert read1 - read0 <= 2 * 13 + 13, read1 - read0  # tokens and cost: one probe each per call
        totals = cur.execute(
            "SELECT metric, kind, sum(value) FROM hookline.metric_totals WHERE tenant = 'acme' "
            "GROUP BY metric, kind ORDER BY metric, kind"
        ).fetchall()
        assert [(m, k, float(v)) for m, k, v in totals] == [
            ("cost_usd", "", 0.013),
            ("tokens", "input", 130.0),
            ("tokens", "output", 65.0),
        ]
    hookline_db.rollback()


def test_counting_a_batch_of_finished_events_reads_each_event_s_calls_by_key(
    hookline_db: psycopg.Connection,
) -> None:
    """hookline.count_events_finished (the statement trigger on hookline.events, migration 0026) looks up
    the pipelines of each finished event's model calls: by llm_calls_event_idx, not by a scan of every
    stored call, when its plan was made while hookline.llm_calls was nearly empty. It runs once per
    UPDATE: a statement that finishes nothing reads no model call."""
    hookline_db.autocommit = False
    with hookline_db.cursor() as cur:
        call = (
            "INSERT INTO hookline.llm_calls (event_id, pipeline, model, status, request) "
            "SELECT id, 'triage', 'claude-test', 'succeeded', '{}' FROM unnest(%s::bigint[]) AS id"
        )
        finish = "UPDATE hookline.events SET status = 'succeeded' WHERE id = ANY (%s)"
        few = _add(cur, "early-", 16)
        cur.execute(call, (few,))
        for k in range(8):  # the trigger's plan is made now, with a few calls, and stays cached
            cur.execute(finish, (few[2 * k : 2 * k + 2],), prepare=True)
        backlog = _add(cur, "backlog-", 3_000)
        cur.execute(call, (backlog,))
        batch = backlog[-13:]

        seq0, read0 = scans_and_reads(cur, "hookline.llm_calls")
        cur.execute("UPDATE hookline.events SET status = 'processing' WHERE id = ANY (%s)", (batch,))
        seq1, read1 = scans_and_reads(cur, "hookline.llm_calls")
        assert (seq1 - seq0, read1 - read0) == (0, 0), "a claim looked at the model calls"

        cur.execute(finish, (batch,), prepare=True)
        seq2, read2 = scans_and_reads(cur, "hookline.llm_calls")
        assert seq2 == seq1, "counting the finished events scanned hookline.llm_calls"
        assert read2 - read1 <= 13, read2 - read1  # each event's one call
        totals = cur.execute(
            "SELECT pipeline, status, sum(value) FROM hookline.metric_totals WHERE metric = 'events_finished' "
            "GROUP BY 1, 2"
        ).fetchall()
        assert [(p, s, int(v)) for p, s, v in totals] == [("triage", "succeeded", 16 + 13)]
    hookline_db.rollback()


def test_the_worker_s_fetch_and_claim_are_planned_once_per_session(hookline_db: psycopg.Connection) -> None:
    """Prepared as statements, Postgres made a custom plan of the fetch and the claim at every call (their
    boolean parameters fold in a custom plan, so it always looked cheaper). They are functions planned
    once per session (migration 0024), and the worker's statements call them."""
    rows = hookline_db.execute(
        "SELECT p.proname, p.proconfig FROM pg_proc p JOIN pg_namespace n ON n.oid = p.pronamespace "
        "WHERE n.nspname = 'hookline' AND p.proname IN ('fetch_job', 'start_events', 'fetch_job_v2', "
        "'start_events_v2') ORDER BY p.proname"
    ).fetchall()
    assert [(name, "plan_cache_mode=force_generic_plan" in (config or [])) for name, config in rows] == [
        ("fetch_job", True),  # the forms of earlier releases' workers (migration 0048)
        ("fetch_job_v2", True),
        ("start_events", True),
        ("start_events_v2", True),
    ]
    worker = queries("worker")
    for name in ("fetch_job", "start_events"):
        assert worker[name].strip().startswith(f"SELECT * FROM hookline.{name}_v2("), name
