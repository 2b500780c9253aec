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
