"""The issue-9 scenarios of ``hookline bench``: floors and the duplicate storm end to end (quick),
the wrk script and output parsing, the report rows and the chart. No timing is asserted."""

from __future__ import annotations

import argparse
import json
import os
from pathlib import Path
from typing import Any

import pytest
from pydantic import SecretStr

from app.cli.bench import add_cli, report, wrk
from app.cli.bench.chart import draw
from app.cli.bench.loadgen import build_requests
from app.cli.bench.report_scenarios import scenario_rows
from app.cli.bench.scenarios import sustained_rate
from app.core.settings import Settings
from tests.conftest import PgServer

WRK_OUTPUT = """Running 2s test @ http://127.0.0.1:5000/webhooks/bench
  1 threads and 8 connections
  Thread Stats   Avg      Stdev     Max   +/- Stdev
    Latency     2.10ms  500.00us  12.50ms   90.00%
    Req/Sec     3.80k   200.00     4.00k    70.00%
  Latency Distribution
     50%    2.00ms
     75%    2.30ms
     90%    2.80ms
     99%    1.20s
  7600 requests in 2.00s, 1.10MB read
  Non-2xx or 3xx responses: 76
Requests/sec:   3800.00
Transfer/sec:    550.00KB
"""


def test_wrk_output_is_parsed() -> None:
    r = wrk.parse(WRK_OUTPUT, 2.0)
    assert r["requests"] == 7600 and r["non_2xx"] == 76 and r["errors"] == 76
    assert r["latency_ms"] == {"p50": 2.0, "p90": 2.8, "p99": 1200.0, "max": 12.5}
    assert r["rps"] == 3800.0 and r["ok_rps"] == pytest.approx(3800.0 * 0.99)


def test_the_lua_script_holds_each_signed_request_once() -> None:
    """(wrk running the script against hookline is the floors test below: a broken script fails it.)"""
    reqs = build_requests(port=1, path="/webhooks/bench", count=3, prefix="lua", secret="whsec_" + "YWJjZA==")
    script = wrk.lua_script(reqs)
    assert script.count("r[#r + 1] = [====[") == 3
    for req in reqs:
        head, body = req.split(b"\r\n\r\n", 1)
        assert (head.replace(b"\r\n", b"\n") + b"\n\n" + body).decode("latin-1") in script


def _results() -> dict[str, Any]:
    lat = {"p50": 1.0, "p90": 2.0, "p99": 3.0, "max": 4.0}
    return {
        "ack": {
            "rates": [
                {
                    "offered_rate": r,
                    "achieved_ok_rps": r,
                    "latency_ms": lat,
                    "errors": 0,
                    "server_cpu_pct_of_core": 10.0,
                    "pickup_ms": lat,
                }
                for r in (100.0, 300.0, 500.0)
            ],
            "web_only": [
                {"offered_rate": r, "achieved_ok_rps": r, "latency_ms": lat, "errors": 0, "server_cpu_pct_of_core": 5.0}
                for r in (100.0, 500.0)
            ],
        },
        "scale": {
            "steps": [
                {
                    "processes": n,
                    "events_per_s": 100.0 * n,
                    "worker_cpu_ms_per_event": 1.5,
                    "postgres_cpu_ms_per_event": 2.5 if n == 1 else None,  # None: Postgres elsewhere
                    "events": 10,
                }
                for n in (1, 2)
            ]
        },
        "worker": {
            "runs": [
                {
                    "model_latency_s": d,
                    "processes": 1,
                    "concurrency": 10,
                    "events": 10,
                    "events_per_s": 9.5,
                    "worker_cpu_ms_per_event": 2.0,
                    "ideal_events_per_s": 10.0 if d else None,
                    "of_ideal": 0.95 if d else None,
                    "sustained_events_per_s": 9.5 if d else None,
                    "offered_events_per_s": 12.5 if d else None,
                    "whole_run_of_ideal": 0.81 if d else None,
                }
                for d in (0.0, 1.0)
            ]
        },
        "duplicates": {"error": "BenchError: boom", "traceback": "", "logs": {}},
        "floors": _floors(),
    }


