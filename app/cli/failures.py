"""How a command's failure becomes its one line on stderr: a database that cannot be reached or is not
migrated, or a database URL no client can use, said without the URL's password."""

from __future__ import annotations

import os
import re
import select
import socket
import sys

from app.core.settings import Settings


def database_problem(e: BaseException) -> str | None:
    """One line for a database that cannot be reached or is not migrated, or a database URL no client
    can use; None for any other error."""
    import asyncpg
    import psycopg

    from app.core.db import libpq_uri_rule

    missing = (psycopg.errors.UndefinedTable, psycopg.errors.UndefinedFunction, psycopg.errors.InvalidSchemaName)
    if isinstance(e, (*missing, asyncpg.UndefinedTableError, asyncpg.UndefinedFunctionError)):
        return "the database is not migrated (run `hookline migrate`)"
    if isinstance(e, psycopg.OperationalError) and e.diag.sqlstate is None:
        return f"cannot reach the database: {' '.join(str(e).split())}"
    # Settings refuses such a URL first (app/core/db.py, check_database_url); these catch one that got
    # past it. libpq's message quotes the URL, password included: only the rule it broke is shown.
    if isinstance(e, psycopg.ProgrammingError) and _raised_in(e, "psycopg.conninfo"):
        return f"the database URL {libpq_uri_rule(str(e))}"
    if isinstance(e, asyncpg.ClientConfigurationError) or (
        isinstance(e, ValueError) and _raised_in(e, "asyncpg.connect_utils")
    ):
        return f"the database URL is not usable: {' '.join(str(e).split())}"
    unreachable = (ConnectionError, socket.gaierror, TimeoutError, asyncpg.PostgresConnectionError)
    refused = (asyncpg.InvalidAuthorizationSpecificationError, asyncpg.InvalidCatalogNameError)
    if isinstance(e, (*unreachable, *refused)):
        return f"cannot reach the database: {' '.join(str(e).split()) or e.__class__.__name__}"
    return None


def _raised_in(e: BaseException, module: str) -> bool:
    """Whether ``e`` was raised inside ``module`` (a client parsing its connection string)."""
    tb = e.__traceback__
    while tb is not None:
        if tb.tb_frame.f_globals.get("__name__") == module:
            return True
        tb = tb.tb_next
    return False


def _without_secrets(text: str, settings: Settings | None) -> str:
    """``text`` with the DATABASE_URL password (if any) blotted out: the one in the user-info part
    and any ``password=`` / ``sslpassword=`` query value, as written and percent-decoded. Found
    without a URL parser, so a URL malformed enough to make one fail is blotted out too."""
    from urllib.parse import unquote

    dsn = settings.dsn() if settings is not None else os.environ.get("DATABASE_URL")
    if not dsn:
        return text
    secrets = re.findall(r"[?&](?:ssl)?password=([^&#]*)", dsn)
    _scheme, sep, rest = dsn.partition("://")
    ats = [i for i, c in enumerate(rest) if c == "@"] if sep else []
    for userinfo in (rest[:i] for i in ats):  # an unescaped @ may be in the password, or in the query
        if ":" in userinfo:
            secrets.append(userinfo.partition(":")[2])
    for secret in sorted({s for raw in secrets for s in (raw, unquote(raw)) if s}, key=len, reverse=True):
        text = text.replace(secret, "***")
    return text


class OutputClosed(Exception):
    """The reader of a command's output went away (``hookline tail | head -3``, after its third line)."""


def output_closed(e: BaseException) -> bool:
    """Whether ``e`` is our stdout's reader having gone, not a database connection's broken pipe (a
    ``BrokenPipeError`` is a ``ConnectionError``): stdout then polls as an error."""
    if isinstance(e, OutputClosed):
        return True
    if not isinstance(e, BrokenPipeError):
        return False
    try:
        poll = select.poll()
        poll.register(sys.stdout.fileno(), select.POLLOUT)
        return any(events & (select.POLLERR | select.POLLHUP) for _fd, events in poll.poll(0))
    except (AttributeError, OSError, ValueError):  # no poll() here, or no real stdout
        return False


def quiet_exit() -> int:
    """End a command whose reader went away without a word: what is left of its output goes nowhere (the
    interpreter's last flush would otherwise print ``Exception ignored … BrokenPipeError``), and the
    status is 141, the one a shell shows for a writer killed by SIGPIPE."""
    devnull = os.open(os.devnull, os.O_WRONLY)
    os.dup2(devnull, sys.stdout.fileno())
    os.close(devnull)
    return 141
