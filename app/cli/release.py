"""The release step shared by ``hookline migrate`` and ``hookline dev``: migrations, then ``[[watch]]``."""

from __future__ import annotations

from collections.abc import Callable

from app.cli.watch import apply_watches, wait_line
from app.core import migrations
from app.core.config import Config


def release(url: str, config: Config, out: Callable[[str], None] = print) -> list[migrations.Migration]:
    """Apply pending migrations, then every ``[[watch]]`` entry; returns the migrations applied now.

    Each migration is named before it runs (a long one, or one waiting for a lock, shows which), except on
    a new database: there all of them run, quickly as its tables are empty, and one line says so. The
    caller says how many were applied; a failure (a MigrationError) names the migration that failed."""
    known = migrations.discover()

    def step(n: int, total: int, m: migrations.Migration) -> None:
        if total < len(known):
            out(f"[{n}/{total}] applying {m.version:04d}_{m.name} …")
        elif n == 1:
            first, last = known[0], known[-1]
            out(
                f"new database: applying all {total} migrations "
                f"({first.version:04d}_{first.name} to {last.version:04d}_{last.name}) …"
            )

    def wait(m: migrations.Migration, tries: int) -> None:
        if tries == 1 or tries % 10 == 0:
            out(f"{m.version:04d}_{m.name}: its tables are locked by another transaction; trying again …")

    def queued() -> None:
        out("another `hookline migrate` (a release step) is running on this database; waiting for it to finish …")

    applied = migrations.migrate(url, known, on_step=step, on_wait=wait, on_queued=queued)
    newer = migrations.status(url).unknown
    if newer:  # a rollback's release step: the newer release's migrations stay (forward-only)
        out(f"the database has newer migration(s) than this release: {', '.join(f'{v:04d}' for v in newer)}; kept")

    def watch_wait(table: str, tries: int) -> None:
        line = wait_line(table, tries)
        if line is not None:
            out(f"watch {line}")

    for line in apply_watches(url, config.watch, on_wait=watch_wait):
        out(f"watch {line}")
    return applied
