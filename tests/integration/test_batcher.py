"""Group commit at ingest (app/web/batcher.py) against real Postgres: batches, duplicates, a bad row."""

from __future__ import annotations

import asyncio
import contextlib
import json
from collections.abc import AsyncIterator
from typing import Any

import asyncpg
import psycopg
import pytest

from app.core import db
from app.web.batcher import Batcher, Q, _columns, _Item
from tests.harness import scans_and_reads


def row(delivery_id: str, payload: Any = None, ordering_key: str | None = None) -> tuple[Any, ...]:
    payload = {"id": delivery_id} if payload is None else payload
    return (
        "s",
        delivery_id,
        "t.created",
        None,
        ordering_key,
        None,
        {"content-type": "application/json"},
        json.dumps(payload).encode(),
        payload,
        "application/json",
        "127.0.0.1",
        None,  # request id
        0,  # job priority
        False,  # respond_sync
    )


@pytest.fixture
async def pool(db_url: str) -> Any:
    p = await db.create_pool(db_url, min_size=1, max_size=4, timeout=10)
    yield p
    await p.close()


async def _pool_of(p: Any) -> Any:
    return p


def one(conn: psycopg.Connection, sql: str, *args: Any) -> Any:
    got = conn.execute(sql, args).fetchone()
    assert got is not None
    return got[0]


async def test_concurrent_inserts_share_statements_and_each_gets_its_own_id(
    pool: Any, conn: psycopg.Connection
) -> None:
    batcher = Batcher(lambda: _pool_of(pool), max_flushes=2)
    results = await asyncio.gather(*(batcher.insert(row(f"d-{i}")) for i in range(300)))
    ids = [r[0] for r in results]
    assert all(not dup for _, dup in results)
    assert len(set(ids)) == 300
    stored: dict[str, int] = dict(
        conn.execute("SELECT delivery_id, id FROM hookline.events WHERE source = 's'").fetchall()
    )
    assert stored == {f"d-{i}": ids[i] for i in range(300)}
    assert batcher.stats["flushes"] < 300  # they were grouped
    jobs = one(conn, "SELECT count(*) FROM procrastinate_jobs WHERE task_name = 'hookline:process_event'")
    assert jobs == 300


async def test_duplicates_in_flight_and_committed_are_answered_with_the_first_id(
    pool: Any, conn: psycopg.Connection
) -> None:
    batcher = Batcher(lambda: _pool_of(pool))
    first = await asyncio.gather(*(batcher.insert(row(f"x-{i % 10}")) for i in range(100)))
    by_key: dict[int, set[int | None]] = {}
    for i, (event_id, _) in enumerate(first):
        by_key.setdefault(i % 10, set()).add(event_id)
    assert all(len(v) == 1 for v in by_key.values())
    assert sum(not dup for _, dup in first) == 10
    again = await asyncio.gather(*(batcher.insert(row(f"x-{i}")) for i in range(10)))
    assert again == [(next(iter(by_key[i])), True) for i in range(10)]
    assert one(conn, "SELECT count(*) FROM hookline.events WHERE source = 's'") == 10
    assert one(conn, "SELECT count(*) FROM procrastinate_jobs") == 10


async def test_a_row_postgres_rejects_fails_alone(pool: Any, conn: psycopg.Connection) -> None:
    batcher = Batcher(lambda: _pool_of(pool), max_flushes=1)
    rows = [row(f"ok-{i}") for i in range(20)]
    rows[7] = row("bad", payload={"text": "nul \u0000 byte"})  # jsonb refuses \u0000
    results = await asyncio.gather(*(batcher.insert(r) for r in rows), return_exceptions=True)
    assert isinstance(results[7], asyncpg.exceptions.DataError)
    good = [r for i, r in enumerate(results) if i != 7]
    assert all(isinstance(r, tuple) and r[0] is not None and not r[1] for r in good)
    stored = {r[0] for r in conn.execute("SELECT delivery_id FROM hookline.events WHERE source = 's'").fetchall()}
    assert stored == {f"ok-{i}" for i in range(20) if i != 7}


