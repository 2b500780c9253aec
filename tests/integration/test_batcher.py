"""Group commit at ingest (app/web/batcher.py) against real Postgres: batches, duplicates, a bad row."""

from __future__ import annotations

import asyncio
import json
from typing import Any

import asyncpg
import psycopg
import pytest

from app.core import db
from app.web.batcher import Batcher


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
