"""Retention (worker.runtime.Runtime.retention, run every minute by the maintenance task).

README: finished jobs are deleted after HOOKLINE_JOB_RETENTION_HOURS and bodies/payloads of finished
events dropped after HOOKLINE_PAYLOAD_RETENTION_DAYS; a dead letter keeps its bad model output and
action_runs.result is kept. One run prunes everything due (within its time budget, not a fixed count),
and reads only what is due: procrastinate's job event log by job, the events by
events_payload_due_idx (migration 0030), never the rows pruned before. Measured in rows read (this
transaction's own statistics), never in time.
"""

from __future__ import annotations

import json
from typing import Any

import psycopg
import pytest
from psycopg.types.json import Jsonb
from pydantic import ValidationError

from app.core import migrations
from app.core.config import SCHEDULE_SOURCE, Config
from app.core.db import connect
from app.core.redaction import load_shown_story
from app.core.sqlfiles import queries
from tests.acceptance.test_admin_api import admin_config, insert_event
from tests.acceptance.test_admin_redaction import CARD, EMAIL, story
from tests.harness import config_from, make_settings, rows, scans_and_reads
from worker.runtime import Runtime


async def _retain(db_url: str, config: Config | None = None, batch: int = 1000, **over: Any) -> dict[str, int]:
    rt = Runtime.build(make_settings(db_url, **over), config or config_from({}))
    await rt.open()
    try:
        return await rt.retention(batch=batch)
    finally:
        await rt.close()


def _event(conn: psycopg.Connection, delivery: str, status: str, age: str) -> int:
    row = conn.execute(
        "INSERT INTO hookline.events (source, delivery_id, status, body, payload, received_at, finished_at) "
        "VALUES ('stripe', %s, %s, '\\x7b7d', '{\"a\": 1}', now() - %s::interval, now() - %s::interval) "
        "RETURNING id",
        (delivery, status, age, age),
    ).fetchone()
    assert row is not None
    return int(row[0])


def _old_events(cur: psycopg.Cursor[Any], prefix: str, n: int, *, pruned: bool = False) -> None:
    """``n`` events that finished 40 days ago; ``pruned``: retention already dropped their payloads."""
    cur.execute(
        "INSERT INTO hookline.events (source, delivery_id, status, body, payload, received_at, finished_at) "
        "SELECT 'stripe', %s || g, 'succeeded', CASE WHEN %s THEN NULL ELSE '\\x7b7d'::bytea END, "
        "CASE WHEN %s THEN NULL ELSE '{}'::jsonb END, now() - interval '40 days', now() - interval '40 days' "
        "FROM generate_series(1, %s) g",
        (prefix, pruned, pruned, n),
    )


def _finished_jobs(cur: psycopg.Cursor[Any], n: int, age: str) -> None:
    """``n`` jobs deferred and finished ``age`` ago, as procrastinate records them (a deferred and a
    succeeded event each)."""
    defer = "SELECT hookline.defer_job('hookline', 'hookline:process_event', '{}') FROM generate_series(1, %s)"
    cur.execute(defer, (n,))
    cur.execute(
        "UPDATE procrastinate_jobs SET status = 'succeeded' "
        "WHERE id IN (SELECT id FROM procrastinate_jobs ORDER BY id DESC LIMIT %s)",
        (n,),
    )
    cur.execute(
        "UPDATE procrastinate_events SET at = now() - %s::interval "
        "WHERE job_id IN (SELECT id FROM procrastinate_jobs ORDER BY id DESC LIMIT %s)",
        (age, n),
    )


