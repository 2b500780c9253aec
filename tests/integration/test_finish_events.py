"""The group commit finishes its batch in one call (hookline.finish_events, migration 0023).

hookline.finish_events restates procrastinate_finish_job_v1's update for a whole batch: these tests
hold it to the same results as one hookline.finish_event (and so procrastinate's own function) per
event, row for row, including procrastinate's audit rows and hookline's totals; to the same refusal of
a job that is not todo or doing; and to its place in insert_calls, after the batch's calls are stored
(its trigger counts each finished event by the pipelines of its calls).
"""

from __future__ import annotations

import json
from typing import Any

import psycopg
import pytest

from app.core.sqlfiles import queries

BACKLOG = 10_000


def _add(cur: psycopg.Cursor[Any], prefix: str, n: int) -> list[tuple[int, int]]:
    """n events, each with the job its insert deferred: (event id, job id), in order."""
    events = cur.execute(
        "INSERT INTO hookline.events (source, delivery_id, payload) "
        "SELECT 's', %s || i, '{}' FROM generate_series(1, %s) AS i RETURNING id",
        (prefix, n),
    ).fetchall()
    rows = cur.execute(  # the jobs come from the insert's statement trigger: a statement of their own
        "SELECT j.id FROM procrastinate_jobs j WHERE (j.args ->> 'event_id')::bigint = ANY (%s) "
        "ORDER BY (j.args ->> 'event_id')::bigint",
        ([int(e[0]) for e in events],),
    ).fetchall()
    return [(int(e[0]), int(j[0])) for e, j in zip(events, rows, strict=True)]


def _start(cur: psycopg.Cursor[Any], jobs: list[int]) -> None:
    """What a worker's fetch or batch claim does: the jobs become doing, and their events processing."""
    cur.execute("UPDATE procrastinate_jobs SET status = 'doing' WHERE id = ANY (%s)", (jobs,))
    cur.execute(
        "UPDATE hookline.events SET status = 'processing', attempts = attempts + 1, claims = claims + 1 "
        "WHERE id IN (SELECT (args ->> 'event_id')::bigint FROM procrastinate_jobs WHERE id = ANY (%s))",
        (jobs,),
    )


def _call(cur: psycopg.Cursor[Any], event: int, pipeline: str) -> None:
    cur.execute(
        "INSERT INTO hookline.llm_calls (event_id, pipeline, model, status, request) "
        "VALUES (%s, %s, 'm', 'succeeded', '{}')",
        (event, pipeline),
    )


def _state(cur: psycopg.Cursor[Any], pairs: list[tuple[int, int]]) -> list[tuple[Any, ...]]:
    """Each event's outcome with its job's row and procrastinate's audit trail (ids left out)."""
    return [
        tuple(r)
        for r in cur.execute(
            "SELECT e.status, e.dry_run, e.detail, e.finished_at IS NOT NULL, e.last_error, "
            "       j.status, j.attempts, j.abort_requested, "
            "       (SELECT array_agg(pe.type::text ORDER BY pe.id) FROM procrastinate_events pe "
            "        WHERE pe.job_id = j.id) "
            "FROM unnest(%s::bigint[], %s::bigint[]) WITH ORDINALITY AS p(event_id, job_id, ord) "
            "JOIN hookline.events e ON e.id = p.event_id JOIN procrastinate_jobs j ON j.id = p.job_id "
            "ORDER BY p.ord",
            ([e for e, _ in pairs], [j for _, j in pairs]),
        ).fetchall()
    ]


def _finished_totals(cur: psycopg.Cursor[Any]) -> dict[tuple[str, str], float]:
    return {
        (r[0], r[1]): float(r[2])
        for r in cur.execute(
            "SELECT pipeline, status, sum(value) FROM hookline.metric_totals "
            "WHERE metric = 'events_finished' GROUP BY 1, 2"
        ).fetchall()
    }