def _floors() -> dict[str, Any]:
    lat = {"p50": 1.0, "p90": 2.0, "p99": 3.0}

    def run(rps: float, **extra: Any) -> dict[str, Any]:
        return {"ok_rps": rps, "latency_ms": lat, "errors": 0} | extra

    return {
        "generator": "wrk",
        "concurrency": 32,
        "http_floor": run(8000.0),
        "ingest": run(2000.0, stored=16000),
        "duplicates": run(4000.0, new_rows=0),
        "db_floor": {"events_per_s": 20000.0, "connections": 4, "batch": 200, "wal_bytes_per_event": 2600},
        "ingest_over_http_floor": 0.25,
        "ingest_over_db_floor": 0.1,
        "duplicates_over_ingest": 2.0,
        "two_processes": {
            "processes": 2,
            "http_floor": run(12000.0),
            "ingest": run(3000.0, stored=24000),
            "duplicates": run(6000.0, new_rows=0),
            "ingest_over_http_floor": 0.25,
        },
    }


def test_report_rows_and_chart(tmp_path: Path) -> None:
    rows = scenario_rows(_results())
    metrics = [r["metric"] for r in rows]
    assert "ack at 500 req/s" in metrics and "scale, 2 dry-run worker(s)" in metrics
    assert "ack at 500 req/s, web only" in metrics and "ack at 300 req/s, web only" not in metrics
    assert "worker, model 1,000 ms, 1p × c10" in metrics
    slow = next(r for r in rows if r["metric"] == "worker, model 1,000 ms, 1p × c10")
    assert (slow["value"], slow["unit"]) == ("10", "events/s sustained")
    assert "sustained 0.95 of concurrency/latency (target ≥ 0.9), fed at 12/s; whole run 0.81" in slow["notes"]
    notes = {r["metric"]: r["notes"] for r in rows}
    assert notes["scale, 1 dry-run worker(s)"] == "c=10 each; worker CPU 1.50 ms/event, Postgres 2.50 ms/event"
    assert "Postgres" not in notes["scale, 2 dry-run worker(s)"]
    assert notes["ack at 500 req/s, web only"].endswith("no worker running; target p99 ≤ 10 ms at 500")
    assert {"metric": "duplicates", "value": "FAILED", "unit": "", "notes": "BenchError: boom"} in rows
    assert notes["ingest, 2 web processes"] == "1.50 × one process; p50 1.00 ms; stored 24,000"
    assert notes["duplicate re-send, 2 web processes"] == "1.50 × one process; p50 1.00 ms; 0 new rows"
    assert notes["HTTP floor, 2 web processes"] == "1.50 × one process; p50 1.00 ms"
    line = draw({"results": _results(), "started_at": "2026-01-01T00:00:00"}, tmp_path / "c.png")
    assert line == f"chart written to {tmp_path / 'c.png'}"
    png = (tmp_path / "c.png").read_bytes()
    assert png[:8] == b"\x89PNG\r\n\x1a\n"
    assert int.from_bytes(png[16:20], "big") == 1700  # three panels: workers, web processes, ack latency
    web_only = {"floors": _floors()}
    assert draw({"results": web_only}, tmp_path / "w.png") == f"chart written to {tmp_path / 'w.png'}"
    without = {k: v for k, v in _results().items() if k != "floors"}
    draw({"results": without}, tmp_path / "two.png")
    assert int.from_bytes((tmp_path / "two.png").read_bytes()[16:20], "big") == 1200
    assert draw({"results": {}}, tmp_path / "none.png").startswith("chart: nothing to draw")


