"""Watched tables: row changes of business tables as events (source ``db``).

The work happens in Postgres: ``hookline.watch(table, ...)`` installs AFTER ROW triggers that write
the event row in the writer's own transaction (``sql/migrations/0003_watch.sql``). This module is the
Python side of it:

* :class:`WatchSpec`, one ``[[watch]]`` entry of hookline.toml;
* :func:`apply_watches`, run by ``hookline migrate`` after the migrations: installs or updates every
  entry, all in one transaction. Re-applying an identical entry touches nothing; a changed entry
  replaces the triggers. Tables watched in the database but absent from the file are left alone
  (a DBA may have watched them from psql); ``hookline unwatch TABLE`` removes them;
* :func:`add_cli`, the ``hookline watch`` / ``unwatch`` / ``watched`` subcommands.

Postgres errors (no primary key, a condition that is not one valid expression, ...) come back as
:class:`WatchError` with Postgres' own message on one line.
"""

from __future__ import annotations

import argparse
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import psycopg
from psycopg.rows import dict_row
from pydantic import ValidationError

from app.core.db import libpq_dsn
from app.core.errors import HooklineError
from app.core.lockwait import when_locks_free
from app.core.querynames import WatchQuery
from app.core.settings import Settings
from app.core.sqlfiles import NamedQueries
from app.core.watchspec import WatchSpec

WATCH_SQL: NamedQueries[WatchQuery] = NamedQueries("watch", WatchQuery)


class WatchError(HooklineError):
    """hookline.watch()/unwatch() refused (the message is Postgres'), or the database is unreachable."""

    code = "watch_error"


@dataclass(frozen=True)
class Watched:
    """A row of the view hookline.watched."""

    table: str
    event_types: tuple[str, ...]
    operations: tuple[str, ...]
    columns: tuple[str, ...] | None
    condition: str | None
    key_columns: tuple[str, ...]
    exclude_columns: tuple[str, ...]
    max_value_bytes: int | None
    active: bool
    attention: str | None = None

    @classmethod
    def from_row(cls, row: dict[str, Any]) -> Watched:
        return cls(
            table=row["table_name"],
            event_types=tuple(row["event_types"]),
            operations=tuple(row["operations"]),
            columns=tuple(row["columns"]) if row["columns"] is not None else None,
            condition=row["condition"],
            key_columns=tuple("(dropped)" if c is None else c for c in row["key_columns"]),
            exclude_columns=tuple(row["exclude_columns"]),
            max_value_bytes=row["max_value_bytes"],
            active=bool(row["active"]),
            attention=row.get("attention"),
        )


@dataclass(frozen=True)
class WatchResult:
    """What hookline.watch() did: ``created``, ``replaced`` or ``unchanged``, and its WARNINGs."""

    outcome: str
    watched: Watched
    warnings: tuple[str, ...] = ()

    def line(self) -> str:
        return f"{self.watched.table}: {self.outcome} (events {', '.join(self.watched.event_types)})"

    def lines(self) -> list[str]:
        """:meth:`line`, then one ``  warning: …`` line per WARNING (e.g. inheritance children)."""
        return [self.line(), *(f"  warning: {w}" for w in self.warnings)]


# ---------------------------------------------------------------------------------------------
# database side
# ---------------------------------------------------------------------------------------------


def _one_line(text: str) -> str:
    return " ".join(text.split())


def _error(e: psycopg.Error, table: str | None = None) -> WatchError:
    """Postgres' message (and hint), on one line."""
    if isinstance(e, psycopg.OperationalError) and e.diag.sqlstate is None:
        return WatchError(f"cannot reach the database: {_one_line(str(e))}")
    primary = e.diag.message_primary or str(e)
    if table is not None and not primary.startswith("hookline."):
        primary = f"{table}: {primary}"
    hint = e.diag.message_hint
    return WatchError(_one_line(primary + (f" (hint: {hint})" if hint else "")))


def _connect(dsn: str) -> psycopg.Connection[dict[str, Any]]:
    try:
        return psycopg.connect(libpq_dsn(dsn), autocommit=True, row_factory=dict_row)
    except psycopg.Error as e:
        raise _error(e) from None


def _watch(conn: psycopg.Connection[dict[str, Any]], spec: WatchSpec) -> WatchResult:
    sql = WATCH_SQL
    warnings: list[str] = []

    def on_notice(diag: psycopg.errors.Diagnostic) -> None:
        if diag.severity_nonlocalized == "WARNING" and diag.message_primary:
            warnings.append(_one_line(diag.message_primary))

    conn.add_notice_handler(on_notice)
    try:
        row = conn.execute(sql["watch"], spec.params()).fetchone()
        info = conn.execute(sql["watched_table"], {"table": spec.table}).fetchone()
    except psycopg.errors.LockNotAvailable:
        raise  # the table is busy: when_locks_free tries again
    except psycopg.Error as e:
        raise _error(e, spec.table) from None
    finally:
        conn.remove_notice_handler(on_notice)
    assert row is not None and info is not None
    return WatchResult(str(row["result"]), Watched.from_row(info), tuple(warnings))


