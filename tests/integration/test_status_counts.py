"""Events per status from the trigger-kept counter (hookline.events_by_status, migration 0031).

The dashboard, ``hookline status`` and /metrics read the counts from hookline.event_status_counts
instead of scanning hookline.events; these tests hold the counter to ``SELECT status, count(*)`` after
every kind of write a DBA or hookline makes: multi-row inserts (the group commit), duplicates, updates
that change some statuses or none, rollbacks, deletes, truncates, concurrent writers, and a database
that already held events when the migration ran. tests/acceptance/test_status_counts.py does the same
through the web process, the worker, replay and retention.
"""

from __future__ import annotations

import random
import threading

import asyncpg
import psycopg

from app.core import migrations
from app.core.sqlfiles import queries
from app.web.admin import data
from tests.harness import config_from

OBSERVE = queries("observe")
#: Rows of hookline.events read by scans of either kind in this transaction so far.
EVENTS_READ = (
    "SELECT seq_tup_read + coalesce(idx_tup_fetch, 0) FROM pg_stat_xact_user_tables "
    "WHERE relid = 'hookline.events'::regclass"
)
STATUSES = ("queued", "processing", "succeeded", "retrying", "dead", "skipped", "throttled")


def counted(conn: psycopg.Connection) -> dict[str, int]:
    return {str(s): int(n) for s, n in conn.execute("SELECT status, n FROM hookline.events_by_status").fetchall()}


def actual(conn: psycopg.Connection) -> dict[str, int]:
    rows = conn.execute("SELECT status, count(*) FROM hookline.events GROUP BY status").fetchall()
    return {str(s): int(n) for s, n in rows}


def assert_exact(conn: psycopg.Connection) -> dict[str, int]:
    now = actual(conn)
    assert counted(conn) == now
    return now


def _insert(conn: psycopg.Connection, prefix: str, n: int, status: str = "queued") -> list[int]:
    rows = conn.execute(
        "INSERT INTO hookline.events (source, delivery_id, status, payload) "
        "SELECT 's', %s || i, %s, '{}' FROM generate_series(1, %s) AS i "
        "ON CONFLICT (source, delivery_id) DO NOTHING RETURNING id",
        (prefix, status, n),
    ).fetchall()
    return [int(r[0]) for r in rows]


def test_counts_stay_exact_through_every_kind_of_write(conn: psycopg.Connection) -> None:
    assert assert_exact(conn) == {}
    ids = _insert(conn, "a", 40)
    _insert(conn, "b", 5, "skipped")  # an invalid payload is stored skipped
    assert assert_exact(conn) == {"queued": 40, "skipped": 5}
    assert len(_insert(conn, "a", 45)) == 5  # a1 .. a40 are duplicates: not stored, not counted
    assert assert_exact(conn) == {"queued": 45, "skipped": 5}
    # one statement moving events between several statuses (a batch claim, a finish of a batch)
    conn.execute(
        "UPDATE hookline.events SET status = (ARRAY['processing','succeeded','dead','retrying','throttled'])"
        "[1 + id %% 5] WHERE id = ANY (%s)",
        (ids,),
    )
    assert_exact(conn)
    conn.execute("UPDATE hookline.events SET attempts = attempts + 1")  # no status changes
    conn.execute("UPDATE hookline.events SET status = status WHERE id = ANY (%s)", (ids[:10],))
    assert_exact(conn)
    with conn.transaction(force_rollback=True):  # rolled back: the counter rolls back with the rows
        _insert(conn, "c", 7)
        conn.execute("UPDATE hookline.events SET status = 'dead'")
        conn.execute("DELETE FROM hookline.events WHERE status = 'dead' AND id % 2 = 0")
        assert_exact(conn)
    assert_exact(conn)
    # a replay: finished events back to queued
    conn.execute("UPDATE hookline.events SET status = 'queued' WHERE status IN ('succeeded', 'dead')")
    assert_exact(conn)
    conn.execute("DELETE FROM hookline.events WHERE id % 3 = 0")  # a DBA's prune of old events
    assert_exact(conn)
    with conn.transaction(force_rollback=True):
        conn.execute("TRUNCATE hookline.events CASCADE")
        assert assert_exact(conn) == {}
    assert sum(assert_exact(conn).values()) > 0
    conn.execute("TRUNCATE hookline.events CASCADE")
    assert assert_exact(conn) == {}
    _insert(conn, "d", 3, "dead")
    assert assert_exact(conn) == {"dead": 3}


def test_a_recount_repairs_writes_that_skipped_the_triggers(conn: psycopg.Connection) -> None:
    _insert(conn, "a", 5)
    with conn.transaction():  # as a logical replica or a data-only restore with --disable-triggers writes
        conn.execute("SET LOCAL session_replication_role = replica")
        _insert(conn, "b", 4, "dead")
    assert counted(conn) == {"queued": 5} != actual(conn)
    conn.execute("SELECT hookline.recount_events_by_status()")
    assert assert_exact(conn) == {"queued": 5, "dead": 4}
    _insert(conn, "c", 1, "dead")
    assert assert_exact(conn) == {"queued": 5, "dead": 5}


