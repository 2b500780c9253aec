"""``hookline bench --quick`` end to end: it runs, prints its table and writes the JSON.

Starts real processes (web, bare Starlette, load generator, workers) against a database of its own
on the test server. Never asserts a timing: the numbers belong to ``hookline bench``.
"""

from __future__ import annotations

import argparse
import json
import os
from pathlib import Path
from typing import Any

import pytest
from pydantic import SecretStr

from app.cli.bench import ROWS, add_cli, sync_reply
from app.cli.bench.database import check_name, with_dbname
from app.cli.bench.procs import BenchError
from app.core.settings import Settings
from tests.conftest import PgServer

#: The first four rows; the issue-9 scenarios have their own test (test_bench_scenarios.py).
ORIGINAL = ("ingest", "pickup", "throughput", "lockchain")


def _parser() -> tuple[argparse.ArgumentParser, dict[str, Any]]:
    parser = argparse.ArgumentParser(prog="hookline")
    handlers = add_cli(parser.add_subparsers(dest="command", required=True))
    return parser, handlers


def test_add_cli_registers_bench_with_its_options() -> None:
    parser, handlers = _parser()
    assert set(handlers) == {"bench"}
    args = parser.parse_args(
        [
            "bench",
            "--quick",
            "--duration",
            "2",
            "--concurrency",
            "4",
            "--json",
            "x.json",
            "--only",
            "ingest,lockchain",
            "--database-name",
            "hookline_bench_x",
        ]
    )
    assert (args.quick, args.duration, args.concurrency, args.json) == (True, 2.0, 4, "x.json")
    assert args.only == ("ingest", "lockchain")
    assert args.database_name == "hookline_bench_x"
    defaults = parser.parse_args(["bench"])
    assert defaults.database_name == "hookline_bench" and defaults.only is None and not defaults.quick
    for bad in (["--only", "ingest,nope"], ["--duration", "0"], ["--concurrency", "-1"]):
        with pytest.raises(SystemExit):
            parser.parse_args(["bench", *bad])


def test_database_name_and_url_helpers() -> None:
    assert check_name("hookline_bench_t1") == "hookline_bench_t1"
    for bad in ("hookline", "postgres", "hookline_bench; DROP", "Hookline_bench"):
        with pytest.raises(BenchError):
            check_name(bad)
    assert (
        with_dbname("postgres://u:p@h:5/app?sslmode=require", "hookline_bench")
        == "postgresql://u:p@h:5/hookline_bench?sslmode=require"
    )
    assert (
        with_dbname("postgresql://u@/app?host=/run/pg&dbname=app", "hookline_bench")
        == "postgresql://u@/hookline_bench?host=%2Frun%2Fpg"
    )
    # libpq does not read "+" as a space: options must keep %20
    assert (
        with_dbname("postgresql://u@h/app?options=-c%20synchronous_commit%3Doff", "hookline_bench")
        == "postgresql://u@h/hookline_bench?options=-c%20synchronous_commit%3Doff"
    )


@pytest.mark.timeout(180)
def test_quick_bench_runs_end_to_end(pg_server: PgServer, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    parser, handlers = _parser()
    out = tmp_path / "bench.json"
    args = parser.parse_args(
        [
            "bench",
            "--quick",
            "--json",
            str(out),
            "--only",
            ",".join((*ORIGINAL, "sync")),
            "--duration",  # a second of load per run is enough to prove each row works
            "1",
            "--database-name",
            f"hookline_bench_t{os.getpid()}",
        ]
    )
    settings = Settings(database_url=SecretStr(pg_server.url("postgres")), home=tmp_path / "home")

    status = handlers["bench"](settings, args)

    printed = capsys.readouterr().out
    assert status == 0, printed
    assert str(out) in printed
    for metric in (
        "ingest hookline",
        "ingest bare Starlette",
        "pickup commit → started_at",
        "worker throughput",
        "lock chain with fix",
        "lock chain without fix",
    ):
        assert metric in printed
    doc = json.loads(out.read_text())
    assert set(ORIGINAL) <= set(ROWS)
    assert set(doc["results"]) == {*ORIGINAL, "sync"}
    assert {"cpu_count", "python", "server_version"} <= set(doc["machine"])
    assert all(set(r) == {"metric", "value", "unit", "notes"} for r in doc["rows"])
    ingest = doc["results"]["ingest"]
    for side in ("hookline", "bare"):
        assert ingest[side]["requests"] > 0 and ingest[side]["ok"] > 0 and ingest[side]["rps"] > 0
        assert {"p50", "p90", "p99"} <= set(ingest[side]["latency_ms"])
    assert ingest["hookline"]["stored"] == ingest["hookline"]["accepted_total"] > 0
    assert ingest["duplicate"]["duplicates_total"] > 0 and ingest["duplicate"]["new_rows"] == 0
    assert ingest["ratio_hookline_to_bare"] > 0
    pickup = doc["results"]["pickup"]
    assert pickup["events"] > 0 and pickup["succeeded"] == pickup["dry_run"] == pickup["events"]
    tp = doc["results"]["throughput"]
    assert tp["events"] > 0 and tp["succeeded"] == tp["events"] and tp["events_per_s"] > 0
    chain = doc["results"]["lockchain"]
    for run in ("with_fix", "without_fix"):
        assert chain[run]["links"] > 0 and chain[run]["succeeded"] == chain[run]["links"]
        assert chain[run]["in_order"] and chain[run]["overlaps"] == 0
    sync = doc["results"]["sync"]
    assert sync["requests"] == sync["answered"] > 0 and sync["errors"] == 0
    assert {"p50", "p95", "p99"} <= set(sync["added_ms"])
    # every request's stages were matched up: its reply's event id, the stand-in model's clock, the rows
    assert all(sync["stages_ms"][name]["p50"] is not None for name, _ in sync_reply.STAGES)
    assert "sync reply added latency" in printed
    # the bench cleans up after itself: its database is gone
    import psycopg

    with psycopg.connect(pg_server.url("postgres"), autocommit=True) as conn:
        left = conn.execute("SELECT 1 FROM pg_database WHERE datname = %s", (f"hookline_bench_t{os.getpid()}",))
        assert left.fetchone() is None