async def test_one_notify_per_batch_and_jobs_keep_arrival_order(pool: Any, db_url: str) -> None:
    listener = await db.connect(db_url, timeout=10)
    heard: list[str] = []
    await listener.add_listener("procrastinate_any_queue_v1", lambda *a: heard.append(a[3]))
    try:
        batcher = Batcher(lambda: _pool_of(pool), max_flushes=1, max_batch=500)
        await asyncio.gather(*(batcher.insert(row(f"o-{i}", ordering_key="k")) for i in range(50)))
        for _ in range(100):
            if heard:
                break
            await asyncio.sleep(0.02)
        await asyncio.sleep(0.2)
        assert 1 <= len(heard) <= batcher.stats["flushes"]
        assert json.loads(heard[0])["type"] == "job_inserted"
        async with pool.acquire() as c:
            got = await c.fetch(
                "SELECT (j.args->>'event_id')::bigint AS event_id, j.lock FROM procrastinate_jobs j ORDER BY j.id"
            )
        assert [r["event_id"] for r in got] == sorted(r["event_id"] for r in got)
        assert {r["lock"] for r in got} == {"hookline:s:k"}
    finally:
        await listener.close()


async def test_a_key_seen_committed_is_answered_from_memory_with_no_statement(
    db_url: str, conn: psycopg.Connection
) -> None:
    """Stored here or found stored, a key is answered without Postgres: with the pool closed, only new keys fail."""
    p = await db.create_pool(db_url, min_size=1, max_size=2, timeout=10)
    other = await db.create_pool(db_url, min_size=1, max_size=2, timeout=10)
    here, elsewhere = Batcher(lambda: _pool_of(p)), Batcher(lambda: _pool_of(other))
    (a_id, a_dup), (b_id, b_dup) = await here.insert(row("a")), await elsewhere.insert(row("b"))
    assert not a_dup and not b_dup
    assert await here.insert(row("b")) == (b_id, True)  # stored by another process: Postgres said so once
    assert here.stats["known_hits"] == 0
    flushes = here.stats["flushes"]
    await p.close()
    await other.close()
    assert await here.insert(row("a")) == (a_id, True)
    assert await here.insert(row("b")) == (b_id, True)
    assert here.stats["known_hits"] == 2 and here.stats["flushes"] == flushes
    with pytest.raises(asyncpg.exceptions.InterfaceError):  # a new key needs the database
        await here.insert(row("c"))
    assert one(conn, "SELECT count(*) FROM hookline.events WHERE source = 's'") == 2


async def test_remembered_keys_expire_and_are_capped_and_failures_are_not_remembered(
    pool: Any, conn: psycopg.Connection
) -> None:
    brief = Batcher(lambda: _pool_of(pool), known_seconds=0.05)
    first, _ = await brief.insert(row("old"))
    await asyncio.sleep(0.1)
    assert await brief.insert(row("old")) == (first, True)
    assert brief.stats["known_hits"] == 0 and brief.stats["flushes"] == 2  # too old: Postgres was asked again

    small = Batcher(lambda: _pool_of(pool), known_size=2)
    for key in ("k1", "k2", "k3"):
        await small.insert(row(key))
    flushes = small.stats["flushes"]
    for key in ("k3", "k2", "k1"):
        await small.insert(row(key))
    assert small.stats["known_hits"] == 2 and small.stats["flushes"] == flushes + 1  # k1 was pushed out

    off = Batcher(lambda: _pool_of(pool), known_size=0)
    await off.insert(row("k1"))
    assert off.stats["known_hits"] == 0 and off.stats["flushes"] == 1

    bad = row("bad", payload={"text": "nul \u0000 byte"})
    for _ in range(2):  # a rejected row is asked again, and rejected again
        with pytest.raises(asyncpg.exceptions.DataError):
            await small.insert(bad)
    assert small.stats["known_hits"] == 2
    assert one(conn, "SELECT count(*) FROM hookline.events WHERE source = 's'") == 4


async def _heard_on(url: str, channels: tuple[str, ...]) -> tuple[Any, list[tuple[str, dict[str, Any]]]]:
    listener = await db.connect(url, timeout=10)
    heard: list[tuple[str, dict[str, Any]]] = []
    for channel in channels:
        await listener.add_listener(channel, lambda _c, _p, ch, payload: heard.append((ch, json.loads(payload))))
    return listener, heard


