"""The ``ack``, ``duplicates``, ``worker`` and ``scale`` scenarios (see ``scenarios``)."""

from __future__ import annotations

import asyncio
import json
import time
from datetime import timedelta
from typing import TYPE_CHECKING, Any

from app.cli.bench import phases
from app.cli.bench.procs import free_port, wait_http
from app.cli.bench.scenarios import _CALLS, _JOBS, drain, last_worker, start_workers, wait_workers

if TYPE_CHECKING:
    from app.cli.bench.runner import Bench

#: seconds of paced load at the start of each rate that neither ack latency nor pickup counts
PACED_WARMUP = 0.5


def _paced(bench: Bench, port: int, *, prefix: str, rate: float, seconds: float, pid: int) -> dict[str, Any]:
    argv = [
        "-m",
        "app.cli.bench",
        "loadgen",
        "--port",
        str(port),
        "--count",
        str(int(rate * (seconds + 0.5)) + 10),
        "--prefix",
        prefix,
        "--concurrency",
        str(max(8, min(256, int(rate / 20)))),
        "--duration",
        str(seconds),
        "--warmup",
        str(PACED_WARMUP),
        "--rate",
        str(rate),
        "--server-pid",
        str(pid),
    ]
    out = bench.children.run(f"loadgen-{prefix}", argv, bench.env(), timeout=seconds + 120)
    result: dict[str, Any] = json.loads(out.strip().splitlines()[-1])
    return result


async def _step(
    url: str, workers: int, before: int, prefix: str, events: int, pids: list[int], rate: float | None = None
) -> dict[str, Any]:
    """Wait for ``workers`` new workers, then time them processing ``events`` events (inserted at once,
    or fed at ``rate`` per second)."""
    db = await phases.Events.open(url)
    try:
        await wait_workers(db, workers, before)
        return await drain(db, prefix=prefix, events=events, pids=pids, rate=rate)
    finally:
        await db.close()


def ack(bench: Bench) -> dict[str, Any]:
    """Paced load at rising rates: ack latency and pickup per offered rate with one worker running, then
    ack latency of the web process alone (the worker stopped: what the sender waits for, with nothing
    else on the cores)."""
    p = bench.plan
    port = free_port()
    web = bench.children.start("web", ["-m", "app.cli", "web", "--host", "127.0.0.1", "--port", str(port)], bench.env())
    before = asyncio.run(last_worker(bench.db.url))
    start_workers(bench, ["worker-ack"], 10)
    wait_http(bench.children, "web", f"http://127.0.0.1:{port}/readyz")
    out: list[dict[str, Any]] = []

    async def pickups(prefix: str) -> dict[str, Any]:
        db = await phases.Events.open(bench.db.url)
        try:
            await wait_workers(db, 1, before)
            if prefix == "":
                return {}
            n = await db.count(phases.SOURCE, prefix)
            await db.wait_done(phases.SOURCE, prefix, n, timeout=120)
            rows = await db.times(phases.SOURCE, prefix)
            # as for the ack latency, the load generator's warm-up requests are not counted
            warm_end = min(r["received_at"] for r in rows) + timedelta(seconds=PACED_WARMUP)
            return phases.ms_stats(
                [(r["started_at"] - r["received_at"]).total_seconds() for r in rows if r["received_at"] >= warm_end]
            )
        finally:
            await db.close()

    asyncio.run(pickups(""))
    for rate in p.ack_rates:
        prefix = f"ack{int(rate)}"
        bench.out(f"ack: {rate:g} req/s for {p.ack_seconds:g} s …")
        r = _paced(bench, port, prefix=prefix, rate=rate, seconds=p.ack_seconds, pid=web.pid)
        out.append(
            {
                "offered_rate": rate,
                "achieved_ok_rps": r["ok_rps"],
                "latency_ms": r["latency_ms"],
                "errors": r["errors"],
                "server_cpu_pct_of_core": (r.get("cpu") or {}).get("server_pct_of_core"),
                "pickup_ms": asyncio.run(pickups(prefix)),
            }
        )
    bench.children.stop("worker-ack")
    web_only: list[dict[str, Any]] = []
    for rate in p.ack_rates:
        bench.out(f"ack: {rate:g} req/s for {p.ack_seconds:g} s, web only …")
        r = _paced(bench, port, prefix=f"ackweb{int(rate)}", rate=rate, seconds=p.ack_seconds, pid=web.pid)
        web_only.append(
            {
                "offered_rate": rate,
                "achieved_ok_rps": r["ok_rps"],
                "latency_ms": r["latency_ms"],
                "errors": r["errors"],
                "server_cpu_pct_of_core": (r.get("cpu") or {}).get("server_pct_of_core"),
            }
        )
    bench.children.stop("web")
    return {"rates": out, "web_only": web_only, "seconds_per_rate": p.ack_seconds, "worker_concurrency": 10}