def test_one_call_for_the_batch_leaves_what_one_finish_per_event_leaves(hookline_db: psycopg.Connection) -> None:
    hookline_db.autocommit = False
    with hookline_db.cursor() as cur:
        one_by_one = _add(cur, "a-", 4)
        batch = _add(cur, "b-", 4)
        # the same mix on both sides: jobs doing (claimed) and todo (never claimed), an event whose
        # pipeline stored a call, outcomes with and without detail, a dry run
        outcomes = [
            ("succeeded", False, None),
            ("skipped", False, "no route"),
            ("succeeded", True, None),
            ("dead", False, "gave up"),
        ]
        for side in (one_by_one, batch):
            _start(cur, [side[0][1], side[1][1], side[2][1]])
            _call(cur, side[0][0], "triage")
        before = _finished_totals(cur)
        for (event, job), (status, dry, detail) in zip(one_by_one, outcomes, strict=True):
            cur.execute("SELECT hookline.finish_event(%s, %s, %s, %s, NULL, %s)", (event, status, dry, detail, job))
        middle = _finished_totals(cur)
        got = cur.execute(
            "SELECT hookline.finish_events(%s, %s, %s, %s, %s)",
            (
                [e for e, _ in batch],
                [o[0] for o in outcomes],
                [o[1] for o in outcomes],
                [o[2] for o in outcomes],
                [j for _, j in batch],
            ),
        ).fetchone()
        after = _finished_totals(cur)
        assert got == (4,)
        assert _state(cur, batch) == _state(cur, one_by_one)
        assert _state(cur, batch)[0][5:] == ("succeeded", 1, False, ["deferred", "started", "succeeded"])
        assert _state(cur, batch)[3][5:] == ("succeeded", 0, False, ["deferred", "cancelled"])
        added_one_by_one = {k: v - before.get(k, 0) for k, v in middle.items() if v != before.get(k, 0)}
        added_batch = {k: v - middle.get(k, 0) for k, v in after.items() if v != middle.get(k, 0)}
        assert (
            added_batch
            == added_one_by_one
            == {
                ("triage", "succeeded"): 1,
                ("", "skipped"): 1,
                ("", "succeeded"): 1,
                ("", "dead"): 1,
            }
        )
    hookline_db.rollback()


def test_a_job_that_is_not_todo_or_doing_fails_the_whole_call(hookline_db: psycopg.Connection) -> None:
    hookline_db.autocommit = False
    with hookline_db.cursor() as cur:
        pairs = _add(cur, "c-", 3)
        _start(cur, [j for _, j in pairs])
        cur.execute("SELECT procrastinate_finish_job_v1(%s, 'succeeded', false)", (pairs[1][1],))
        before = _state(cur, pairs)
        cur.execute("SAVEPOINT s")
        with pytest.raises(psycopg.errors.RaiseException, match=r"not in \"doing\" or \"todo\" status \(2 of 3"):
            cur.execute(
                "SELECT hookline.finish_events(%s, %s, %s, %s, %s)",
                ([e for e, _ in pairs], ["succeeded"] * 3, [False] * 3, [None] * 3, [j for _, j in pairs]),
            )
        cur.execute("ROLLBACK TO SAVEPOINT s")
        assert _state(cur, pairs) == before  # nothing of the call is left: not even the other two events
        assert [s[0] for s in before] == ["processing"] * 3
    hookline_db.rollback()


def test_only_the_current_claim_ends_an_event_and_a_stale_one_leaves_the_job_alone(
    hookline_db: psycopg.Connection,
) -> None:
    """Migration 0047: a job taken for stalled is claimed again by another worker (attempts 2) while
    the first run (claim 1) still runs. The first run's outcome, retry and hold change nothing, and the
    job it shares with the later run is left doing; the other events of the same batch finish."""
    hookline_db.autocommit = False
    worker = queries("worker")
    with hookline_db.cursor() as cur:
        pairs = _add(cur, "f-", 3)
        _start(cur, [j for _, j in pairs])  # claim 1 of each
        (taken, taken_job), *rest = pairs
        _start(cur, [taken_job])  # the second worker's claim of the first event: claim 2
        finish = "SELECT hookline.finish_event(%s, 'dead', false, 'late', 'boom', %s, %s)"
        assert cur.execute(finish, (taken, taken_job, 1)).fetchone() == (False,)
        got = cur.execute(
            "SELECT hookline.finish_events(%s, %s, %s, %s, %s, %s)",
            ([e for e, _ in pairs], ["succeeded"] * 3, [False] * 3, [None] * 3, [j for _, j in pairs], [1, 1, 1]),
        ).fetchone()
        assert got is not None and sorted(got[0]) == sorted(e for e, _ in rest)
        args = {"event_id": taken, "claim": 1, "error": "e", "detail": "d", "replayed": []}
        assert cur.execute(worker["retry_event"], args).rowcount == 0
        assert cur.execute(queries("limits")["throttle_event"], args).rowcount == 0
        state = _state(cur, pairs)
        assert [s[0] for s in state] == ["processing", "succeeded", "succeeded"]
        assert [s[5] for s in state] == ["doing", "succeeded", "succeeded"]  # the later run's job: left alone
        assert cur.execute(finish, (taken, taken_job, 2)).fetchone() == (True,)  # the current claim ends it
        assert _state(cur, pairs)[0][:5:4] == ("dead", "boom")
    hookline_db.rollback()


