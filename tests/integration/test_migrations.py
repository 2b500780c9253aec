"""Migrations against a real, empty database: order, checksums, lock, procrastinate's schema."""

from __future__ import annotations

import threading
from pathlib import Path

import psycopg
import pytest

from app.core import migrations
from app.core.migrations import Migration, MigrationError


def test_applies_everything_once_on_an_empty_database(empty_db_url: str) -> None:
    applied = migrations.migrate(empty_db_url)
    assert [m.version for m in applied] == [m.version for m in migrations.discover()]
    assert migrations.migrate(empty_db_url) == []
    assert migrations.status(empty_db_url).current
    with psycopg.connect(empty_db_url) as conn:
        assert conn.execute("SELECT to_regclass('hookline.events'), to_regclass('procrastinate_jobs')").fetchone() == (
            "hookline.events",
            "procrastinate_jobs",
        )


def test_a_changed_applied_file_is_refused(empty_db_url: str) -> None:
    migrations.migrate(empty_db_url)
    found = migrations.discover()
    tampered = [*found[:-1], Migration(found[-1].version, found[-1].name, found[-1].sql + "\n-- edited", "0" * 64)]
    with pytest.raises(MigrationError, match="changed on disk"):
        migrations.migrate(empty_db_url, tampered)
    assert not migrations.status(empty_db_url, tampered).current


def test_a_failing_migration_leaves_no_trace(empty_db_url: str) -> None:
    """It is named, with the line that failed and what stays applied, in the one line `hookline migrate`
    prints (a MigrationError): it used to be psycopg's traceback, which named neither."""
    found = migrations.discover()
    sql = "CREATE TABLE hookline.x (id int);\n\nSELECT 1/0;"
    broken = [*found, Migration(len(found) + 1, "broken", sql, "f" * 64)]
    with pytest.raises(MigrationError) as failed:
        migrations.migrate(empty_db_url, broken)
    assert isinstance(failed.value.__cause__, psycopg.errors.DivisionByZero)
    assert str(failed.value) == (
        f"{len(found) + 1:04d}_broken failed: division by zero [SQLSTATE 22012]; nothing of it was applied; "
        f"the {len(found)} applied before it stay applied"
    )
    syntax = [Migration(len(found) + 1, "typo", "SELECT 1;\n\n  SELEC 1;", "e" * 64)]
    with pytest.raises(MigrationError, match=r"^\d{4}_typo failed at line 3: syntax error at or near \"SELEC\""):
        migrations.migrate(empty_db_url, [*found, *syntax])
    with psycopg.connect(empty_db_url) as conn:
        assert conn.execute("SELECT to_regclass('hookline.x')").fetchone() == (None,)
        versions = [r[0] for r in conn.execute("SELECT version FROM hookline.schema_migrations ORDER BY 1")]
    assert versions == [m.version for m in found]


def test_concurrent_runners_apply_each_migration_once(empty_db_url: str) -> None:
    errors: list[BaseException] = []
    results: list[list[Migration]] = []

    def run() -> None:
        try:
            results.append(migrations.migrate(empty_db_url))
        except BaseException as e:  # pragma: no cover - reported below
            errors.append(e)

    threads = [threading.Thread(target=run) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors
    assert sorted(len(r) for r in results) == [0, 0, 0, len(migrations.discover())]


def test_versions_must_be_contiguous(tmp_path: Path) -> None:
    (tmp_path / "0001_a.sql").write_text("SELECT 1;")
    (tmp_path / "0003_c.sql").write_text("SELECT 1;")
    with pytest.raises(MigrationError, match="contiguous"):
        migrations.discover(tmp_path)
    (tmp_path / "0003_c.sql").unlink()
    (tmp_path / "2_bad.sql").write_text("SELECT 1;")
    with pytest.raises(MigrationError, match="NNNN"):
        migrations.discover(tmp_path)


def test_procrastinate_schema_is_the_installed_version() -> None:
    """Migration 0001 is procrastinate's schema.sql verbatim: an upgrade must come with a new migration."""
    import procrastinate

    installed = (Path(procrastinate.__file__).parent / "sql" / "schema.sql").read_text()
    ours = migrations.discover()[0].sql.split("-- procrastinate-schema-begin\n", 1)[1]
    assert ours == installed


def test_migrate_reports_each_step_before_applying_it(empty_db_url: str) -> None:
    steps: list[tuple[int, int, int]] = []
    applied = migrations.migrate(empty_db_url, on_step=lambda n, total, m: steps.append((n, total, m.version)))
    assert steps == [(i, len(applied), m.version) for i, m in enumerate(applied, 1)] and len(applied) >= 6


def test_a_second_run_says_it_waits_for_the_first(empty_db_url: str) -> None:
    """A second release step behind the first's migration lock says so once, then waits and applies
    nothing twice (it used to wait in silence, up to the first's ten minutes behind a table lock)."""
    queued = threading.Event()
    with psycopg.connect(empty_db_url, autocommit=True) as holder:
        holder.execute("SELECT pg_advisory_lock(%s)", (migrations.MIGRATION_LOCK_KEY,))
        got: list[list[Migration]] = []
        runner = threading.Thread(target=lambda: got.append(migrations.migrate(empty_db_url, on_queued=queued.set)))
        runner.start()
        assert queued.wait(30), "the second run did not say it waits"
        assert runner.is_alive() and got == []  # still waiting for the lock
        holder.execute("SELECT pg_advisory_unlock(%s)", (migrations.MIGRATION_LOCK_KEY,))
    runner.join(60)
    assert got and len(got[0]) >= 6
    calls: list[None] = []
    assert migrations.migrate(empty_db_url, on_queued=lambda: calls.append(None)) == [] and calls == []