#: ``on_wait(table, tries)``: a watch's table was locked by another transaction; it is tried again.
OnWait = Callable[[str, int], None]


def _busy(what: str, kept: str) -> Callable[[float], WatchError]:
    def give_up(seconds: float) -> WatchError:
        return WatchError(
            f"{what}: the table stayed locked by another transaction for {seconds:.0f} s "
            f"(a long transaction on it: see pg_stat_activity); {kept}"
        )

    return give_up


def _waiting(on_wait: OnWait | None, table: Callable[[], str]) -> Callable[[int], None] | None:
    return None if on_wait is None else lambda tries: on_wait(table(), tries)


def watch_table(dsn: str, spec: WatchSpec, on_wait: OnWait | None = None) -> WatchResult:
    """Watch one table (``hookline watch``): create, replace or leave its triggers as they are.

    Its lock requests give up after a short ``lock_timeout`` and it is tried again (see
    :mod:`app.core.lockwait`), so it never queues the table's writes behind a long transaction."""
    with _connect(dsn) as conn:
        return when_locks_free(
            conn,
            lambda: _watch(conn, spec),
            _busy(spec.table, "its watch was not changed"),
            _waiting(on_wait, lambda: spec.table),
        )


def apply_watches(dsn: str, specs: Sequence[WatchSpec], on_wait: OnWait | None = None) -> list[str]:
    """Apply the ``[[watch]]`` entries of hookline.toml in one transaction (``hookline migrate``).

    Returns one line per entry (``public.orders: created (events public.orders.update)``), each followed
    by a ``  warning: …`` line per WARNING of hookline.watch() (inheritance children). Identical
    entries change nothing (no DDL, no lock on the table); a changed entry replaces the triggers; a
    failing entry rolls all of them back and raises :class:`WatchError`. Watches that are in the
    database but not in the file stay: psql users may have added them.

    A lock request on a watched table gives up after a short ``lock_timeout``; every entry is then
    rolled back and tried again (``on_wait(table, tries)``) until the table is free, for a bounded time
    (:mod:`app.core.lockwait`): a trigger's DDL waiting behind a long transaction would have queued
    every write to the table.
    """
    if not specs:
        return []
    current = [specs[0].table]  # the entry being applied when a lock was not granted

    def apply_all() -> list[str]:
        lines: list[str] = []
        seen: dict[str, str] = {}
        for spec in specs:
            current[0] = spec.table
            result = _watch(conn, spec)
            table = result.watched.table
            if table in seen:
                raise WatchError(
                    f"[[watch]] lists {table} twice (as {seen[table]!r} and {spec.table!r}); merge the entries"
                )
            seen[table] = spec.table
            lines.extend(result.lines())
        return lines

    with _connect(dsn) as conn:
        return when_locks_free(
            conn,
            apply_all,
            lambda seconds: _busy(current[0], "no [[watch]] entry was changed")(seconds),
            _waiting(on_wait, lambda: current[0]),
        )


def unwatch_table(dsn: str, table: str, on_wait: OnWait | None = None) -> bool:
    """Stop watching a table; False when it was not watched. Stored events stay. Waits for the table's
    lock as :func:`watch_table` does."""

    def unwatch() -> bool:
        try:
            row = conn.execute(WATCH_SQL["unwatch"], {"table": table}).fetchone()
        except psycopg.errors.LockNotAvailable:
            raise
        except psycopg.Error as e:
            raise _error(e, table) from None
        assert row is not None
        return bool(row["removed"])

    with _connect(dsn) as conn:
        return when_locks_free(conn, unwatch, _busy(table, "it is still watched"), _waiting(on_wait, lambda: table))


def list_watched(dsn: str) -> list[Watched]:
    """Every watched table, from the view hookline.watched."""
    with _connect(dsn) as conn:
        try:
            rows = conn.execute(WATCH_SQL["watched"]).fetchall()
        except psycopg.Error as e:
            raise _error(e) from None
    return [Watched.from_row(r) for r in rows]


# ---------------------------------------------------------------------------------------------
# CLI: hookline watch | unwatch | watched
# ---------------------------------------------------------------------------------------------

Handler = Callable[[Settings, argparse.Namespace], int]


def _db_url(settings: Settings) -> tuple[str, Any]:
    from app.cli.embedded import resolve_database_url

    return resolve_database_url(settings.dsn(), settings.home)


