"""The four measurements of ``hookline bench``: ingest, pickup, throughput, lockchain.

Events for the worker rows are stored with the ingest path's own INSERT (``sql/queries/ingest.sql``),
so the ``events_enqueue`` trigger defers their jobs exactly as for a webhook. Timings come from
``hookline.events`` (``received_at``, ``started_at``, ``finished_at``) and from the client clock at
commit; both processes run on this host, so they share one clock.
"""

from __future__ import annotations

import asyncio
import json
import time
from dataclasses import dataclass
from typing import Any

from app.cli.bench.loadgen import cpu_snapshot, cpu_usage, event_body, percentile
from app.cli.bench.procs import BenchError
from app.core.querynames import IngestQuery
from app.core.sqlfiles import NamedQueries

SOURCE = "bench"
ORDERED_SOURCE = "bench-ordered"
INGEST_SQL: NamedQueries[IngestQuery] = NamedQueries("ingest", IngestQuery)
TERMINAL = ("succeeded", "dead", "skipped")

#: Trivial reads over hookline.events (the bench's only SQL besides the trigger switch).
_PROGRESS = """SELECT count(*) FILTER (WHERE status = ANY($3::text[])) AS done, count(*) AS total
FROM hookline.events WHERE source = $1 AND delivery_id LIKE $2"""
_TIMES = """SELECT id, status, dry_run, received_at, started_at, finished_at
FROM hookline.events WHERE source = $1 AND delivery_id LIKE $2 ORDER BY id"""
_COUNT = "SELECT count(*) FROM hookline.events WHERE source = $1 AND delivery_id LIKE $2"
_LISTENERS = """SELECT count(*) FROM pg_stat_activity
WHERE datname = current_database() AND query LIKE 'LISTEN %procrastinate%'"""
#: migration 0004's lock-chain wake-up, switched off to show what procrastinate alone does.
LOCK_TRIGGER_OFF = "ALTER TABLE procrastinate_jobs DISABLE TRIGGER hookline_notify_lock_released"
LOCK_TRIGGER_ON = "ALTER TABLE procrastinate_jobs ENABLE TRIGGER hookline_notify_lock_released"


def event_row(source: str, delivery_id: str, i: int, key: str | None = None) -> tuple[Any, ...]:
    """Arguments of the ``store_event`` query, as the ingest route passes them (request id last)."""
    body = event_body(i, delivery_id.rsplit("-", 1)[0], key)
    return (
        source,
        delivery_id,
        "bench.created",
        None,
        key,
        None,
        {"content-type": "application/json"},
        body,
        json.loads(body),
        "application/json",
        "127.0.0.1",
        f"bench-{delivery_id}",
        0,  # job priority
        False,  # respond_sync: no synchronous reply waits
    )


def ms_stats(values_s: list[float]) -> dict[str, float | None]:
    v = sorted(values_s)
    out: dict[str, float | None] = {}
    for name, p in (("p50", 50.0), ("p90", 90.0), ("p99", 99.0), ("max", 100.0)):
        x = percentile(v, p)
        out[name] = None if x is None else round(x * 1000.0, 3)
    return out


@dataclass
class Events:
    """An asyncpg connection to the bench database, with the ingest INSERT and the reads above."""

    conn: Any

    @classmethod
    async def open(cls, url: str) -> Events:
        from app.core.db import connect

        return cls(await connect(url, timeout=10.0))

    async def close(self) -> None:
        await self.conn.close()

    async def insert(self, source: str, delivery_id: str, i: int, key: str | None = None) -> int:
        return int(await self.conn.fetchval(INGEST_SQL["store_event"], *event_row(source, delivery_id, i, key)))

    async def insert_many(self, rows: list[tuple[Any, ...]]) -> float:
        """All rows in one transaction; returns the client time at commit."""
        async with self.conn.transaction():
            await self.conn.executemany(INGEST_SQL["store_event"], rows)
        return time.time()

    async def count(self, source: str, prefix: str) -> int:
        return int(await self.conn.fetchval(_COUNT, source, prefix + "-%"))

    async def wait_done(self, source: str, prefix: str, expected: int, timeout: float) -> None:
        """Until ``expected`` events of PREFIX are terminal. Polled every 0.2 s: each poll counts every
        row of the prefix, and polling faster took a tenth of a core from the workers being measured
        (their times come from the rows, not from this loop)."""
        deadline = time.monotonic() + timeout
        done = 0
        while time.monotonic() < deadline:
            row = await self.conn.fetchrow(_PROGRESS, source, prefix + "-%", list(TERMINAL))
            done = int(row["done"])
            if done >= expected:
                return
            await asyncio.sleep(0.2)
        raise BenchError(
            f"{source}/{prefix}: only {done} of {expected} events finished within {timeout:.0f}s "
            "(is the worker running?)"
        )

    async def times(self, source: str, prefix: str) -> list[Any]:
        return list(await self.conn.fetch(_TIMES, source, prefix + "-%"))

    async def listeners(self) -> int:
        return int(await self.conn.fetchval(_LISTENERS))

    async def wait_worker(self, probe: str, timeout: float = 60.0) -> None:
        """A worker is up: it LISTENs and has processed a probe event."""
        await self.insert(SOURCE, f"{probe}-0", 0)
        await self.wait_done(SOURCE, probe, 1, timeout)
        for _ in range(200):
            if await self.listeners() >= 1:
                break
            await asyncio.sleep(0.05)
        await asyncio.sleep(0.2)

    async def set_lock_trigger(self, enabled: bool) -> None:
        await self.conn.execute(LOCK_TRIGGER_ON if enabled else LOCK_TRIGGER_OFF)