def duplicates(bench: Bench) -> dict[str, Any]:
    """10,000 concurrent deliveries of 100 distinct events (a retry storm) with a dry-run worker."""
    p = bench.plan
    port = free_port()
    web = bench.children.start("web", ["-m", "app.cli", "web", "--host", "127.0.0.1", "--port", str(port)], bench.env())
    start_workers(bench, ["worker-dup"], 10)
    wait_http(bench.children, "web", f"http://127.0.0.1:{port}/readyz")
    argv = ["-m", "app.cli.bench", "loadgen", "--port", str(port), "--count", str(p.dup_distinct)]
    argv += ["--prefix", "storm", "--concurrency", str(p.dup_concurrency), "--duration", "300", "--cycle"]
    argv += ["--total", str(p.dup_deliveries), "--server-pid", str(web.pid)]
    bench.out(
        f"duplicates: {p.dup_deliveries} deliveries of {p.dup_distinct} events, {p.dup_concurrency} connections …"
    )
    t0 = time.perf_counter()
    r = json.loads(bench.children.run("loadgen-storm", argv, bench.env(), timeout=400).strip().splitlines()[-1])
    wall = time.perf_counter() - t0

    async def check() -> dict[str, Any]:
        db = await phases.Events.open(bench.db.url)
        try:
            await db.wait_done(phases.SOURCE, "storm", p.dup_distinct, timeout=120)
            await asyncio.sleep(0.5)
            return {
                "rows": await db.count(phases.SOURCE, "storm"),
                "jobs": int(await db.conn.fetchval(_JOBS, "storm-%")),
                "model_calls": int(await db.conn.fetchval(_CALLS, "storm-%")),
            }
        finally:
            await db.close()

    counts = asyncio.run(check())
    bench.children.stop("worker-dup")
    bench.children.stop("web")
    return counts | {
        "deliveries": r["sent_total"],
        "distinct": p.dup_distinct,
        "concurrency": p.dup_concurrency,
        "statuses": r["statuses"],
        "outcomes": r["outcomes_total"],
        "seconds": round(r.get("elapsed_s") or wall, 3),
        "rps": r["sent_total"] / r["elapsed_s"] if r.get("elapsed_s") else None,
        "latency_ms": r["latency_ms"],
        "exact": counts == {"rows": p.dup_distinct, "jobs": p.dup_distinct, "model_calls": p.dup_distinct},
    }


#: How much faster than concurrency/latency the 1 s model runs are fed.
SLOW_OVERLOAD = 1.25


def worker(bench: Bench) -> dict[str, Any]:
    """The fake Messages API at 0 ms and 1 s: events/s and worker CPU per event. With the 1 s model the
    figure is the sustained rate (:func:`sustained_rate`) under a load above what the concurrency can
    take, as a fraction of concurrency/latency."""
    p = bench.plan
    runs: list[dict[str, Any]] = []
    for delay, settings in ((0.0, p.worker_fast), (1.0, p.worker_slow)):
        port = free_port()
        bench.children.start(
            "fakemodel", ["-m", "app.cli.bench", "fakemodel", "--port", str(port), "--delay", str(delay)], bench.env()
        )
        env = {"ANTHROPIC_API_KEY": "sk-bench", "ANTHROPIC_BASE_URL": f"http://127.0.0.1:{port}"}
        for procs, concurrency in settings:
            names = [f"worker-m{i}" for i in range(procs)]
            bench.out(f"worker: model {delay:g} s, {procs} process(es) × concurrency {concurrency} …")
            before = asyncio.run(last_worker(bench.db.url))
            pids = start_workers(bench, names, concurrency, **env)
            ideal = procs * concurrency / delay if delay else None
            # 1 s model: fed faster than the ideal rate for slow_seconds, so a backlog always waits and
            # the jobs start (and end) spread out, as in steady traffic; 0 ms: all at once
            events = int(p.slow_seconds * ideal) if ideal else p.worker_events
            offered = SLOW_OVERLOAD * ideal if ideal else None
            prefix = f"wk{int(delay * 1000)}p{procs}c{concurrency}"

            r = asyncio.run(_step(bench.db.url, procs, before, prefix, events, pids, offered))
            sustained = r["sustained_events_per_s"]
            runs.append(
                r
                | {
                    "model_latency_s": delay,
                    "processes": procs,
                    "concurrency": concurrency,
                    "ideal_events_per_s": ideal,
                    "of_ideal": (sustained / ideal) if ideal and sustained else None,
                    "whole_run_of_ideal": (r["events_per_s"] / ideal) if ideal and r["events_per_s"] else None,
                }
            )
            for name in names:
                bench.children.stop(name)
        bench.children.stop("fakemodel")
    return {"runs": runs}


def scale(bench: Bench) -> dict[str, Any]:
    """Dry-run worker processes added one at a time (concurrency 10 each)."""
    p = bench.plan
    steps: list[dict[str, Any]] = []
    pids: list[int] = []
    before = asyncio.run(last_worker(bench.db.url))
    for n in range(1, p.scale_max_processes + 1):
        pids += start_workers(bench, [f"worker-s{n}"], 10)
        bench.out(f"scale: {n} worker process(es) …")

        steps.append(
            asyncio.run(_step(bench.db.url, n, before, f"sc{n}", p.scale_events, list(pids))) | {"processes": n}
        )
    for n in range(1, p.scale_max_processes + 1):
        bench.children.stop(f"worker-s{n}")
    return {"steps": steps, "worker_concurrency": 10, "mode": "dry-run"}