async def _settle_notifications() -> None:
    await asyncio.sleep(0.3)


WAKE_UPS = ("procrastinate_any_queue_v1", "procrastinate_queue_v1#hookline", "hookline_events")


def _items(*rows: tuple[Any, ...]) -> list[_Item]:
    return [_Item(r, None) for r in rows]  # type: ignore[arg-type]


async def test_a_batch_commits_without_notifying_and_its_wake_ups_follow_from_its_ids(pool: Any, db_url: str) -> None:
    """store_events sets hookline.notify = 'after_commit' (migration 0018) so its durable commit does not
    hold Postgres's notification queue lock through the WAL flush; notify_events_stored sends the same
    wake-ups from the ids alone, on any connection (nothing is kept in the session)."""
    listener, heard = await _heard_on(db_url, WAKE_UPS)
    try:
        async with pool.acquire() as c, pool.acquire() as other:
            got = await c.fetch(Q["store_events"], *_columns(_items(*(row(f"h-{i}") for i in range(3)))))
            ids = sorted(r["id"] for r in got)
            await _settle_notifications()
            assert heard == []  # committed, and nothing sent inside the transaction
            assert await other.fetchval(Q["notify_events_stored"], ids) == 3
            await _settle_notifications()
            assert [ch for ch, _ in heard] == [
                "hookline_events",
                "procrastinate_queue_v1#hookline",
                "procrastinate_any_queue_v1",
            ]
            assert heard[0][1] == {"op": "insert", "min_id": ids[0], "max_id": ids[-1], "count": 3}
            assert heard[1][1]["type"] == heard[2][1]["type"] == "job_inserted"
            assert await other.fetchval("SELECT current_setting('hookline.notify', true)") in (None, "")

            heard.clear()  # events no worker waits for any more: the insert is told, nobody is woken
            await c.execute("UPDATE hookline.events SET status = 'processing' WHERE id = ANY ($1::bigint[])", ids)
            await _settle_notifications()
            heard.clear()  # the three status changes
            assert await c.fetchval(Q["notify_events_stored"], ids) == 1
            assert await c.fetchval(Q["notify_events_stored"], []) == 0
            await _settle_notifications()
            assert [ch for ch, _ in heard] == ["hookline_events"]

            heard.clear()  # every other writer (here: a DBA's INSERT) still notifies in its transaction
            await c.execute("INSERT INTO hookline.events (source, delivery_id, payload) VALUES ('s', 'by-hand', '{}')")
            await _settle_notifications()
            assert {ch for ch, _ in heard} == set(WAKE_UPS)
    finally:
        await listener.close()


async def test_a_batch_with_a_synchronous_request_notifies_inside_its_transaction(pool: Any, db_url: str) -> None:
    """Its caller waits for the worker: the wake-up goes with the commit."""
    listener, heard = await _heard_on(db_url, WAKE_UPS)
    try:
        async with pool.acquire() as c:
            sync_row = (*row("sync-1")[:13], True)
            await c.fetch(Q["store_events"], *_columns(_items(row("async-1"), sync_row)))
            await _settle_notifications()
            assert {ch for ch, _ in heard} == set(WAKE_UPS)
    finally:
        await listener.close()


async def test_the_batcher_wakes_workers_after_each_batch_it_stored(pool: Any, db_url: str) -> None:
    listener, heard = await _heard_on(db_url, WAKE_UPS)
    try:
        batcher = Batcher(lambda: _pool_of(pool), max_flushes=1)
        first = await asyncio.gather(*(batcher.insert(row(f"w-{i}")) for i in range(40)))
        await _settle_notifications()
        inserted = [p for ch, p in heard if ch == "hookline_events"]
        assert sum(p["count"] for p in inserted) == 40 and len(inserted) == batcher.stats["flushes"]
        assert {p["max_id"] for p in inserted} <= {event_id for event_id, _ in first}
        assert sum(ch == "procrastinate_any_queue_v1" for ch, _ in heard) == batcher.stats["flushes"]
        assert batcher.stats["notified_after"] == batcher.stats["flushes"]
        heard.clear()
        flushes = batcher.stats["flushes"]
        elsewhere = Batcher(lambda: _pool_of(pool))  # duplicates found stored: nothing written, nothing to tell
        await asyncio.gather(*(elsewhere.insert(row(f"w-{i}")) for i in range(40)))
        await _settle_notifications()
        assert heard == [] and batcher.stats["flushes"] == flushes
        assert batcher.stats["notify_failures"] == elsewhere.stats["notify_failures"] == 0
    finally:
        await listener.close()


