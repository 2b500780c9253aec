"""The bench's output: machine facts, the JSON document and the printed table."""

from __future__ import annotations

import hashlib
import hmac
import json
import os
import platform
import sys
import time
from datetime import datetime
from importlib import metadata
from typing import TYPE_CHECKING, Any

from app.cli.bench.fmt import fmt as _f
from app.cli.bench.fmt import lat as _lat
from app.cli.bench.sync_reply import report_rows as sync_rows

if TYPE_CHECKING:
    from app.cli.bench.plan import Plan

#: Published figures to compare with (shared/reference/procrastinate.md §3, a 2-vCPU box where the
#: load generator, workers and Postgres share the cores).
REFERENCE = {
    "ingest": "§3.4: asyncpg INSERT + defer trigger + NOTIFY, no HTTP: 1,100/s on 1 connection, "
    "1,610–1,967/s on 8 connections",
    "pickup": "§3.3: procrastinate alone, commit → task start, c=10 at 100/s: p50 2.91, p90 3.77, p99 7.52 ms",
    "throughput": "§3.2: procrastinate alone, async no-op, 1 process c=10: 344–408 jobs/s; "
    "the box saturates at ~350–470",
    "lockchain": "§3.5: procrastinate alone (c>1): each link waits for the poll (1 s poll → links 1.01 s apart)",
}


def busy_before(seconds: float = 0.5) -> float | None:
    """Percent of the machine's CPU busy over ``seconds`` before the bench starts (other load)."""
    from app.cli.bench.loadgen import cpu_snapshot, cpu_usage

    a = cpu_snapshot(None)
    time.sleep(seconds)
    return cpu_usage(a, cpu_snapshot(None), seconds)["machine_busy_pct"]


#: The single-core workload the yardstick times: HMAC-SHA256 and a JSON parse of a webhook-sized body,
#: what ingest does for each request before it touches the database.
_YARD_BODY = json.dumps(
    {
        "id": "evt_yardstick",
        "type": "bench.yardstick",
        "data": {"amount": 1234, "currency": "usd", "n": list(range(40))},
    }
).encode()
#: Spread of the yardstick within one run above which the table warns that the machine's speed moved.
YARDSTICK_WARN_PCT = 15.0


def yardstick(rounds: int = 3, n: int = 3000) -> float:
    """This machine's speed right now, in operations per second (best of ``rounds``; ~0.1 s).

    Shared and virtual machines change speed from minute to minute (other tenants, clock scaling) and
    often report no steal time. The bench times this fixed workload between its rows, with its own
    processes stopped: a run whose yardstick moved compares rows measured on different machines."""
    best = 0.0
    for _ in range(rounds):
        t = time.perf_counter()
        for _ in range(n):
            hmac.new(b"yardstick-key-32-bytes-long!!!!!", _YARD_BODY, hashlib.sha256).hexdigest()
            json.loads(_YARD_BODY)
        best = max(best, n / (time.perf_counter() - t))
    return best


def yardstick_summary(samples: list[dict[str, Any]]) -> dict[str, Any]:
    """The yardstick samples of a run (``{"after": row, "ops_per_s": x}``) with their spread in percent."""
    values = [x["ops_per_s"] for x in samples]
    spread = 100 * (max(values) - min(values)) / max(values) if values else None
    return {"unit": "ops/s", "samples": samples, "spread_pct": None if spread is None else round(spread, 1)}


def machine_facts() -> dict[str, Any]:
    facts: dict[str, Any] = {
        "busy_before_start_pct": busy_before(),
        "loadavg": list(os.getloadavg()) if hasattr(os, "getloadavg") else None,
        "cpu_count": os.cpu_count(),
        "cpus_usable": len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count(),
        "cpu_model": _cpuinfo("model name"),
        "memory_gb": _meminfo_gb(),
        "python": sys.version.split()[0],
        "implementation": platform.python_implementation(),
        "platform": platform.platform(),
    }
    for dist in ("hookline", "procrastinate", "uvicorn", "starlette", "asyncpg", "psycopg", "uvloop", "httptools"):
        try:
            facts[f"{dist}_version"] = metadata.version(dist)
        except metadata.PackageNotFoundError:
            facts[f"{dist}_version"] = None
    return facts


def _cpuinfo(key: str) -> str | None:
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith(key):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or None


