"""Scenarios of ``hookline bench`` beyond the four original rows (issue 9).

- ``floors``: the HTTP floor (bare Starlette, same uvicorn options), hookline ingest and the duplicate
  re-send, all with the same load generator (``wrk`` when installed, else the Python one), and the DB
  floor (``store_events`` through the same triggers from asyncpg, batched, no HTTP); ingest as a
  ratio of each floor.
- ``ack``: ack latency against offered rate (paced, open-loop), with a worker running: pickup
  (received_at → started_at) at each rate.
- ``duplicates``: 10,000 concurrent deliveries of 100 distinct events: rows, jobs, model calls, time.
- ``worker``: a fake Messages API at 0 ms and 1 s; concurrency settings and processes; worker CPU per event.
- ``scale``: dry-run worker processes added one at a time.
"""

from __future__ import annotations

import asyncio
import json
import time
from typing import TYPE_CHECKING, Any

from app.cli.bench import phases, wrk
from app.cli.bench.loadgen import build_requests, cpu_snapshot, event_body
from app.cli.bench.procs import BenchError, free_port, wait_http

if TYPE_CHECKING:
    from app.cli.bench.runner import Bench

SCENARIOS = ("floors", "ack", "duplicates", "worker", "scale")
_WORKERS = "SELECT count(*) FROM procrastinate_workers WHERE id > $1"
_LAST_WORKER = "SELECT coalesce(max(id), 0) FROM procrastinate_workers"
_CALLS = (
    "SELECT count(*) FROM hookline.llm_calls c JOIN hookline.events e ON e.id = c.event_id WHERE e.delivery_id LIKE $1"
)
_JOBS = """SELECT count(*) FROM procrastinate_jobs j JOIN hookline.events e ON e.id = (j.args->>'event_id')::bigint
WHERE e.delivery_id LIKE $1"""


def proc_cpu(pids: list[int]) -> float:
    """CPU seconds (user + system) of these processes so far."""
    total = 0.0
    for pid in pids:
        snap = cpu_snapshot(pid)
        total += snap[0] if snap else 0.0
    return total


# ------------------------------------------------------------------------------------------ floors
async def db_floor(url: str, *, seconds: float, batch: int = 200, connections: int = 4) -> dict[str, Any]:
    """``store_events`` (the group-commit statement, same triggers) in batches from asyncpg, no HTTP, each
    followed by ``notify_events_stored`` as in ingest."""
    from app.core.db import create_pool

    body = event_body(0, "dbf")
    payload = json.loads(body)
    headers_json = json.dumps({"content-type": "application/json"})  # jsonb columns travel as JSON text
    payload_json = json.dumps(payload)
    sql, notify = phases.INGEST_SQL["store_events"], phases.INGEST_SQL["notify_events_stored"]
    pool = await create_pool(url, min_size=connections, max_size=connections, timeout=10)
    counter = 0
    end = time.perf_counter() + seconds

    async def loop(c: int) -> int:
        nonlocal counter
        done = 0
        async with pool.acquire() as conn:
            while time.perf_counter() < end:
                ids = [f"dbf-{c}-{counter + k}" for k in range(batch)]
                counter += batch
                n = len(ids)
                cols = [
                    [phases.SOURCE] * n,
                    ids,
                    ["bench.created"] * n,
                    [None] * n,
                    [None] * n,
                    [None] * n,
                    [headers_json] * n,
                    [body] * n,
                    [payload_json] * n,
                    ["application/json"] * n,
                    ["127.0.0.1"] * n,
                    [None] * n,  # request id
                    [0] * n,  # job priority
                    [False] * n,  # respond_sync
                ]
                async with conn.transaction():
                    rows = await conn.fetch(sql, *cols)
                # as ingest does: the batch's wake-ups right after its commit
                await conn.fetchval(notify, [r["id"] for r in rows if r["inserted"]])
                done += n
        return done

    t0 = time.perf_counter()
    try:
        lsn0 = await pool.fetchval("SELECT pg_current_wal_lsn()::text")
        counts = await asyncio.gather(*(loop(c) for c in range(connections)))
        wal = await pool.fetchval("SELECT pg_wal_lsn_diff(pg_current_wal_lsn(), $1::text::pg_lsn)", lsn0)
    finally:
        await pool.close()
    wall = time.perf_counter() - t0
    n = sum(counts)
    return {
        "events": n,
        "events_per_s": n / wall,
        "batch": batch,
        "connections": connections,
        "wal_bytes_per_event": round(float(wal) / n) if n else None,
        "body_bytes": len(body),
    }