async def test_one_run_prunes_everything_due_not_a_fixed_count(db_url: str, conn: psycopg.Connection) -> None:
    """12,000 jobs and 12,000 payloads due: one run takes them all (it stopped at 10,000 of each), and
    stops at the jobs still within their retention without reading on to the end."""
    with conn.cursor() as cur:
        _old_events(cur, "old_", 12_000)
        _finished_jobs(cur, 12_000, "2 days")
        _finished_jobs(cur, 50, "10 minutes")  # deferred later: within retention
        cur.execute("SELECT hookline.defer_job('hookline', 'hookline:process_event', '{}')")  # waits: kept
    fresh = _event(conn, "fresh", "succeeded", "1 hour")

    assert await _retain(db_url) == {"jobs_deleted": 12_000, "payloads_pruned": 12_000, "alerts_pruned": 0}
    left = rows(db_url, "SELECT status, count(*) FROM procrastinate_jobs GROUP BY 1 ORDER BY 1")
    assert left == [("todo", 1), ("succeeded", 50)]
    assert rows(
        db_url, "SELECT count(*) FROM procrastinate_events WHERE job_id NOT IN (SELECT id FROM procrastinate_jobs)"
    ) == [(0,)]
    assert rows(db_url, "SELECT id FROM hookline.events WHERE payload IS NOT NULL") == [(fresh,)]
    assert await _retain(db_url) == {"jobs_deleted": 0, "payloads_pruned": 0, "alerts_pruned": 0}


def test_prune_statements_read_what_is_due_with_plans_made_small(hookline_db: psycopg.Connection) -> None:
    """prune_payloads and prune_jobs prepared as the worker's connection prepares them, planned while
    the tables were small, then run against thousands of events pruned before and a job event log of
    thousands: each reads the rows due and a few probes, not the tables."""
    q = queries("worker")
    hookline_db.autocommit = False
    with hookline_db.cursor() as cur:
        _old_events(cur, "early_", 5)
        _finished_jobs(cur, 5, "2 days")
        cur.execute("ANALYZE hookline.events, procrastinate_jobs, procrastinate_events")
        for _ in range(8):  # the plans are made now and stay cached in this session
            cur.execute(q["prune_payloads"], {"days": 30, "batch": 100, "masked": Jsonb([])}, prepare=True)
            cur.execute(q["prune_jobs"], {"hours": 24, "after": 0, "batch": 100}, prepare=True)
            cur.execute(q["due_masked_events"], {"days": 30, "batch": 100, "masked": Jsonb(["x"])}, prepare=True)
        _old_events(cur, "pruned_", 5_000, pruned=True)  # what earlier runs already pruned
        _old_events(cur, "due_", 7)
        _finished_jobs(cur, 3_000, "10 minutes")  # within retention: nothing due among them

        seq0, read0 = scans_and_reads(cur, "hookline.events")
        masked = cur.execute(
            q["due_masked_events"], {"days": 30, "batch": 100, "masked": Jsonb(["stripe"])}, prepare=True
        )
        assert len(masked.fetchall()) == 7
        seq1, read1 = scans_and_reads(cur, "hookline.events")
        assert seq1 == seq0, "the masked sources' prune scanned hookline.events"
        assert read1 - read0 <= 3 * 7 + 5, read1 - read0  # the due rows (found, fetched, locked), not the pruned

        seq0, read0 = scans_and_reads(cur, "hookline.events")
        items0, _ = scans_and_reads(cur, "hookline.batch_items")
        pruned = cur.execute(
            q["prune_payloads"], {"days": 30, "batch": 100, "masked": Jsonb([])}, prepare=True
        ).fetchone()
        seq1, read1 = scans_and_reads(cur, "hookline.events")
        items1, _ = scans_and_reads(cur, "hookline.batch_items")
        assert pruned == (7,)
        assert seq1 == seq0, "the payload prune scanned hookline.events"
        assert items1 == items0, "the payload prune scanned hookline.batch_items"
        assert read1 - read0 <= 3 * 7 + 5, read1 - read0  # the due rows (found, locked, updated), not the pruned

        seq0, read0 = scans_and_reads(cur, "procrastinate_events")
        cur.execute(q["prune_jobs"], {"hours": 24, "after": 0, "batch": 100}, prepare=True)
        got = cur.fetchone()
        seq1, read1 = scans_and_reads(cur, "procrastinate_events")
        assert got is not None and got[0] == 0 and got[2] is True  # nothing due; the walk ends at recent jobs
        assert seq1 == seq0, "the job prune scanned procrastinate_events"
        assert read1 - read0 <= 3 * 100 + 3, read1 - read0  # each job's own events, for the 100 jobs walked
    hookline_db.rollback()