def test_a_claim_is_never_handed_out_twice_replays_and_old_workers_claims_included(
    hookline_db: psycopg.Connection,
) -> None:
    """Migration 0048: the claim's token is hookline.events.claims, which a replay does not reset (it
    resets attempts, 0047's token) and a hold does not give back. A run that outlived a later run's
    outcome and a replay (claim 1 of attempts 1, as the replay's run) writes nothing; a claim by a worker
    of the previous release (hookline.claim_events) fences off a run of this one too."""
    hookline_db.autocommit = False
    worker, limits = queries("worker"), queries("limits")
    claim = "SELECT attempts, claims FROM hookline.claim_events_v2(ARRAY[%s]::bigint[])"
    finish = "SELECT hookline.finish_event_v2(%s, %s, false, NULL, NULL, NULL, %s)"
    with hookline_db.cursor() as cur:
        ((event, _),) = _add(cur, "r-", 1)
        assert cur.execute(claim, (event,)).fetchone() == (1, 1)  # the run that will outlive it all
        assert cur.execute(claim, (event,)).fetchone() == (2, 2)  # its job taken for stalled: the later run
        assert cur.execute(finish, (event, "succeeded", 2)).fetchone() == (True,)
        cur.execute("SELECT hookline.replay(%s::bigint)", (event,))
        assert cur.execute(claim, (event,)).fetchone() == (1, 3)  # the replay's run: attempts 1 again
        stale = {"event_id": event, "claim": 1, "error": "e", "detail": "d", "replayed": []}
        assert cur.execute(finish, (event, "dead", 1)).fetchone() == (False,)
        got = cur.execute(
            "SELECT hookline.finish_events_v2(ARRAY[%s]::bigint[], '{dead}', '{f}', '{late}', '{NULL}', '{1}')",
            (event,),
        ).fetchone()
        assert got == ([],)
        assert cur.execute(worker["retry_event"], stale).rowcount == 0
        assert cur.execute(limits["throttle_event"], stale).rowcount == 0
        assert cur.execute("SELECT status FROM hookline.events WHERE id = %s", (event,)).fetchone() == ("processing",)

        held = {**stale, "claim": 3}  # the replay's run is held: its attempt given back, not its claim
        assert cur.execute(limits["throttle_event"], held).rowcount == 1
        cur.execute("SELECT count(*) FROM hookline.claim_events(ARRAY[%s]::bigint[])", (event,))  # an old worker
        assert cur.execute("SELECT attempts, claims FROM hookline.events WHERE id = %s", (event,)).fetchone() == (1, 4)
        assert cur.execute(finish, (event, "succeeded", 3)).fetchone() == (False,)
        assert cur.execute(finish, (event, "succeeded", 4)).fetchone() == (True,)
    hookline_db.rollback()


def test_an_event_given_twice_keeps_its_last_outcome_and_no_job_is_needed(hookline_db: psycopg.Connection) -> None:
    hookline_db.autocommit = False
    with hookline_db.cursor() as cur:
        ((event, job),) = _add(cur, "d-", 1)
        got = cur.execute(
            "SELECT hookline.finish_events(%s, %s, %s, %s, %s)",
            ([event, event], ["dead", "succeeded"], [False, False], ["first", "last"], [None, None]),
        ).fetchone()
        assert got == (1,)
        assert _state(cur, [(event, job)])[0][:3] == ("succeeded", False, "last")
        assert _state(cur, [(event, job)])[0][5] == "todo"  # no job given: procrastinate's job untouched
        nothing = cur.execute("SELECT hookline.finish_events(NULL, NULL, NULL, NULL, NULL)").fetchone()
        assert nothing == (0,)
    hookline_db.rollback()


def _rows(pairs: list[tuple[int, int]], pipeline: str) -> str:
    return json.dumps(
        [
            {
                "n": n,
                "event_id": event,
                "pipeline": pipeline,
                "model": "m",
                "status": "succeeded",
                "request": {"model": "m"},
                "output": {"label": "ok"},
                "input_tokens": 3,
                "finish_status": "succeeded",
                "finish_dry_run": False,
                "finish_job_id": job,
                "finish_claim": 1,  # the claim _start made (migration 0048)
            }
            for n, (event, job) in enumerate(pairs, start=1)
        ]
    )


