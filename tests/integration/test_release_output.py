"""What the release step (``hookline migrate``, ``hookline dev``) prints while it migrates."""

from __future__ import annotations

from app.cli.release import release
from app.core import migrations
from app.core.config import parse_config
from app.core.migrations import Migration


def _name(m: Migration) -> str:
    return f"{m.version:04d}_{m.name}"


def test_a_new_database_is_one_line(empty_db_url: str) -> None:
    """Every migration was printed twice ("[n/47] applying …", then "applied …"): about 95 lines."""
    known = migrations.discover()
    lines: list[str] = []
    applied = release(empty_db_url, parse_config({}), lines.append)
    assert applied == known
    assert lines == [f"new database: applying all {len(known)} migrations ({_name(known[0])} to {_name(known[-1])}) …"]


def test_an_upgrade_names_each_migration_once_before_it_runs(empty_db_url: str) -> None:
    known = migrations.discover()
    migrations.migrate(empty_db_url, known[:-2])
    lines: list[str] = []
    assert release(empty_db_url, parse_config({}), lines.append) == known[-2:]
    assert lines == [f"[1/2] applying {_name(known[-2])} …", f"[2/2] applying {_name(known[-1])} …"]
