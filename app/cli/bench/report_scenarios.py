"""Table rows of the issue-9 scenarios (floors, ack, duplicates, worker, scale), with their targets.

Targets are printed next to the figures, never enforced: the bench reports, it does not judge.
"""

from __future__ import annotations

from typing import Any

from app.cli.bench.fmt import fmt as _f
from app.cli.bench.fmt import lat as _lat


def scenario_rows(results: dict[str, Any]) -> list[dict[str, str]]:
    out: list[dict[str, str]] = []

    def add(metric: str, value: str, unit: str, notes: str = "") -> None:
        out.append({"metric": metric, "value": value, "unit": unit, "notes": notes})

    for key in ("floors", "ack", "duplicates", "worker", "scale"):
        r = results.get(key)
        if r is None:
            continue
        if "error" in r:
            add(key, "FAILED", "", r["error"][:100])
            continue
        if key == "floors":
            gen = r["generator"]
            h, i, d, db = r["http_floor"], r["ingest"], r["duplicates"], r["db_floor"]
            add("HTTP floor (bare Starlette)", _f(h["ok_rps"], 0), "req/s", f"{gen}, {r['concurrency']} conns")
            add(
                "DB floor (store_events, batched)",
                _f(db["events_per_s"], 0),
                "events/s",
                f"asyncpg, {db['connections']} conns × batches of {db['batch']}, same triggers, no HTTP; "
                f"WAL {_f(db.get('wal_bytes_per_event'))} bytes/event ({db.get('body_bytes')}-byte bodies)",
            )
            add(
                "ingest (signed, durable)",
                _f(i["ok_rps"], 0),
                "req/s",
                f"{gen}; p50/p90/p99 {_lat(i['latency_ms'])} ms; errors {_f(i['errors'])}; stored {_f(i['stored'])}",
            )
            add("ingest / HTTP floor", _f(r["ingest_over_http_floor"], 3), "ratio", "target ≥ 0.22")
            add("ingest / DB floor", _f(r["ingest_over_db_floor"], 3), "ratio", "target ≥ 0.4")
            add(
                "duplicate re-send",
                _f(d["ok_rps"], 0),
                "req/s",
                f"{gen}; p50 {_f(d['latency_ms'].get('p50'), 2)} ms; {_f(d['new_rows'])} new rows",
            )
            add("duplicates / ingest", _f(r["duplicates_over_ingest"], 2), "ratio", "target ≥ 1.5")
            two = r.get("two_processes")
            if two:
                n = two["processes"]
                for label, x, one in (
                    ("HTTP floor", two["http_floor"], h),
                    ("ingest", two["ingest"], i),
                    ("duplicate re-send", two["duplicates"], d),
                ):
                    times = x["ok_rps"] / one["ok_rps"] if one["ok_rps"] and x["ok_rps"] is not None else None
                    add(
                        f"{label}, {n} web processes",
                        _f(x["ok_rps"], 0),
                        "req/s",
                        f"{_f(times, 2)} × one process; p50 {_f(x['latency_ms'].get('p50'), 2)} ms"
                        + (f"; stored {_f(x['stored'])}" if "stored" in x else "")
                        + (f"; {_f(x['new_rows'])} new rows" if "new_rows" in x else ""),
                    )
        elif key == "ack":
            for x in r["rates"]:
                add(
                    f"ack at {_f(x['offered_rate'], 0)} req/s",
                    _lat(x["latency_ms"]),
                    "ms p50/p90/p99",
                    f"achieved {_f(x['achieved_ok_rps'], 0)} req/s, errors {_f(x['errors'])}; pickup p50/p90/p99 "
                    f"{_lat(x['pickup_ms'])} ms"
                    + (
                        "; ack target (p99 ≤ 10 ms at 500): see web only"
                        if x["offered_rate"] == 500
                        else "; target pickup p99 ≤ 15 ms at 300"
                        if x["offered_rate"] == 300
                        else ""
                    ),
                )
            for x in r.get("web_only") or []:
                add(
                    f"ack at {_f(x['offered_rate'], 0)} req/s, web only",
                    _lat(x["latency_ms"]),
                    "ms p50/p90/p99",
                    f"achieved {_f(x['achieved_ok_rps'], 0)} req/s, errors {_f(x['errors'])}; no worker running"
                    + ("; target p99 ≤ 10 ms at 500" if x["offered_rate"] == 500 else ""),
                )
        elif key == "duplicates":
            add(
                "duplicate storm",
                _f(r["seconds"], 2),
                "s",
                f"{_f(r['deliveries'])} deliveries of {r['distinct']} events, {r['concurrency']} conns "
                f"({_f(r['rps'], 0)} req/s): rows {r['rows']}, jobs {r['jobs']}, model calls {r['model_calls']}"
                + ("" if r["exact"] else " NOT EXACT"),
            )
        elif key == "worker":
            for x in r["runs"]:
                slow = bool(x["ideal_events_per_s"])
                ideal = (
                    f"; sustained {_f(x['of_ideal'], 2)} of concurrency/latency (target ≥ 0.9), fed at "
                    f"{_f(x.get('offered_events_per_s'), 0)}/s; whole run {_f(x.get('whole_run_of_ideal'), 2)}"
                    if slow
                    else ""
                )
                add(
                    f"worker, model {_f(x['model_latency_s'] * 1000, 0)} ms, {x['processes']}p × c{x['concurrency']}",
                    _f(x["sustained_events_per_s"] if slow else x["events_per_s"], 0),
                    "events/s sustained" if slow else "events/s",
                    f"{x['events']} events; worker CPU {_f(x['worker_cpu_ms_per_event'], 2)} ms/event "
                    f"(target ≤ 1){_pg(x)}{ideal}",
                )
        elif key == "scale":
            for x in r["steps"]:
                add(
                    f"scale, {x['processes']} dry-run worker(s)",
                    _f(x["events_per_s"], 0),
                    "events/s",
                    f"c=10 each; worker CPU {_f(x['worker_cpu_ms_per_event'], 2)} ms/event{_pg(x)}"
                    + ("; target ≥ 1,000 with 2" if x["processes"] == 2 else ""),
                )
    return out


def _pg(x: dict[str, Any]) -> str:
    """The Postgres side of a worker run: CPU of the backends serving it, when measured."""
    ms = x.get("postgres_cpu_ms_per_event")
    return f", Postgres {_f(ms, 2)} ms/event" if ms is not None else ""
