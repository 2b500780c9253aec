"""Forward-only migration runner for ``sql/migrations/NNNN_name.sql``.

Each file runs in one transaction together with its version row (unless its first line is
``-- no-transaction``, for ``CREATE INDEX CONCURRENTLY``); versions must be contiguous from 1; the
checksum of every applied file is recorded and a changed file is an error; an advisory lock keeps
two processes (release step, a second deploy) from migrating at once. procrastinate's schema is
migration 0001, so procrastinate's own lack of tracking does not matter.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import psycopg

from app.core.db import libpq_dsn
from app.core.errors import HooklineError
from app.core.lockwait import when_locks_free
from app.core.sqlfiles import sql_dir

#: pg_advisory_lock key: the bytes of "hookline" read as a big-endian integer.
MIGRATION_LOCK_KEY = int.from_bytes(b"hookline", "big") & 0x7FFF_FFFF_FFFF_FFFF

_FILE = re.compile(r"^(\d{4})_([a-z0-9_]+)\.sql$")

_BOOTSTRAP = """
CREATE SCHEMA IF NOT EXISTS hookline;
CREATE TABLE IF NOT EXISTS hookline.schema_migrations (
    version    integer PRIMARY KEY,
    name       text        NOT NULL,
    checksum   text        NOT NULL,
    applied_at timestamptz NOT NULL DEFAULT now()
);
COMMENT ON TABLE hookline.schema_migrations IS
  'Applied sql/migrations files: version, name, sha256 of the file. Written by hookline migrate.';