@pytest.mark.timeout(400)
def test_quick_floors_and_duplicate_storm(
    pg_server: PgServer, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    parser = argparse.ArgumentParser(prog="hookline")
    handlers = add_cli(parser.add_subparsers(dest="command", required=True))
    out = tmp_path / "bench.json"
    args = parser.parse_args(
        [
            "bench",
            "--quick",
            "--json",
            str(out),
            "--only",
            "floors,duplicates",
            "--duration",  # a second of load per run is enough to prove each row works
            "1",
            "--database-name",
            f"hookline_bench_s{os.getpid()}",
        ]
    )
    settings = Settings(database_url=SecretStr(pg_server.url("postgres")), home=tmp_path / "home")
    status = handlers["bench"](settings, args)
    printed = capsys.readouterr().out
    assert status == 0, printed
    doc = json.loads(out.read_text())
    floors = doc["results"]["floors"]
    assert floors["generator"] == ("wrk" if wrk.available() else "python")
    assert floors["ingest"]["stored"] > 0 and floors["duplicates"]["new_rows"] == 0
    assert floors["db_floor"]["events"] > 0 and floors["ingest_over_db_floor"] > 0
    if floors["generator"] == "wrk":  # measured from wrk's first request, with the supervisor's children
        assert floors["ingest"]["server_cpu_pct_of_core"] > 0
        # the window starts at wrk's init (its script loaded), so it is wrk's -d, give or take its exit
        assert abs(floors["ingest"]["cpu_window_s"] - max(1, round(doc["options"]["duration"]))) < 1.0, floors["ingest"]
        assert floors["two_processes"]["ingest"]["server_cpu_pct_of_core"] > 0
    two = floors["two_processes"]  # the same load against `hookline web --processes 2` (and the bare route)
    assert two["processes"] == 2 and two["http_floor"]["ok_rps"] > 0
    assert two["ingest"]["stored"] > 0 and two["duplicates"]["new_rows"] == 0
    assert two["ingest"]["errors"] == 0 and two["duplicates"]["errors"] == 0
    storm = doc["results"]["duplicates"]
    assert storm["exact"], storm
    yard = doc["machine"]["yardstick"]  # timed between the rows, with the bench's processes stopped
    assert [x["after"] for x in yard["samples"]] == ["start", "floors", "duplicates"]
    assert all(x["ops_per_s"] > 0 for x in yard["samples"]) and yard["spread_pct"] >= 0
    assert "machine speed (yardstick, 3 samples between rows)" in printed
    assert storm["statuses"] == {"200": storm["deliveries"]}
    assert "HTTP floor (bare Starlette)" in printed and "duplicate storm" in printed
    assert "ingest, 2 web processes" in printed


def test_the_table_warns_when_the_machines_speed_moved_during_the_run() -> None:
    def doc(*speeds: float) -> dict[str, Any]:
        samples = [{"after": f"row{i}", "ops_per_s": v} for i, v in enumerate(speeds)]
        machine = {"yardstick": report.yardstick_summary(samples)}
        return {"machine": machine, "rows": [], "wall_s": {"total": 1.0}}

    steady = report.render(doc(100_000, 95_000, 98_000))
    assert "machine speed (yardstick, 3 samples between rows): 95,000–100,000 ops/s, spread 5.0%" in steady
    assert "WARNING" not in steady
    moved = report.render(doc(100_000, 60_000))
    assert "WARNING: the machine's speed moved by 40% during this run" in moved
    assert report.yardstick(rounds=1, n=50) > 0


def test_the_sustained_rate_leaves_out_the_start_and_the_tail() -> None:
    """Finishes at 100/s for 10 s, after a slow start (10 events in the first 2 s) and before a straggling
    tail: the sustained rate is the steady one, where the whole run's average is not."""
    start = [0.2 * i for i in range(10)]
    steady = [2.0 + 0.01 * i for i in range(1000)]
    tail = [12.0 + 0.5 * i for i in range(10)]
    finished = start + steady + tail
    assert sustained_rate(finished) == pytest.approx(100.0, rel=0.01)
    assert len(finished) / (max(finished) - min(finished)) < 70
    assert sustained_rate([1.0, 1.0, 1.0]) is None and sustained_rate([]) is None
