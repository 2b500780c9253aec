"""``hookline schedules``: the ``[schedules.NAME]`` of hookline.toml with their next runs."""

from __future__ import annotations

import argparse
from collections.abc import Callable
from datetime import UTC, datetime

from app.cli.args import at_least_one
from app.core.config import Config, Schedule, load_config
from app.core.settings import Settings

Handler = Callable[[Settings, argparse.Namespace], int]


def run_time(sched: Schedule, at: datetime) -> str:
    """A firing's time in UTC, and in the schedule's time zone when that is not UTC."""
    local = "" if sched.timezone == "UTC" else f" ({at.isoformat(timespec='minutes')})"
    return at.astimezone(UTC).strftime("%Y-%m-%d %H:%M:%SZ") + local


def table(config: Config, now: datetime | None = None, runs: int = 1) -> list[str]:
    """One line per schedule: name, cron, zone, pipeline, window, the next ``runs`` firings."""
    now = now or datetime.now(UTC)
    if not config.schedules:
        return ["no [schedules] in the configuration"]
    lines = [f"{'SCHEDULE':<20} {'CRON':<16} {'TIMEZONE':<16} {'PIPELINE':<20} {'WINDOW':<7} NEXT RUN"]
    for name, sched in sorted(config.schedules.items()):
        nexts: list[str] = []
        at = now
        for _ in range(runs):
            at = sched.next_run(at)
            nexts.append(run_time(sched, at))
        lines.append(
            f"{name:<20} {sched.cron:<16} {sched.timezone:<16} {sched.pipeline:<20} {sched.window:<7} "
            + ", ".join(nexts)
        )
    return lines


def cmd_schedules(settings: Settings, args: argparse.Namespace) -> int:
    for line in table(load_config(settings.config), runs=args.next):
        print(line)
    return 0


def add_cli(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> dict[str, Handler]:
    s = subparsers.add_parser(
        "schedules", help="list [schedules] with their next run (UTC, and the schedule's time zone)"
    )
    s.add_argument(
        "--next", type=at_least_one("run"), default=1, metavar="N", help="show the next N runs of each (default 1)"
    )
    return {"schedules": cmd_schedules}
