"""``hookline check``'s summary of a valid hookline.toml: what makes events, where they go, and who
gets the alerts."""

from __future__ import annotations

from datetime import UTC, datetime

from app.cli.schedules import run_time
from app.core.config import Action, Config

#: What the built-in ``db`` source is, in the line listing its pipelines.
_DB = "row changes"


def summary(config: Config, now: datetime | None = None) -> list[str]:
    """The counts (schedules, watched tables and alert actions only when there are any), then one line
    per source, schedule, watched table, and the alert actions."""
    now = now or datetime.now(UTC)
    counts = [f"{len(config.sources)} source(s)", f"{len(config.pipelines)} pipeline(s)"]
    for n, what in ((len(config.schedules), "schedule(s)"), (len(config.watch), "watched table(s)")):
        if n:
            counts.append(f"{n} {what}")
    if config.alerts:
        counts.append(f"{len(config.alerts)} alert action(s)")
    lines = [", ".join(counts)]
    for name, src in sorted(config.sources.items()):
        lines.append(f"  source {name} ({src.provider}) → {_pipelines_of(config, name)}")
    if config.watch or any(p.source == "db" for p in config.pipelines.values()):
        lines.append(f"  source db ({_DB}) → {_pipelines_of(config, 'db')}")
    for name, sched in sorted(config.schedules.items()):
        lines.append(
            f"  schedule {name} ({sched.cron}, {sched.timezone}) → {sched.pipeline}, "
            f"next {run_time(sched, sched.next_run(now))}"
        )
    for spec in config.watch:
        ops = ", ".join(spec.on)
        of = f" of {', '.join(spec.columns)}" if spec.columns else ""
        lines.append(f"  watch {spec.table} ({ops}{of})")
    if config.alerts:
        lines.append(f"  alerts → {', '.join(_action(a) for a in config.alerts)}")
    return lines


def _pipelines_of(config: Config, source: str) -> str:
    return ", ".join(p.name for p in config.pipelines.values() if p.source == source) or "no pipeline"


def _action(action: Action) -> str:
    return f"{action.name} ({action.type})" if action.name else action.type