def _meminfo_gb() -> float | None:
    try:
        with open("/proc/meminfo") as f:
            for line in f:
                if line.startswith("MemTotal:"):
                    return round(int(line.split()[1]) / 1024 / 1024, 1)
    except OSError:
        pass
    return None


def _cpu(load: dict[str, Any]) -> str:
    c = load.get("cpu") or {}
    return (
        f"CPU: server {_f(c.get('server_pct_of_core'), 0)}% of a core, load generator "
        f"{_f(c.get('loadgen_pct_of_core'), 0)}%, machine {_f(c.get('machine_busy_pct'), 0)}% busy"
    )


def rows(results: dict[str, Any], plan: Plan) -> list[dict[str, str]]:
    out: list[dict[str, str]] = []

    def add(metric: str, value: str, unit: str, notes: str = "") -> None:
        out.append({"metric": metric, "value": value, "unit": unit, "notes": notes})

    for key in ("ingest", "pickup", "throughput", "lockchain"):
        r = results.get(key)
        if r is None:
            continue
        if "error" in r:
            add(key, "FAILED", "", r["error"][:100])
            continue
        if key == "ingest":
            h, b, d = r["hookline"], r["bare"], r.get("duplicate") or {}
            where = f"{r['concurrency']} conns, {_f(r['duration_s'])} s"
            add(
                "ingest hookline",
                _f(h["ok_rps"], 0),
                "req/s",
                f"{where}, 1 uvicorn process, pool max {r['web_pool_max']}, no worker; {_cpu(h)}",
            )
            add(
                "ingest hookline latency",
                _lat(h["latency_ms"]),
                "ms p50/p90/p99",
                f"max {_f(h['latency_ms']['max'], 1)}",
            )
            add(
                "ingest hookline errors",
                _f(h["errors"]),
                "count",
                f"stored {_f(h['stored'])} of {_f(h['accepted_total'])} accepted"
                + ("" if h["stored_matches_accepted"] else " MISMATCH"),
            )
            add("ingest bare Starlette", _f(b["ok_rps"], 0), "req/s", f"{where}, same uvicorn options; {_cpu(b)}")
            add("ingest bare latency", _lat(b["latency_ms"]), "ms p50/p90/p99", f"errors {_f(b['errors'])}")
            add("ingest hookline / bare", _f(r["ratio_hookline_to_bare"], 3), "ratio", REFERENCE["ingest"][:60] + "…")
            if d:
                add(
                    "ingest duplicate re-send",
                    _f(d["ok_rps"], 0),
                    "req/s",
                    f"p50 {_f(d['latency_ms']['p50'], 2)} ms, {_f(d['new_rows'])} new rows, errors {_f(d['errors'])}",
                )
        elif key == "pickup":
            add(
                "pickup commit → started_at",
                _lat(r["commit_to_start_ms"]),
                "ms p50/p90/p99",
                f"{r['events']} events at {_f(r['rate_per_s'], 0)}/s, 1 worker c={r['worker_concurrency']}, "
                f"max {_f(r['commit_to_start_ms']['max'], 1)}",
            )
            add(
                "pickup received_at → started_at",
                _lat(r["received_to_start_ms"]),
                "ms p50/p90/p99",
                "ref " + REFERENCE["pickup"].split(": ", 1)[1],
            )
            add(
                "insert + commit (ingest SQL)",
                _lat(r["insert_commit_ms"]),
                "ms p50/p90/p99",
                "one event per transaction, the pickup row's inserts (fsync on commit)",
            )
        elif key == "throughput":
            add(
                "worker throughput",
                _f(r["events_per_s"], 0),
                "events/s",
                f"{r['events']} events dry-run, 1 worker c={r['worker_concurrency']}, first start → last finish "
                f"{_f(r['span_s'], 2)} s; CPU: worker {_f(r['cpu']['worker_pct_of_core'], 0)}% of a core, machine "
                f"{_f(r['cpu']['machine_busy_pct'], 0)}% busy; ref 344–408 jobs/s no-op",
            )
            add("bulk insert (trigger, 1 tx)", _f(r["bulk_insert_per_s"], 0), "events/s", "ingest SQL, executemany")
        elif key == "lockchain":
            w, wo = r["with_fix"], r["without_fix"]
            where = f"{w['links']} links, c={r['worker_concurrency']}, poll {_f(r['poll_interval_s'])} s"
            add(
                "lock chain with fix",
                _f(w["total_s"], 3),
                "s",
                f"{where}; gap p50 {_f(w['gap_ms']['p50'], 1)} ms, max {_f(w['gap_ms']['max'], 1)} ms"
                + ("" if w["in_order"] and not w["overlaps"] else " ORDER/OVERLAP PROBLEM"),
            )
            add(
                "lock chain without fix",
                _f(wo["total_s"], 3),
                "s",
                f"trigger disabled; gap p50 {_f(wo['gap_ms']['p50'], 0)} ms, max {_f(wo['gap_ms']['max'], 0)} ms"
                + ("" if wo["in_order"] and not wo["overlaps"] else " ORDER/OVERLAP PROBLEM"),
            )
            add("lock chain speed-up", _f(r["speedup"], 1), "x", "without fix / with fix")
    sync = results.get("sync")
    if sync is not None:
        if "error" in sync:
            add("sync", "FAILED", "", sync["error"][:100])
        else:
            for line in sync_rows(sync):
                add(*line)
    from app.cli.bench.report_scenarios import scenario_rows

    return out + scenario_rows(results)