def _load(
    bench: Bench,
    name: str,
    port: int,
    *,
    prefix: str,
    count: int,
    cycle: bool,
    pid: int,
    only: list[int] | None = None,
    children: bool = False,
) -> dict[str, Any]:
    """``count`` requests PREFIX-0 …, or exactly the PREFIX-i of ``only`` (with wrk: python needs a range)."""
    p = bench.plan
    if only is not None and not wrk.available():
        present, count = set(only), 0  # the Python load generator sends PREFIX-0 … PREFIX-(count-1)
        while count in present:
            count += 1
    if wrk.available():
        reqs = build_requests(
            port=port,
            path=f"/webhooks/{phases.SOURCE}",
            count=(max(only) + 1) if only else count,
            prefix=prefix,
            secret=bench.secret,
        )
        if only is not None:
            reqs = [reqs[i] for i in only]
        return wrk.run(
            port=port,
            path=f"/webhooks/{phases.SOURCE}",
            requests=reqs,
            concurrency=p.concurrency,
            duration=p.duration,
            workdir=bench.workdir,
            name=name,
            server_pid=pid,
            server_children=children,
        )
    r = bench.loadgen(
        name, port, count=count, prefix=prefix, duration=p.duration, warmup=p.warmup, cycle=cycle, server_pid=pid
    )
    return r | {"generator": "python"}


def floors(bench: Bench) -> dict[str, Any]:
    p = bench.plan
    bench.out(f"floors: load generator {'wrk' if wrk.available() else 'python (wrk not installed)'} …")
    one = _servers(bench, processes=1, prefix="fi")
    two = _servers(bench, processes=2, prefix="fj")
    bench.out("floors: DB floor (store_events from asyncpg, batched) …")
    dbf = asyncio.run(db_floor(bench.db.url, seconds=max(1.0, p.duration / 2)))
    rate = one["ingest"]["ok_rps"]
    return one | {
        "generator": one["http_floor"].get("generator"),
        "db_floor": dbf,
        "ingest_over_db_floor": rate / dbf["events_per_s"] if dbf["events_per_s"] else None,
        "duplicates_over_ingest": one["duplicates"]["ok_rps"] / rate if rate else None,
        "concurrency": p.concurrency,
        "two_processes": two,
    }


def _servers(bench: Bench, *, processes: int, prefix: str) -> dict[str, Any]:
    """The HTTP floor (the bare route), then hookline's ingest of new deliveries PREFIX-i and the
    duplicate re-send of those stored, each server with ``processes`` processes on its port
    (``hookline web --processes``; the bare route under the same uvicorn supervisor)."""
    p = bench.plan
    bare_port, web_port = free_port(), free_port()
    many = ["--processes", str(processes)] if processes > 1 else []
    if many:
        bench.out(f"floors: again with {processes} web processes …")
    bare = bench.children.start(
        f"bare{processes}", ["-m", "app.cli.bench", "bare", "--port", str(bare_port), *many], bench.env()
    )
    web = bench.children.start(
        f"web{processes}",
        ["-m", "app.cli", "web", "--host", "127.0.0.1", "--port", str(web_port), *many],
        bench.env(),
    )
    wait_http(bench.children, f"bare{processes}", f"http://127.0.0.1:{bare_port}/webhooks/{phases.SOURCE}")
    http_floor = _load(
        bench,
        f"floor-bare{processes}",
        bare_port,
        prefix="fb",
        count=2000,
        cycle=True,
        pid=bare.pid,
        children=bool(many),
    )
    bench.children.stop(f"bare{processes}")
    wait_http(bench.children, f"web{processes}", f"http://127.0.0.1:{web_port}/readyz")
    count = int((p.duration + p.warmup) * 6000) + 1000
    ingest = _load(
        bench,
        f"floor-ingest{processes}",
        web_port,
        prefix=prefix,
        count=count,
        cycle=False,
        pid=web.pid,
        children=bool(many),
    )
    stored = asyncio.run(_settled_count(bench.db.url, f"{prefix}-%"))  # requests in flight still commit
    stored_ids = asyncio.run(_stored(bench.db.url, prefix))[:2000]  # re-send what is stored, nothing else
    dups = _load(
        bench,
        f"floor-dup{processes}",
        web_port,
        prefix=prefix,
        count=0,
        cycle=True,
        pid=web.pid,
        only=stored_ids,
        children=bool(many),
    )
    stored_after = asyncio.run(_settled_count(bench.db.url, f"{prefix}-%"))
    bench.children.stop(f"web{processes}")
    return {
        "processes": processes,
        "http_floor": http_floor,
        "ingest": ingest | {"stored": stored},
        "duplicates": dups | {"new_rows": stored_after - stored},
        "ingest_over_http_floor": ingest["ok_rps"] / http_floor["ok_rps"] if http_floor["ok_rps"] else None,
    }


async def _stored(url: str, prefix: str) -> list[int]:
    """The i of every stored PREFIX-i (requests cut off when the load generator stops leave gaps)."""
    db = await phases.Events.open(url)
    try:
        got = await db.conn.fetch("SELECT delivery_id FROM hookline.events WHERE delivery_id LIKE $1", prefix + "-%")
    finally:
        await db.close()
    return sorted(int(r["delivery_id"].rsplit("-", 1)[1]) for r in got)