async def pickup(db: Events, *, rate: float, seconds: float) -> dict[str, Any]:
    """Events committed one at a time at ``rate``/s to an idle worker: commit → ``started_at``."""
    n = max(1, int(rate * seconds))
    commits: dict[int, float] = {}
    insert_s: list[float] = []
    t0 = time.perf_counter()
    for i in range(n):
        delay = t0 + i / rate - time.perf_counter()
        if delay > 0:
            await asyncio.sleep(delay)
        t = time.perf_counter()
        event_id = await db.insert(SOURCE, f"pk-{i}", i)
        commits[event_id] = time.time()
        insert_s.append(time.perf_counter() - t)
    await db.wait_done(SOURCE, "pk", n, timeout=30 + n / 20)
    rows = await db.times(SOURCE, "pk")
    from_commit = [r["started_at"].timestamp() - commits[r["id"]] for r in rows]
    from_received = [(r["started_at"] - r["received_at"]).total_seconds() for r in rows]
    to_finish = [(r["finished_at"] - r["started_at"]).total_seconds() for r in rows]
    return {
        "events": n,
        "rate_per_s": rate,
        "commit_to_start_ms": ms_stats(from_commit),
        "received_to_start_ms": ms_stats(from_received),
        "start_to_finish_ms": ms_stats(to_finish),
        "insert_commit_ms": ms_stats(insert_s),
        "succeeded": sum(r["status"] == "succeeded" for r in rows),
        "dry_run": sum(bool(r["dry_run"]) for r in rows),
    }


async def throughput(db: Events, *, events: int, worker_pid: int | None = None) -> dict[str, Any]:
    """``events`` committed in one transaction, then drained by the running worker."""
    rows = [event_row(SOURCE, f"tp-{i}", i) for i in range(events)]
    t_insert = time.perf_counter()
    commit = await db.insert_many(rows)
    insert_s = time.perf_counter() - t_insert
    cpu_from, t_cpu = cpu_snapshot(worker_pid), time.perf_counter()
    await db.wait_done(SOURCE, "tp", events, timeout=60 + events / 20)
    cpu = cpu_usage(cpu_from, cpu_snapshot(worker_pid), time.perf_counter() - t_cpu)
    got = await db.times(SOURCE, "tp")
    first = min(r["started_at"] for r in got).timestamp()
    last = max(r["finished_at"] for r in got).timestamp()
    span = last - first
    return {
        "events": events,
        "events_per_s": events / span if span > 0 else None,
        "span_s": round(span, 3),
        "commit_to_last_finished_s": round(last - commit, 3),
        "bulk_insert_s": round(insert_s, 3),
        "bulk_insert_per_s": events / insert_s if insert_s > 0 else None,
        "cpu": {"worker_pct_of_core": cpu["server_pct_of_core"], "machine_busy_pct": cpu["machine_busy_pct"]},
        "succeeded": sum(r["status"] == "succeeded" for r in got),
        "dry_run": sum(bool(r["dry_run"]) for r in got),
    }


async def lock_chain(db: Events, *, links: int, prefix: str, poll_interval: float) -> dict[str, Any]:
    """``links`` events with one ordering key (one procrastinate lock), committed together."""
    key = f"chain-{prefix}"
    commit = await db.insert_many([event_row(ORDERED_SOURCE, f"{prefix}-{i}", i, key) for i in range(links)])
    await db.wait_done(ORDERED_SOURCE, prefix, links, timeout=30 + links * (poll_interval + 2))
    got = await db.times(ORDERED_SOURCE, prefix)
    starts = [r["started_at"].timestamp() for r in got]
    ends = [r["finished_at"].timestamp() for r in got]
    gaps = [starts[i + 1] - ends[i] for i in range(len(got) - 1)]
    return {
        "links": links,
        "total_s": round(max(ends) - commit, 3),
        "first_start_to_last_finish_s": round(max(ends) - min(starts), 3),
        "gap_ms": ms_stats(gaps),
        "mean_gap_ms": round(1000 * sum(gaps) / len(gaps), 3) if gaps else None,
        "in_order": starts == sorted(starts),
        "overlaps": sum(g < 0 for g in gaps),
        "succeeded": sum(r["status"] == "succeeded" for r in got),
    }