async def test_a_dead_letter_keeps_its_bad_output_and_actions_keep_their_results(
    db_url: str, conn: psycopg.Connection
) -> None:
    dead = _event(conn, "evt_dead", "dead", "31 days")
    calls = conn.execute(
        "INSERT INTO hookline.llm_calls (event_id, pipeline, model, status, request, response, error) "
        "VALUES (%s, 'p', 'm', 'invalid_output', '{\"messages\": [\"pii\"]}', '{\"content\": \"first\"}', 'schema'), "
        "       (%s, 'p', 'm', 'failed', '{\"messages\": [\"pii\"]}', '{\"error\": \"overloaded\"}', '529'), "
        "       (%s, 'p', 'm', 'invalid_output', '{\"messages\": [\"pii\"]}', '{\"content\": \"not json\"}', 'schema') "
        "RETURNING id",
        (dead, dead, dead),
    ).fetchall()
    ok = _event(conn, "evt_ok", "succeeded", "31 days")
    conn.execute(
        "INSERT INTO hookline.llm_calls (event_id, pipeline, model, status, request, response, output) "
        "VALUES (%s, 'p', 'm', 'succeeded', '{\"messages\": [\"pii\"]}', '{\"content\": \"pii\"}', '{\"a\": 1}')",
        (ok,),
    )
    conn.execute(
        "INSERT INTO hookline.action_runs (event_id, pipeline, action, action_type, status, idempotency_key, result) "
        "VALUES (%s, 'p', 'slack#0', 'slack', 'succeeded', 'k1', '{\"channel\": \"C1\", \"ts\": \"17.1\"}'), "
        "       (%s, 'p', 'sql#1', 'sql', 'succeeded', 'k2', '42')",
        (ok, dead),
    )

    assert await _retain(db_url) == {"jobs_deleted": 0, "payloads_pruned": 2, "alerts_pruned": 0}
    assert rows(db_url, "SELECT count(*) FROM hookline.events WHERE body IS NOT NULL OR payload IS NOT NULL") == [(0,)]
    shown = "SELECT invalid_output_response, invalid_output_error FROM hookline.dead_letters WHERE event_id = %s"
    assert rows(db_url, shown, dead) == [({"content": "not json"}, "schema")]
    assert rows(db_url, "SELECT id, request, response FROM hookline.llm_calls ORDER BY id") == [
        (calls[0][0], {"pruned": True}, None),
        (calls[1][0], {"pruned": True}, None),
        (calls[2][0], {"pruned": True}, {"content": "not json"}),  # the one dead_letters shows
        (calls[2][0] + 1, {"pruned": True}, None),
    ]
    assert rows(db_url, "SELECT output FROM hookline.llm_calls WHERE event_id = %s", ok) == [({"a": 1},)]
    assert rows(db_url, "SELECT action, result FROM hookline.action_runs ORDER BY action") == [
        ("slack#0", {"channel": "C1", "ts": "17.1"}),
        ("sql#1", 42),
    ]


async def test_a_retention_the_database_cannot_reach_back_to_is_refused_at_start(db_url: str) -> None:
    """A retention meant as "keep for ever" written as a huge number (HOOKLINE_PAYLOAD_RETENTION_DAYS=10000000)
    was taken, and every maintenance run failed: now() minus it is before the earliest time Postgres holds
    ("timestamp out of range"; past 2^31, "integer out of range"), so nothing was pruned, jobs neither. It
    is refused at start, as a negative one is; the largest value accepted still runs."""
    for field, top in (("payload_retention_days", 1_000_000), ("job_retention_hours", 24_000_000)):
        with pytest.raises(ValidationError, match=f"less than or equal to {top}"):
            make_settings(db_url, **{field: top + 1})
    most = await _retain(db_url, payload_retention_days=1_000_000, job_retention_hours=24_000_000)
    assert most == {"jobs_deleted": 0, "payloads_pruned": 0, "alerts_pruned": 0}