COMMENT ON COLUMN hookline.schema_migrations.version IS 'NNNN prefix of the migration file.';
COMMENT ON COLUMN hookline.schema_migrations.name IS 'File name without the prefix and .sql.';
COMMENT ON COLUMN hookline.schema_migrations.checksum IS 'sha256 of the file as applied; a changed file is refused.';
COMMENT ON COLUMN hookline.schema_migrations.applied_at IS 'When it was applied.';
COMMENT ON CONSTRAINT schema_migrations_pkey ON hookline.schema_migrations IS 'One row per applied version.';
"""


class MigrationError(HooklineError):
    code = "migration_error"


@dataclass(frozen=True)
class Migration:
    version: int
    name: str
    sql: str
    checksum: str

    @property
    def transactional(self) -> bool:
        return not self.sql.lstrip().startswith("-- no-transaction")


@dataclass(frozen=True)
class SchemaStatus:
    applied: dict[int, str]
    pending: list[Migration]
    mismatched: list[int]
    unknown: list[int]

    @property
    def current(self) -> bool:
        """Every migration of this code applied as it is. Versions past them (``unknown``, with none of
        this code's pending) are a newer release's: older code runs on them (a rollback, a rolling deploy)."""
        return not (self.pending or self.mismatched)


def discover(folder: Path | None = None) -> list[Migration]:
    folder = folder or sql_dir() / "migrations"
    found: list[Migration] = []
    for path in sorted(folder.glob("*.sql")):
        m = _FILE.match(path.name)
        if not m:
            raise MigrationError(f"{path.name}: migration files are named NNNN_lower_snake.sql")
        data = path.read_bytes()
        found.append(Migration(int(m.group(1)), m.group(2), data.decode("utf-8"), hashlib.sha256(data).hexdigest()))
    for expected, mig in enumerate(found, start=1):
        if mig.version != expected:
            raise MigrationError(
                f"migration versions must be contiguous from 0001: expected {expected:04d}, found {mig.version:04d}"
            )
    return found


def _applied(conn: psycopg.Connection) -> dict[int, str]:
    exists = conn.execute("SELECT to_regclass('hookline.schema_migrations') IS NOT NULL").fetchone()
    if not exists or not exists[0]:
        return {}
    return {int(v): str(c) for v, c in conn.execute("SELECT version, checksum FROM hookline.schema_migrations")}


def status(dsn: str, migrations: list[Migration] | None = None) -> SchemaStatus:
    migrations = discover() if migrations is None else migrations
    with psycopg.connect(libpq_dsn(dsn), autocommit=True) as conn:
        applied = _applied(conn)
    return compare(applied, migrations)


def compare(applied: dict[int, str], migrations: list[Migration]) -> SchemaStatus:
    known = {m.version: m for m in migrations}
    return SchemaStatus(
        applied=applied,
        pending=[m for m in migrations if m.version not in applied],
        mismatched=[v for v, c in applied.items() if v in known and known[v].checksum != c],
        unknown=sorted(v for v in applied if v not in known),
    )


def _apply_when_locks_free(
    conn: psycopg.Connection,
    mig: Migration,
    record: str,
    on_wait: Callable[[Migration, int], None] | None,
) -> None:
    """Run ``mig`` and its version row in one transaction whose lock requests give up after
    :data:`~app.core.lockwait.LOCK_TIMEOUT`; tried again until :data:`~app.core.lockwait.LOCK_RETRY_SECONDS`
    (a DBA's long read of hookline.events blocks an ALTER TABLE, and every write would queue behind it)."""

    def apply() -> None:
        conn.execute(mig.sql.encode())
        conn.execute(record, (mig.version, mig.name, mig.checksum))

    def give_up(seconds: float) -> MigrationError:
        return MigrationError(
            f"{mig.version:04d}_{mig.name}: its tables stayed locked for {seconds:.0f} s "
            "(a long transaction on them: see pg_stat_activity); nothing of it was applied"
        )

    when_locks_free(conn, apply, give_up, None if on_wait is None else lambda tries: on_wait(mig, tries))


def _failed(mig: Migration, e: psycopg.Error, done: list[int]) -> MigrationError:
    """One line naming the migration that failed and where: the server's message, the file's line, the
    PL/pgSQL context and the hint. Not the DETAIL, which may quote a row's values."""
    diag = e.diag
    at = ""
    if diag.statement_position:
        at = f" at line {mig.sql[: int(diag.statement_position) - 1].count(chr(10)) + 1}"
    extra = "".join(
        f" ({label}: {' '.join(text.split())})"
        for label, text in (("in", diag.context), ("hint", diag.message_hint))
        if text
    )
    kept = f"; the {len(done)} applied before it stay applied" if done else ""
    if mig.transactional:
        outcome = "nothing of it was applied" + kept
    else:
        outcome = (
            "it ran outside a transaction (-- no-transaction): a failed CREATE INDEX CONCURRENTLY leaves an INVALID "
            "index, drop it before trying again" + kept
        )
    return MigrationError(
        f"{mig.version:04d}_{mig.name} failed{at}: {diag.message_primary or e.__class__.__name__} "
        f"[SQLSTATE {e.sqlstate}]{extra}; {outcome}"
    )


def migrate(
    dsn: str,
    migrations: list[Migration] | None = None,
    on_step: Callable[[int, int, Migration], None] | None = None,
    on_wait: Callable[[Migration, int], None] | None = None,
    on_queued: Callable[[], None] | None = None,
) -> list[Migration]:
    """Apply pending migrations; returns what was applied. Safe to run concurrently. Migrations of a
    newer release (versions past this code's, all of its own applied) are left as they are.

    ``on_step(n, total, migration)`` is called before each one (progress for long migrations);
    ``on_wait(migration, tries)`` each time its locks were not free (it is tried again); ``on_queued()``
    once when another run holds the migration lock, before waiting for it (a second release step)."""
    migrations = discover() if migrations is None else migrations
    done: list[Migration] = []
    with psycopg.connect(libpq_dsn(dsn), autocommit=True) as conn:
        row = conn.execute("SELECT pg_try_advisory_lock(%s)", (MIGRATION_LOCK_KEY,)).fetchone()
        if not (row and row[0]):
            if on_queued is not None:
                on_queued()
            conn.execute("SELECT pg_advisory_lock(%s)", (MIGRATION_LOCK_KEY,))
        try:
            with conn.transaction():
                conn.execute(_BOOTSTRAP)
            st = compare(_applied(conn), migrations)
            if st.mismatched:
                raise MigrationError(
                    "applied migration(s) changed on disk: "
                    + ", ".join(f"{v:04d}" for v in st.mismatched)
                    + " — migrations are forward-only; add a new file instead"
                )
            # Versions this code does not know, with all of its own applied: a newer release's (a
            # rollback runs the older release step; older code runs on the newer schema). Nothing to
            # do. With some of its own missing as well, the histories diverged.
            if st.unknown and st.pending:
                raise MigrationError(
                    "the database has migration(s) this code does not know: "
                    + ", ".join(f"{v:04d}" for v in st.unknown)
                    + ", and lacks "
                    + ", ".join(f"{m.version:04d}" for m in st.pending)
                    + " of this code's — were migrations of two branches applied?"
                )
            for n, mig in enumerate(st.pending, 1):
                if on_step is not None:
                    on_step(n, len(st.pending), mig)
                record = "INSERT INTO hookline.schema_migrations (version, name, checksum) VALUES (%s, %s, %s)"
                try:
                    if mig.transactional:
                        _apply_when_locks_free(conn, mig, record, on_wait)
                    else:
                        conn.execute(mig.sql.encode())
                        conn.execute(record, (mig.version, mig.name, mig.checksum))
                except psycopg.Error as e:
                    if e.sqlstate is None:  # the connection itself failed: the caller's "cannot reach"
                        raise
                    raise _failed(mig, e, [m.version for m in done]) from e
                done.append(mig)
        finally:
            conn.execute("SELECT pg_advisory_unlock(%s)", (MIGRATION_LOCK_KEY,))
    return done