async def test_rows_written_one_by_one_after_a_rejected_row_are_announced_too(pool: Any, db_url: str) -> None:
    """The fallback writes each row with its own statement in one transaction: the rows it kept are
    announced after the commit (a synchronous row inside it), the rejected one is not."""
    listener, heard = await _heard_on(db_url, WAKE_UPS)
    try:
        batcher = Batcher(lambda: _pool_of(pool), max_flushes=1)
        rows = [row(f"f-{i}") for i in range(5)]
        rows[2] = row("f-bad", payload={"text": "nul \u0000 byte"})
        rows[4] = (*row("f-sync")[:13], True)
        results = await asyncio.gather(*(batcher.insert(r) for r in rows), return_exceptions=True)
        assert isinstance(results[2], asyncpg.exceptions.DataError) and batcher.stats["fallbacks"] == 1
        await _settle_notifications()
        kept = sorted(r[0] for r in results if isinstance(r, tuple) and r[0] is not None)
        told = sorted(
            i for ch, p in heard if ch == "hookline_events" for i in range(p["min_id"], p["max_id"] + 1) if i in kept
        )
        assert len(kept) == 4
        assert told == kept  # the async rows after the commit, the synchronous one inside it
        assert batcher.stats["notified_after"] == 1
        assert sum(ch == "procrastinate_any_queue_v1" for ch, _ in heard) == 2
    finally:
        await listener.close()


async def test_events_stay_stored_and_answered_when_their_wake_ups_cannot_be_sent(
    pool: Any, conn: psycopg.Connection, caplog: pytest.LogCaptureFixture
) -> None:
    """The wake-ups go after the commit: if they fail, every request still has its answer, the rows
    and jobs are there (workers find them at their next poll), and the failure is logged by type only."""
    import logging

    conn.execute("ALTER FUNCTION hookline.notify_events_stored(bigint[]) RENAME TO notify_events_stored_gone")
    batcher = Batcher(lambda: _pool_of(pool), max_flushes=1)
    with caplog.at_level(logging.WARNING, logger="hookline.ingest"):
        results = await asyncio.gather(*(batcher.insert(row(f"n-{i}")) for i in range(10)))
        assert all(event_id is not None and not dup for event_id, dup in results)  # answered first
        await batcher.close()  # the flush, its wake-ups included, is over
    assert batcher.stats["notify_failures"] == batcher.stats["flushes"] >= 1
    assert batcher.stats["notified_after"] == 0
    assert one(conn, "SELECT count(*) FROM hookline.events WHERE delivery_id LIKE 'n-%%'") == 10
    assert one(conn, "SELECT count(*) FROM procrastinate_jobs WHERE status = 'todo'") == 10
    messages = [r.getMessage() for r in caplog.records]
    assert messages and all("could not wake listeners: UndefinedFunctionError" in m for m in messages)


#: store_events' parameter types, in order (psycopg cannot tell the type of an array of NULLs).
_STORE_TYPES = ["text[]"] * 5 + ["timestamptz[]", "text[]", "bytea[]"] + ["text[]"] * 4 + ["int[]", "boolean[]"]

_PLAIN_JOIN = """known AS (
        SELECT i.n, e.id
        FROM input i
        JOIN hookline.events e ON e.source = i.source AND e.delivery_id = i.delivery_id
    ),"""