async def _settled_count(url: str, like: str, *, every: float = 0.2, limit: float = 3.0) -> int:
    """The rows of LIKE once the count stopped moving: the same in two reads ``every`` seconds apart
    (the requests in flight when the load generator stopped commit meanwhile), at most ``limit`` s.
    It replaced a fixed one-second wait."""
    db = await phases.Events.open(url)
    try:
        deadline = time.monotonic() + limit
        last = -1
        while True:
            await asyncio.sleep(every)
            n = int(await db.conn.fetchval("SELECT count(*) FROM hookline.events WHERE delivery_id LIKE $1", like))
            if n == last or time.monotonic() >= deadline:
                return n
            last = n
    finally:
        await db.close()


# --------------------------------------------------------------------------------------- processes
def start_workers(bench: Bench, names: list[str], concurrency: int, **env: str) -> list[int]:
    pids = []
    for name in names:
        proc = bench.children.start(
            name,
            ["-m", "worker"],
            bench.env(HOOKLINE_WORKER_CONCURRENCY=str(concurrency), HOOKLINE_WORKER_POLL_INTERVAL="1", **env),
        )
        pids.append(proc.pid)
    return pids


async def last_worker(url: str) -> int:
    """The newest registered worker's id: ``wait_workers`` counts those registered after it."""
    db = await phases.Events.open(url)
    try:
        return int(await db.conn.fetchval(_LAST_WORKER))
    finally:
        await db.close()


async def wait_workers(db: phases.Events, n: int, after: int = 0, timeout: float = 120.0) -> None:
    """``n`` workers registered after worker id ``after`` (procrastinate_workers)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if int(await db.conn.fetchval(_WORKERS, after)) >= n:
            await asyncio.sleep(0.3)
            return
        await asyncio.sleep(0.1)
    raise BenchError(f"{n} worker(s) did not register within {timeout:.0f}s")


#: The Postgres backends serving the workers (their pools name themselves): hookline's own statements
#: and procrastinate's fetch/finish.
_WORKER_BACKENDS = """SELECT pid FROM pg_stat_activity
WHERE datname = current_database() AND application_name IN ('hookline-worker', 'hookline-worker-queue')"""


async def backend_cpu(db: phases.Events) -> dict[int, float]:
    """CPU seconds so far of each Postgres backend serving a worker; empty when Postgres runs on
    another machine (its processes are not ours to read)."""
    out: dict[int, float] = {}
    for r in await db.conn.fetch(_WORKER_BACKENDS):
        snap = cpu_snapshot(int(r["pid"]))
        if snap is not None:
            out[int(r["pid"])] = snap[0]
    return out


async def feed(db: phases.Events, rows: list[tuple[Any, ...]], rate: float, *, tick: float = 0.02) -> None:
    """Insert ``rows`` at ``rate`` per second, a transaction every ``tick`` seconds (an open loop: a
    late insert does not lower the rate)."""
    per = max(1, round(rate * tick))
    t0 = time.monotonic()
    for i in range(0, len(rows), per):
        await db.insert_many(rows[i : i + per])
        delay = t0 + (i + per) / rate - time.monotonic()
        if delay > 0:
            await asyncio.sleep(delay)


def sustained_rate(finished: list[float], *, low: float = 0.2, high: float = 0.9) -> float | None:
    """Events per second between the finishes of the ``low`` and ``high`` fractions of the events: the
    rate once the workers run, without the start (first claims, first connections opened) and the
    tail (the last events, when fewer than the concurrency remain)."""
    xs = sorted(finished)
    a, b = int(low * len(xs)), min(len(xs) - 1, int(high * len(xs)))
    if b <= a or xs[b] <= xs[a]:
        return None
    return (b - a) / (xs[b] - xs[a])


async def drain(
    db: phases.Events, *, prefix: str, events: int, pids: list[int], rate: float | None = None
) -> dict[str, Any]:
    """Insert ``events`` (all at once, or fed at ``rate`` per second) and time the running workers
    processing them; CPU per event, of the worker processes and of the Postgres backends serving them
    (when Postgres is local)."""
    rows = [phases.event_row(phases.SOURCE, f"{prefix}-{i}", i) for i in range(events)]
    cpu0 = proc_cpu(pids)
    pg0 = await backend_cpu(db)
    if rate is None:
        await db.insert_many(rows)
    else:
        await feed(db, rows, rate)
    await db.wait_done(phases.SOURCE, prefix, events, timeout=120 + events / 10)
    cpu = proc_cpu(pids) - cpu0
    pg1 = await backend_cpu(db)
    pg = sum(t - pg0.get(pid, 0.0) for pid, t in pg1.items()) if pg1 else None
    got = await db.times(phases.SOURCE, prefix)
    span = max(r["finished_at"] for r in got).timestamp() - min(r["started_at"] for r in got).timestamp()
    return {
        "events": events,
        "events_per_s": events / span if span > 0 else None,
        "sustained_events_per_s": sustained_rate([r["finished_at"].timestamp() for r in got]),
        "offered_events_per_s": rate,
        "span_s": round(span, 3),
        "worker_cpu_ms_per_event": round(1000 * cpu / events, 3),
        "postgres_cpu_ms_per_event": round(1000 * pg / events, 3) if pg is not None else None,
        "succeeded": sum(r["status"] == "succeeded" for r in got),
    }