def _writer(url: str, seed: int, errors: list[BaseException]) -> None:
    """Ingest, claims, finishes, retries and replays in short transactions, as hookline's processes do."""
    rnd = random.Random(seed)
    try:
        with psycopg.connect(url, autocommit=True) as c:
            for i in range(60):
                op = rnd.random()
                if op < 0.4:
                    _insert(c, f"w{seed}-{i}-", rnd.randint(1, 20))
                else:
                    old, new = rnd.sample(STATUSES, 2)
                    with c.transaction():
                        c.execute(
                            "UPDATE hookline.events SET status = %s WHERE id IN "
                            "(SELECT id FROM hookline.events WHERE status = %s LIMIT %s FOR UPDATE SKIP LOCKED)",
                            (new, old, rnd.randint(1, 15)),
                        )
                        if rnd.random() < 0.3:  # a second status change in the same transaction
                            c.execute(
                                "UPDATE hookline.events SET status = 'succeeded' WHERE id IN (SELECT id FROM "
                                "hookline.events WHERE status = 'processing' LIMIT 3 FOR UPDATE SKIP LOCKED)"
                            )
    except BaseException as e:  # reported by the test
        errors.append(e)


def test_concurrent_writers_keep_the_counts_exact(conn: psycopg.Connection, db_url: str) -> None:
    _insert(conn, "seed", 200)
    errors: list[BaseException] = []
    threads = [threading.Thread(target=_writer, args=(db_url, seed, errors)) for seed in range(6)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == []
    assert sum(assert_exact(conn).values()) > 200
    # the writes went to several slots, summed on read
    assert conn.execute("SELECT count(DISTINCT shard) FROM hookline.event_status_counts").fetchone() != (1,)


def test_the_migration_counts_the_events_already_stored(empty_db_url: str) -> None:
    found = migrations.discover()
    (mine,) = [m for m in found if m.name == "events_counted_by_status"]
    migrations.migrate(empty_db_url, [m for m in found if m.version < mine.version])
    with psycopg.connect(empty_db_url, autocommit=True) as c:
        _insert(c, "old", 30)
        c.execute("UPDATE hookline.events SET status = 'succeeded' WHERE id % 3 = 0")
        c.execute("UPDATE hookline.events SET status = 'dead' WHERE id % 3 = 1")
    migrations.migrate(empty_db_url)
    with psycopg.connect(empty_db_url, autocommit=True) as c:
        assert assert_exact(c) == {"queued": 10, "succeeded": 10, "dead": 10}
        _insert(c, "new", 4)
        assert assert_exact(c) == {"queued": 14, "succeeded": 10, "dead": 10}


async def _rows_read(url: str, f: data.EventFilter) -> int:
    """Rows of hookline.events the admin list (app.web.admin.data.list_events) reads for this filter with
    a generic plan: the one Postgres picks for a prepared statement after five calls when the custom
    plans of other filters (a tenant, a date) cost more, forced here so the test does not hang on the
    planner's cost estimates."""
    conn = await asyncpg.connect(url, server_settings={"plan_cache_mode": "force_generic_plan"})
    try:
        async with conn.transaction():  # (the view may still hold the counts of earlier transactions)
            before = await conn.fetchval(EVENTS_READ)
            assert await data.list_events(conn, config_from({}), f, before=None, limit=50) == []
            return int(await conn.fetchval(EVENTS_READ)) - int(before)
    finally:
        await conn.close()


async def test_a_status_filter_reads_the_status_index_at_every_call(conn: psycopg.Connection, db_url: str) -> None:
    """The admin list filtered by a status no event has (retrying) reads events_status_received_idx, not
    the whole table backwards by id, also when a generic plan would be used (1.5 s at 2M events)."""
    conn.execute(
        "INSERT INTO hookline.events (source, delivery_id, status, payload) "
        "SELECT 's', 'e' || i, CASE WHEN i % 100 = 0 THEN 'dead' WHEN i % 10 = 1 THEN 'skipped' ELSE 'succeeded' END,"
        " '{}' FROM generate_series(1, 50000) AS i"
    )
    conn.execute("ANALYZE hookline.events")
    assert await _rows_read(db_url, data.EventFilter(status="retrying")) == 0


async def test_a_tenant_or_a_source_and_type_no_event_has_read_no_event(conn: psycopg.Connection, db_url: str) -> None:
    """The admin list filtered by a tenant with no events (a small tenant among many, a misspelt one), or by
    a source and an event type that never occur together (the type of another source), read the whole
    table backwards by id (150 ms at 300,000 events); they read events_tenant_id_idx and
    events_source_type_received_idx (with the pairs the statistics of migration 0044 know) instead."""
    conn.execute(
        "INSERT INTO hookline.events (source, delivery_id, event_type, tenant, status, payload) "
        "SELECT 's' || i % 4, 'e' || i, 'type.' || i % 20, 't' || i % 50, 'succeeded', '{}' "
        "FROM generate_series(1, 50000) AS i"
    )
    conn.execute("ANALYZE hookline.events")
    assert await _rows_read(db_url, data.EventFilter(tenant="t-none")) == 0
    # type.3 is only ever of source s3 (i % 20 = 3 means i % 4 = 3)
    assert await _rows_read(db_url, data.EventFilter(source="s1", event_type="type.3")) == 0


async def test_the_counts_by_status_read_no_event_row(conn: psycopg.Connection, db_url: str) -> None:
    """The dashboard's and the admin API's counts (admin.sql status_counts), `hookline status`'s
    (observe.sql event_status_counts, dead_letters_count) come from the counter, not a scan of the events."""
    _insert(conn, "x", 300)
    conn.execute("UPDATE hookline.events SET status = 'dead' WHERE id % 3 = 0")
    expected = assert_exact(conn)
    reader = await asyncpg.connect(db_url)
    try:
        async with reader.transaction():
            before = await reader.fetchval(EVENTS_READ)
            assert await data.status_counts(reader) == expected
            assert {r["status"]: r["n"] for r in await reader.fetch(OBSERVE["event_status_counts"])} == expected
            assert await reader.fetchval(OBSERVE["dead_letters_count"]) == expected["dead"]
            assert int(await reader.fetchval(EVENTS_READ)) - int(before) == 0
    finally:
        await reader.close()