def _calls_of(cur: psycopg.Cursor[Any], name: str) -> int:
    row = cur.execute(
        "SELECT coalesce(sum(calls), 0) FROM pg_stat_xact_user_functions "
        "WHERE schemaname = 'hookline' AND funcname = %s",
        (name,),
    ).fetchone()
    assert row is not None
    return int(row[0])


def _reads(cur: psycopg.Cursor[Any]) -> dict[str, int]:
    """Rows of hookline.events and procrastinate_jobs read so far in this transaction, by sequential and
    index scans alike."""
    return {
        str(r[0]): int(r[1])
        for r in cur.execute(
            "SELECT relname, seq_tup_read + coalesce(idx_tup_fetch, 0) FROM pg_stat_xact_user_tables "
            "WHERE relid IN ('hookline.events'::regclass, 'procrastinate_jobs'::regclass)"
        ).fetchall()
    }


def test_the_group_commit_stores_its_calls_then_finishes_its_events_in_one_call(
    hookline_db: psycopg.Connection,
) -> None:
    """insert_calls as the worker runs it, its plans made while the tables are small: the batch's events
    are finished by one hookline.finish_events call, by primary key however large the tables grew, and
    each is counted under the pipeline of the call stored in the same statement."""
    insert_calls = queries("worker")["insert_calls"]
    hookline_db.autocommit = False
    with hookline_db.cursor() as cur:
        cur.execute("SET LOCAL track_functions = 'pl'")
        for i in range(6):  # plans made now, with a few rows, stay cached in this session
            early = _add(cur, f"early{i}-", 2)
            _start(cur, [j for _, j in early])
            cur.execute(insert_calls, {"rows": _rows(early, "warm"), "notify": "after_commit"}, prepare=True)
        _add(cur, "backlog-", BACKLOG)
        batch = _add(cur, "batch-", 7)
        _start(cur, [j for _, j in batch])
        before = _finished_totals(cur)
        calls0, single0, reads0 = _calls_of(cur, "finish_events_v2"), _calls_of(cur, "finish_event_v2"), _reads(cur)

        out = cur.execute(
            insert_calls, {"rows": _rows(batch, "triage"), "notify": "after_commit"}, prepare=True
        ).fetchall()

        assert [r[0] for r in out] == list(range(1, 8)) and all(r[1] is not None for r in out)
        assert [r[2] for r in out] == [True] * 7  # finished: each row finished its event
        assert _calls_of(cur, "finish_events_v2") - calls0 == 1
        assert _calls_of(cur, "finish_event_v2") == single0 == 0
        read = {name: n - reads0.get(name, 0) for name, n in _reads(cur).items()}
        # a few probes per row (the finish, the calls' foreign key, the triggers), never the backlog
        assert read["events"] <= 7 * 5 and read["procrastinate_jobs"] <= 7 * 5, read
        assert {s[0] for s in _state(cur, batch)} == {"succeeded"}
        assert {s[5:8] for s in _state(cur, batch)} == {("succeeded", 1, False)}
        after = _finished_totals(cur)
        assert {k: v - before.get(k, 0) for k, v in after.items() if v != before.get(k, 0)} == {
            ("triage", "succeeded"): 7
        }
    hookline_db.rollback()


def test_a_batch_counts_each_finished_event_once_per_pipeline_when_its_status_changes(
    hookline_db: psycopg.Connection,
) -> None:
    """events_finished counts an event when its status becomes terminal and differs from the old one, once
    per pipeline with a model call ('' without), however many events one call finishes."""
    hookline_db.autocommit = False
    with hookline_db.cursor() as cur:
        (a, _), (b, _) = _add(cur, "t-", 2)
        _call(cur, a, "triage")
        _call(cur, a, "draft")

        def finish(events: list[int], statuses: list[str]) -> dict[tuple[str, str], float]:
            before = _finished_totals(cur)
            cur.execute(
                "SELECT hookline.finish_events(%s, %s, %s, %s, %s)",
                (events, statuses, [False] * len(events), [None] * len(events), [None] * len(events)),
            )
            after = _finished_totals(cur)
            return {k: v - before.get(k, 0) for k, v in after.items() if v != before.get(k, 0)}

        assert finish([a, b], ["succeeded", "skipped"]) == {
            ("triage", "succeeded"): 1,
            ("draft", "succeeded"): 1,
            ("", "skipped"): 1,
        }
        assert finish([a], ["succeeded"]) == {}  # no change of status: nothing counted again
        assert finish([a, b], ["dead", "skipped"]) == {("triage", "dead"): 1, ("draft", "dead"): 1}
        assert finish([b], ["processing"]) == {}  # not terminal
    hookline_db.rollback()