async def test_the_requests_of_batched_events_go_with_their_payloads(db_url: str, conn: psycopg.Connection) -> None:
    """A micro-batched or Message Batches event's own request (its prompt: the payload fields the model
    saw) is stored in hookline.batch_items too, and retention left it there for ever while it dropped the
    same text from llm_calls.request. It goes with the payload now; a waiting event's and a recent one's
    stay, and the items themselves (status, error) stay."""
    old = _event(conn, "evt_old", "succeeded", "31 days")
    dead = _event(conn, "evt_dead", "dead", "31 days")
    recent = _event(conn, "evt_recent", "succeeded", "1 day")
    waiting = _event(conn, "evt_waiting", "throttled", "31 days")
    prompt = '{"messages": [{"role": "user", "content": "alice@example.com"}]}'
    conn.execute(
        "INSERT INTO hookline.batch_items (event_id, pipeline, custom_id, request, kind, status, error) "
        "VALUES (%s, 'p', 'hl-1', %s, 'micro', 'done', NULL), (%s, 'p', 'hl-2', %s, 'batch_api', 'retired', 'x'), "
        "       (%s, 'p', 'hl-3', %s, 'micro', 'done', NULL), (%s, 'p', 'hl-4', %s, 'batch_api', 'submitted', NULL)",
        (old, prompt, dead, prompt, recent, prompt, waiting, prompt),
    )

    assert await _retain(db_url) == {"jobs_deleted": 0, "payloads_pruned": 2, "alerts_pruned": 0}
    items = "SELECT event_id, status, error, request FROM hookline.batch_items ORDER BY id"
    assert rows(db_url, items) == [
        (old, "done", None, {"pruned": True}),
        (dead, "retired", "x", {"pruned": True}),
        (recent, "done", None, {"messages": [{"role": "user", "content": "alice@example.com"}]}),
        (waiting, "submitted", None, {"messages": [{"role": "user", "content": "alice@example.com"}]}),
    ]


async def test_zero_means_never_and_a_negative_retention_is_refused(db_url: str, conn: psycopg.Connection) -> None:
    for field in ("payload_retention_days", "job_retention_hours"):
        with pytest.raises(ValidationError, match="greater than or equal to 0"):
            make_settings(db_url, **{field: -1})
    fresh = _event(conn, "evt_fresh", "succeeded", "1 second")
    ancient = _event(conn, "evt_ancient", "succeeded", "400 days")
    with conn.cursor() as cur:
        _finished_jobs(cur, 3, "30 days")

    pruned = await _retain(db_url, payload_retention_days=0, job_retention_hours=0)
    assert pruned == {"jobs_deleted": 0, "payloads_pruned": 0, "alerts_pruned": 0}
    kept = "SELECT id FROM hookline.events WHERE payload IS NOT NULL AND body IS NOT NULL ORDER BY id"
    assert rows(db_url, kept) == [(fresh,), (ancient,)]
    assert rows(db_url, "SELECT count(*) FROM procrastinate_jobs") == [(3,)]


def test_the_migration_drops_the_requests_of_events_pruned_before_it(empty_db_url: str) -> None:
    """Migration 0042 on a database whose retention already pruned batched events: their requests,
    kept until then, go; those of events whose payload is still due later stay."""
    found = migrations.discover()
    migrations.migrate(empty_db_url, [m for m in found if m.version < 42])
    with psycopg.connect(empty_db_url, autocommit=True) as conn:
        pruned = _event(conn, "evt_pruned", "succeeded", "40 days")
        conn.execute("UPDATE hookline.events SET body = NULL, payload = NULL WHERE id = %s", (pruned,))
        kept = _event(conn, "evt_kept", "succeeded", "1 day")
        conn.execute(
            "INSERT INTO hookline.batch_items (event_id, pipeline, custom_id, request, kind, status) "
            "VALUES (%s, 'p', 'hl-1', '{\"messages\": [\"pii\"]}', 'micro', 'done'), "
            "       (%s, 'p', 'hl-2', '{\"messages\": [\"pii\"]}', 'micro', 'done')",
            (pruned, kept),
        )
    migrations.migrate(empty_db_url, found)
    assert rows(empty_db_url, "SELECT event_id, request FROM hookline.batch_items ORDER BY id") == [
        (pruned, {"pruned": True}),
        (kept, {"messages": ["pii"]}),
    ]