def spec_from_args(args: argparse.Namespace) -> WatchSpec:
    """The WatchSpec that ``hookline watch`` flags describe; bad flags are a one-line WatchError."""
    data: dict[str, Any] = {"table": args.table}
    for flag, key in (
        ("on", "on"),
        ("columns", "columns"),
        ("when", "when"),
        ("exclude", "exclude_columns"),
        ("max_value_bytes", "max_value_bytes"),
        ("key_columns", "key_columns"),
    ):
        value = getattr(args, flag, None)
        if value is not None:
            data[key] = value
    try:
        return WatchSpec.model_validate(data)
    except ValidationError as e:
        flags = {"exclude_columns": "exclude", "table": "TABLE"}
        parts = []
        for err in e.errors():
            where = ".".join(str(p) for p in err["loc"][:1])
            flag = flags.get(where, where).replace("_", "-")
            name = flag if flag == "TABLE" else f"--{flag}"
            msg = err["msg"].removeprefix("Value error, ")
            parts.append(f"{name}: {msg}" if where else msg)
        raise WatchError("; ".join(parts)) from None


def wait_line(table: str, tries: int) -> str | None:
    """What to say while a watch waits for its table's lock: on the first try and every tenth."""
    if tries == 1 or tries % 10 == 0:
        return f"{table}: the table is locked by another transaction; trying again …"
    return None


def print_wait(table: str, tries: int) -> None:
    line = wait_line(table, tries)
    if line is not None:
        print(line, flush=True)


def cmd_watch(settings: Settings, args: argparse.Namespace) -> int:
    spec = spec_from_args(args)
    url, _server = _db_url(settings)
    result = watch_table(url, spec, on_wait=print_wait)
    print("\n".join(result.lines()))
    if result.outcome != "unchanged":
        print(
            f'pipelines match them with source = "db" and events = {list(result.watched.event_types)}; '
            f"this watch is not in hookline.toml: `hookline migrate` leaves it alone, `hookline unwatch` removes it"
        )
    return 0


def cmd_unwatch(settings: Settings, args: argparse.Namespace) -> int:
    url, _server = _db_url(settings)
    if unwatch_table(url, args.table, on_wait=print_wait):
        print(f"{args.table}: no longer watched (events already stored stay)")
    else:
        print(f"{args.table}: was not watched")
    return 0


def format_watched(items: Sequence[Watched]) -> str:
    """hookline.watched as a plain text table."""
    if not items:
        return "no table is watched (hookline watch TABLE, or [[watch]] in hookline.toml)"
    header = ("table", "on", "columns", "when", "key", "exclude", "max bytes", "active")
    rows = [header] + [
        (
            w.table,
            ",".join(w.operations),
            ",".join(w.columns) if w.columns else "*",
            w.condition or "",
            ",".join(w.key_columns),
            ",".join(w.exclude_columns),
            str(w.max_value_bytes or ""),
            "yes" if w.active else "NO",
        )
        for w in items
    ]
    widths = [max(len(r[i]) for r in rows) for i in range(len(header))]
    lines = ["  ".join(cell.ljust(widths[i]) for i, cell in enumerate(r)).rstrip() for r in rows]
    lines += [f"{w.table}: {w.attention}" for w in items if w.attention]
    return "\n".join(lines)


def cmd_watched(settings: Settings, args: argparse.Namespace) -> int:
    url, _server = _db_url(settings)
    print(format_watched(list_watched(url)))
    return 0


def add_cli(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> dict[str, Handler]:
    """Add ``watch``, ``unwatch`` and ``watched`` to the ``hookline`` parser; returns their handlers."""
    w = subparsers.add_parser(
        "watch",
        help="turn a table's row changes into events (source db)",
        description="Install (or update) the triggers that turn a table's row changes into hookline events "
        "of type SCHEMA.TABLE.OPERATION, source db. Same as SELECT hookline.watch(...) in psql.",
    )
    w.add_argument("table", help="table name, optionally schema-qualified (public.orders)")
    w.add_argument("--on", help="operations to watch: insert,update,delete (default: all)")
    w.add_argument("--columns", help="UPDATE events only when one of these columns changed: a,b")
    w.add_argument("--when", help="SQL condition on OLD/NEW, e.g. \"NEW.status = 'cancelled'\"")
    w.add_argument("--exclude", help="columns left out of the payload: a,b")
    w.add_argument("--max-value-bytes", type=int, help="cut longer values in the payload")
    w.add_argument("--key-columns", help="columns identifying a row (default: the primary key): a,b")
    u = subparsers.add_parser("unwatch", help="stop turning a table's row changes into events")
    u.add_argument("table")
    subparsers.add_parser("watched", help="list watched tables (the view hookline.watched)")
    return {"watch": cmd_watch, "unwatch": cmd_unwatch, "watched": cmd_watched}