def document(
    plan: Plan, results: dict[str, Any], machine: dict[str, Any], timings: dict[str, float], started: datetime
) -> dict[str, Any]:
    opts = {k: (str(v) if k == "json_path" and v is not None else v) for k, v in plan.__dict__.items()}
    return {
        "hookline_bench": 1,
        "started_at": started.isoformat(),
        "options": opts | {"only": list(plan.only)},
        "machine": machine,
        "results": results,
        "rows": rows(results, plan),
        "reference": REFERENCE,
        "wall_s": {k: round(v, 2) for k, v in timings.items()},
    }


def render(doc: dict[str, Any]) -> str:
    m = doc["machine"]
    lines = [
        f"machine: {m.get('cpus_usable')} of {m.get('cpu_count')} cores ({m.get('cpu_model') or '?'}), "
        f"{m.get('memory_gb')} GB, Python {m.get('python')}, {m.get('platform')}",
        f"postgres: {m.get('server_version')} ({m.get('database')}), fsync={m.get('fsync')}, "
        f"synchronous_commit={m.get('synchronous_commit')}, shared_buffers={m.get('shared_buffers')}",
        f"versions: hookline {m.get('hookline_version')}, procrastinate {m.get('procrastinate_version')}, "
        f"uvicorn {m.get('uvicorn_version')}, starlette {m.get('starlette_version')}, "
        f"asyncpg {m.get('asyncpg_version')}",
        "load generator, web, worker and Postgres share these cores.",
    ]
    busy = m.get("busy_before_start_pct")
    if busy is not None and busy > 15:
        lines.append(
            f"WARNING: the machine was {busy:.0f}% busy before the bench started (load average "
            f"{', '.join(f'{x:.1f}' for x in m.get('loadavg') or [])}): other work competes, figures are low"
        )
    yard = m.get("yardstick") or {}
    if yard.get("samples"):
        values = [x["ops_per_s"] for x in yard["samples"]]
        lines.append(
            f"machine speed (yardstick, {len(values)} samples between rows): {_f(min(values), 0)}–{_f(max(values), 0)} "
            f"ops/s, spread {_f(yard['spread_pct'], 1)}%"
        )
        if (yard.get("spread_pct") or 0) > YARDSTICK_WARN_PCT:
            lines.append(
                f"WARNING: the machine's speed moved by {yard['spread_pct']:.0f}% during this run (shared or "
                "virtual machine): rows measured at different times are not comparable; re-run, or compare "
                "rows measured together (each ratio's two sides are)"
            )
    lines.append("")
    table = [{"metric": "metric", "value": "value", "unit": "unit", "notes": "notes"}, *doc["rows"]]
    widths = {c: max(len(r[c]) for r in table) for c in ("metric", "value", "unit")}
    for i, r in enumerate(table):
        lines.append(
            f"{r['metric']:<{widths['metric']}}  {r['value']:>{widths['value']}}  "
            f"{r['unit']:<{widths['unit']}}  {r['notes']}".rstrip()
        )
        if i == 0:
            lines.append("-" * (sum(widths.values()) + 6 + 40))
    lines.append(f"\nwall time {doc['wall_s'].get('total', 0):.1f} s")
    return "\n".join(lines)