async def test_a_redacting_sources_values_are_masked_in_what_retention_keeps(
    db_url: str, conn: psycopg.Connection
) -> None:
    """The display masks a redact path's value where the model's answer, an action's result, an error
    or the timeline repeats it, finding the values in the payload. Retention dropped the payload and
    left the copies, so from then on they showed in clear. It masks them in the stored rows first now;
    an event of a source without redact keeps its rows as they were, and other text stays."""
    masked = story(conn)  # stripe (redacts the email and the card): dead, copies in every kept text
    conn.execute(
        "UPDATE hookline.events SET detail = %s WHERE id = %s", (f"escalated for {EMAIL} (card {CARD})", masked)
    )
    conn.execute(
        "UPDATE hookline.llm_calls SET response = %s WHERE event_id = %s",  # the dead letter's invalid output
        (json.dumps({"content": [{"type": "text", "text": f"Dear {EMAIL}"}]}), masked),
    )
    plain = insert_event(conn, "github", "gh-old", status="dead", payload={"email": EMAIL})  # no redact
    conn.execute("UPDATE hookline.events SET last_error = %s WHERE id = %s", (f"refused {EMAIL}", plain))
    conn.execute(
        "INSERT INTO hookline.llm_calls (event_id, pipeline, model, status, request, output, error) "
        "VALUES (%s, 'p', 'm', 'succeeded', '{}', %s, %s)",
        (plain, json.dumps({"to": EMAIL}), f"said {EMAIL}"),
    )
    conn.execute(
        "INSERT INTO hookline.action_runs (event_id, pipeline, action, action_type, status, idempotency_key, "
        "result, error) VALUES (%s, 'p', 'email#0', 'email', 'failed', 'k3', %s, %s)",
        (plain, json.dumps({"to": [EMAIL]}), f"refused {EMAIL}"),
    )
    conn.execute("UPDATE hookline.events SET received_at = now() - interval '31 days'")
    everything = (
        "SELECT e.last_error, e.detail, c.output, c.error, c.response, a.result, a.error "
        "FROM hookline.events e JOIN hookline.llm_calls c ON c.event_id = e.id "
        "JOIN hookline.action_runs a ON a.event_id = e.id WHERE e.id = %s ORDER BY c.id, a.id"
    )
    plain_before = rows(db_url, everything, plain)

    assert await _retain(db_url, admin_config()) == {"jobs_deleted": 0, "payloads_pruned": 2, "alerts_pruned": 0}

    assert rows(db_url, "SELECT count(*) FROM hookline.events WHERE body IS NOT NULL OR payload IS NOT NULL") == [(0,)]
    kept = rows(db_url, everything, masked)
    assert kept and EMAIL not in str(kept) and CARD not in str(kept), kept
    assert rows(db_url, "SELECT last_error, detail FROM hookline.events WHERE id = %s", masked) == [
        ("slack#1: refused [redacted]", "escalated for [redacted] (card [redacted])")
    ]
    assert rows(
        db_url, "SELECT output, error, response, request FROM hookline.llm_calls WHERE event_id = %s", masked
    ) == [
        (
            {"subject": "Hi", "body": "Dear [redacted], card [redacted] was declined."},
            "body: '[redacted]' is too long",
            {"content": [{"type": "text", "text": "Dear [redacted]"}]},
            {"pruned": True},
        )
    ]
    assert rows(db_url, "SELECT result, error FROM hookline.action_runs WHERE event_id = %s ORDER BY id", masked) == [
        ({"message_id": "<hookline.1@example.com>", "to": ["[redacted]"]}, None),
        (None, "slack#1: refused [redacted]"),
    ]
    assert rows(db_url, everything, plain) == plain_before  # github has no redact paths: left as it was

    shown = await _shown(db_url, admin_config(), masked)  # what the admin API, events show and tail print
    assert EMAIL not in str(shown) and CARD not in str(shown), shown
    assert shown["actions"][0]["result"]["to"] == ["[redacted]"]
    assert shown["timeline"][-1]["detail"] == "slack#1: refused [redacted]"