def _plan_made_while_empty(cur: psycopg.Cursor[Any], function: str, name: str) -> tuple[int, int]:
    """Empty hookline.events (inside the test's transaction), call ``function`` (store_events'
    signature) a few times, as a new deployment's web process does before autoanalyze (its plan is made
    then, once per session), store 3,000 more events of the same source, then call it with 12 new
    deliveries and one stored: the sequential scans and the rows of hookline.events that last call read."""
    cur.execute("TRUNCATE hookline.events CASCADE")  # an empty table, never analyzed; rolled back after
    sql = f"SELECT * FROM {function}({', '.join(f'%s::{t}' for t in _STORE_TYPES)})"
    for i in range(8):
        cur.execute(sql, _columns(_items(*(row(f"{name}-early-{i}-{k}") for k in range(13)))))
    cur.execute(
        "INSERT INTO hookline.events (source, delivery_id, payload) "
        "SELECT 's', %s || i, '{}' FROM generate_series(1, 3000) AS i",
        (f"{name}-bulk-",),
    )
    seq0, read0 = scans_and_reads(cur, "hookline.events")
    got = cur.execute(sql, _columns(_items(*(row(f"{name}-late-{k}") for k in range(12)), row(f"{name}-bulk-7"))))
    answers = got.fetchall()
    seq1, read1 = scans_and_reads(cur, "hookline.events")
    assert sorted(inserted for _, _, inserted in answers) == [False] + [True] * 12  # the stored one found
    return seq1 - seq0, read1 - read0


def _variant(cur: psycopg.Cursor[Any], definition: str, name: str, old: str, new: str) -> str:
    """hookline.store_events with ``old`` replaced by ``new`` in its body, as function pg_temp.``name``."""
    assert old in definition
    cur.execute(definition.replace(old, new).replace("hookline.store_events(", f"pg_temp.{name}(", 1))
    return f"pg_temp.{name}"


def test_a_plan_made_while_the_table_was_empty_still_probes_the_unique_index(hookline_db: psycopg.Connection) -> None:
    """A new deployment starts with an empty events table and no statistics until autoanalyze: the web
    process's connections plan hookline.store_events then (once per session, migration 0025) and keep
    the plan while the table fills. The lookup of already-stored deliveries must stay one probe of the
    (source, delivery_id) index per row, not read every stored event. Two variants of the function show
    that the test can fail: the lookup as a plain join (it scanned the table: 5.7 ms per 13-row batch at
    20,000 rows), and the lookup without its row comparison (it probed the index on source alone)."""
    hookline_db.autocommit = False
    with hookline_db.cursor() as cur:
        definition = one(hookline_db, "SELECT pg_get_functiondef('hookline.store_events'::regproc)")
        start = definition.index("known AS (")
        lateral = definition[start : definition.rindex("),", start, definition.index("ins AS (", start)) + 2]
        row_compare = "\n              AND (e.source, e.delivery_id) >= (i.source, i.delivery_id)"
        plain = _variant(cur, definition, "store_plain", lateral, _PLAIN_JOIN)
        equalities = _variant(cur, definition, "store_equalities", row_compare, "")
        for variant in (plain, equalities):
            cur.execute("SAVEPOINT variant")
            seq, read = _plan_made_while_empty(cur, variant, "variant")
            cur.execute("ROLLBACK TO SAVEPOINT variant")
            assert seq > 0 or read > 1_000, (variant, seq, read)  # the failure this test is there to catch
        seq, read = _plan_made_while_empty(cur, "hookline.store_events", "probes")
        assert seq == 0, "the lookup of stored deliveries scanned the table"
        assert read <= 13, read  # one probe per input row, not the 3,000 rows stored since
        rows = cur.execute(
            "SELECT delivery_id FROM hookline.events WHERE delivery_id LIKE %s OR delivery_id = %s",
            ("probes-late-%", "probes-bulk-7"),
        ).fetchall()
        assert len(rows) == 13  # the 12 new ones stored, the stored one found (not stored twice)
    hookline_db.rollback()


