"""``hookline bench``: the performance targets, measured against the real processes.

Rows (each a line of the printed table and a key of the JSON's ``results``):

- ``ingest``: ``POST /webhooks/bench`` (Standard Webhooks signatures, distinct delivery ids, pre-signed)
  on ``hookline web`` versus a bare Starlette route on the same uvicorn setup; requests/s, latency
  p50/p90/p99, errors, their ratio, and the duplicate path. No worker runs meanwhile.
- ``pickup``: events committed one at a time to an idle worker; commit → ``started_at``.
- ``throughput``: a bulk-inserted backlog drained by one worker in dry-run; events/s.
- ``lockchain``: events with one ordering key, with migration 0004's wake-up trigger and without it.

The database is fresh: ``hookline_bench`` on ``DATABASE_URL``'s server (created and dropped; needs
CREATEDB), else an embedded server under ``$HOOKLINE_HOME/bench-pg``. Tests never assert timings;
this command is where the numbers live. This module stays light: the work is imported on use.
"""

from __future__ import annotations

import argparse
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

from app.cli.bench.plan import ROWS
from app.core.settings import Settings

if TYPE_CHECKING:
    from starlette.applications import Starlette


def bare_app() -> Starlette:
    """uvicorn factory of the baseline: ``uvicorn app.cli.bench:bare_app --factory``."""
    from app.cli.bench.bare import bare_app as make

    return make()


def _only(value: str) -> tuple[str, ...]:
    names = tuple(dict.fromkeys(v.strip() for v in value.split(",") if v.strip()))
    unknown = [n for n in names if n not in ROWS]
    if unknown or not names:
        raise argparse.ArgumentTypeError(
            f"unknown row(s) {', '.join(unknown) or '(none)'}; choose from {', '.join(ROWS)}"
        )
    return names


def _positive(kind: Callable[[str], Any]) -> Callable[[str], Any]:
    def parse(value: str) -> Any:
        v = kind(value)
        if v <= 0:
            raise argparse.ArgumentTypeError(f"{value}: must be > 0")
        return v

    return parse


def cmd_bench(settings: Settings, args: argparse.Namespace) -> int:
    from app.cli.bench.plan import Plan
    from app.cli.bench.runner import run

    plan = Plan.make(
        quick=args.quick,
        duration=args.duration,
        concurrency=args.concurrency,
        only=args.only,
        database_name=args.database_name,
        json_path=Path(args.json) if args.json else None,
    )
    status, _path = run(plan, dsn=settings.dsn(), home=settings.home)
    return status


def add_cli(
    subparsers: argparse._SubParsersAction[argparse.ArgumentParser],
) -> dict[str, Callable[[Settings, argparse.Namespace], int]]:
    """Register ``hookline bench`` on ``subparsers``; returns ``{"bench": handler}``."""
    p = subparsers.add_parser(
        "bench",
        help="measure ingest, pickup, worker throughput and lock chains (prints a table, writes JSON)",
        description="Runs hookline web, bare Starlette and workers against a fresh database "
        "(hookline_bench on DATABASE_URL's server, else embedded under $HOOKLINE_HOME/bench-pg).",
    )
    p.add_argument("--quick", action="store_true", help="shrink everything (< 30 s; the smoke test uses it)")
    p.add_argument(
        "--duration", type=_positive(float), metavar="S", help="seconds of load per ingest run (default 8; --quick 1.5)"
    )
    p.add_argument(
        "--concurrency",
        type=_positive(int),
        metavar="C",
        help="connections of the load generator (default 32; --quick 8)",
    )
    p.add_argument(
        "--json", metavar="PATH", help="where to write the results (default bench-results/bench-<time>.json)"
    )
    p.add_argument("--only", type=_only, metavar="ROWS", help=f"comma-separated subset of {','.join(ROWS)}")
    p.add_argument(
        "--database-name",
        default="hookline_bench",
        metavar="NAME",
        help="database to create and drop (must start with hookline_bench; default hookline_bench)",
    )
    return {"bench": cmd_bench}


__all__ = ["ROWS", "add_cli", "bare_app", "cmd_bench"]