async def test_batches_of_masked_and_plain_events_interleaved_all_go(db_url: str, conn: psycopg.Connection) -> None:
    """Events of a redacting source and of another, arriving in turn, more than a batch of each: one run
    masks and prunes them all, each source's events by its own path, and stops once nothing is due."""
    for i in range(7):
        for source in ("stripe", "github"):
            event_id = insert_event(
                conn, source, f"{source}-{i}", payload={"data": {"object": {"customer_email": EMAIL}}}
            )
            conn.execute("UPDATE hookline.events SET detail = %s WHERE id = %s", (f"for {EMAIL}", event_id))
    conn.execute("UPDATE hookline.events SET received_at = now() - interval '31 days'")

    assert await _retain(db_url, admin_config(), batch=3) == {
        "jobs_deleted": 0,
        "payloads_pruned": 14,
        "alerts_pruned": 0,
    }
    assert rows(
        db_url, "SELECT source, detail, count(*) FROM hookline.events WHERE payload IS NULL GROUP BY 1, 2 ORDER BY 1"
    ) == [
        ("github", f"for {EMAIL}", 7),
        ("stripe", "for [redacted]", 7),
    ]


async def test_a_schedule_digest_copying_a_redacting_source_is_masked_too(
    db_url: str, conn: psycopg.Connection
) -> None:
    """A schedule firing's digest copies other sources' events into its examples, masked with their own
    source's paths when shown: the firing's kept answer is masked before its payload goes as well."""
    digest = {"examples": [{"source": "stripe", "fields": {"data": {"object": {"customer_email": EMAIL}}}}]}
    firing = insert_event(conn, SCHEDULE_SOURCE, "digest-1", payload=digest)
    conn.execute(
        "INSERT INTO hookline.llm_calls (event_id, pipeline, model, status, request, output) "
        "VALUES (%s, 'digest', 'm', 'succeeded', '{}', %s)",
        (firing, json.dumps({"summary": f"one failure, for {EMAIL}"})),
    )
    conn.execute("UPDATE hookline.events SET received_at = now() - interval '31 days'")

    assert await _retain(db_url, admin_config()) == {"jobs_deleted": 0, "payloads_pruned": 1, "alerts_pruned": 0}
    assert rows(db_url, "SELECT output FROM hookline.llm_calls WHERE event_id = %s", firing) == [
        ({"summary": "one failure, for [redacted]"},)
    ]


async def _shown(db_url: str, config: Config, event_id: int) -> dict[str, Any]:
    conn = await connect(db_url)
    try:
        story = await load_shown_story(conn, config, event_id)
    finally:
        await conn.close()
    assert story is not None
    return story.as_json()


async def test_loop_guard_alert_claims_are_kept_a_day(db_url: str, conn: psycopg.Connection) -> None:
    """hookline.alerts_sent gains a row per tripped ordering key (a sender's value) and UTC hour; only
    the current hour's is claimed again. Retention deletes those of hours that began more than a day
    ago, in batches, whatever the job and payload settings (they were kept for ever)."""
    conn.execute(
        "INSERT INTO hookline.alerts_sent (kind, subject, window_start) "
        "SELECT 'loop_guard', 'p ordering key ' || quote_literal('k' || g), "
        "       date_trunc('hour', now()) - interval '2 days' - (g % 24) * interval '1 hour' "
        "FROM generate_series(1, 2500) g"
    )
    kept = [("p ordering key 'yesterday'", "23 hours"), ("p ordering key 'now'", "0 hours")]
    for subject, age in kept:
        conn.execute(
            "INSERT INTO hookline.alerts_sent (kind, subject, window_start) "
            "VALUES ('loop_guard', %s, date_trunc('hour', now()) - %s::interval)",
            (subject, age),
        )

    pruned = await _retain(db_url, batch=1000, payload_retention_days=0, job_retention_hours=0)
    assert pruned == {"jobs_deleted": 0, "payloads_pruned": 0, "alerts_pruned": 2500}
    left = rows(db_url, "SELECT subject FROM hookline.alerts_sent ORDER BY window_start")
    assert left == [(subject,) for subject, _ in kept]
    assert (await _retain(db_url))["alerts_pruned"] == 0