def test_the_duplicate_lookups_probe_the_unique_index_when_planned_on_an_empty_table(
    hookline_db: psycopg.Connection,
) -> None:
    """find_event and find_events (a duplicate's answer), and store_event's and store_invalid_event's
    lookup of a duplicate: their generic plans, made while the table is empty and never analyzed, must
    probe the (source, delivery_id) index. With the two equalities alone,
    Postgres chose the index on source and filtered on delivery_id (checked: the same EXPLAIN without
    the row comparison names events_source_type_received_idx)."""
    hookline_db.autocommit = False
    with hookline_db.cursor() as cur:
        cur.execute("TRUNCATE hookline.events CASCADE")  # rolled back after
        cur.execute("SET LOCAL plan_cache_mode = force_generic_plan")
        cur.execute(f"PREPARE one_event(text, text) AS {Q['find_event']}")
        cur.execute(f"PREPARE some_events(text[], text[]) AS {Q['find_events']}")
        cur.execute(f"PREPARE store_one AS {Q['store_event']}")  # types as Postgres infers them
        cur.execute(f"PREPARE store_invalid AS {Q['store_invalid_event']}")
        values = "'s', 'd', NULL, NULL, NULL, NULL, '{}', '', '{}', 'a', NULL, NULL, 0"
        for execute in (
            "EXECUTE one_event('s', 'd')",
            "EXECUTE some_events(ARRAY['s'], ARRAY['d'])",
            f"EXECUTE store_one({values}, false)",  # EXPLAIN without ANALYZE: nothing is inserted
            f"EXECUTE store_invalid({values}, 'why')",
        ):
            plan = "\n".join(r[0] for r in cur.execute(f"EXPLAIN {execute}").fetchall())
            assert "events_source_delivery_id_key" in plan, plan
            assert "events_source_type_received_idx" not in plan and "Seq Scan on events" not in plan, plan
        cur.execute("DEALLOCATE ALL")
    hookline_db.rollback()


class _KillBeforeLookup:
    """A pool whose connections' backend is terminated (pg_terminate_backend, from another session) just
    before ``find_events``: the connection drops between a batch's commit and its duplicates' lookup."""

    def __init__(self, pool: Any, admin: psycopg.Connection) -> None:
        self.pool, self.admin = pool, admin
        self.killed = 0

    @contextlib.asynccontextmanager
    async def acquire(self) -> AsyncIterator[Any]:
        async with self.pool.acquire() as conn:
            outer = self

            class Dropping:
                async def fetch(self, query: str, *args: Any) -> Any:
                    if query == Q["find_events"]:
                        outer.admin.execute("SELECT pg_terminate_backend(%s, 5000)", (conn.get_server_pid(),))
                        outer.killed += 1
                    return await conn.fetch(query, *args)

                def __getattr__(self, name: str) -> Any:
                    return getattr(conn, name)

            yield Dropping()


async def test_rows_committed_keep_their_answer_when_the_duplicate_lookup_after_the_commit_fails(
    pool: Any, conn: psycopg.Connection, db_url: str
) -> None:
    """A batch whose statement skips a delivery another session committed meanwhile looks that one up
    after the commit (find_events). If the connection drops then, the rows the batch committed are
    stored: they get their event ids (a 503 would say "nothing was stored"); only the looked-up one
    fails (its sender's retry is a duplicate)."""
    other = psycopg.connect(db_url)  # a transaction holding the key "k" uncommitted
    try:
        other.execute("INSERT INTO hookline.events (source, delivery_id, payload) VALUES ('s', 'k', '{}')")
        killer = _KillBeforeLookup(pool, conn)
        batcher = Batcher(lambda: _pool_of(killer), max_flushes=1)
        answers = asyncio.gather(batcher.insert(row("a")), batcher.insert(row("k")), return_exceptions=True)
        for _ in range(500):  # the batch's statement waits for "k"'s row lock
            await asyncio.sleep(0.01)
            if one(conn, "SELECT count(*) FROM pg_stat_activity WHERE wait_event_type = 'Lock'"):
                break
        else:
            raise AssertionError("the batch never waited for the uncommitted key")
        other.commit()  # "k" commits under the running statement, which skips it and does not see it
        a, k = await answers
    finally:
        other.close()
    # the look-up broke, and was tried once more on another connection (the batch's answer was lost
    # with the first: Batcher._stored_after_all), broken there too
    assert killer.killed == 2 and batcher.stats["flushes"] == 1
    assert isinstance(k, BaseException)
    stored = one(conn, "SELECT id FROM hookline.events WHERE source = 's' AND delivery_id = 'a'")
    assert a == (stored, False)
    assert one(conn, "SELECT count(*) FROM procrastinate_jobs WHERE status = 'todo'") == 2
