"""``type = "sql"``: call ``schema.function(event_id bigint, output jsonb)`` exactly once.

The call and the row that marks the action run succeeded commit in one transaction: a crash
before the commit rolls both back (the next run calls again, into a database that never saw the
first call), a commit makes both durable (a retry or a replay sees ``succeeded`` and skips). The
function name comes only from the configuration, is quoted as two identifiers, and is checked
against ``pg_proc`` when the worker starts (:func:`problems`).

Two runs of one event (a job taken for stalled while its worker lived) may call it at once: the
second record waits for the first's commit and finds the run no longer running. Its call is rolled
back; when the other run recorded ``succeeded``, the call happened exactly once and this run goes on
as if it had skipped the action, instead of failing the event.
"""

from __future__ import annotations

import datetime
import decimal
import re
from typing import Any

import psycopg
from psycopg import sql
from psycopg.rows import dict_row
from psycopg.types.json import Jsonb

from app.core.config import Config, SqlAction
from app.core.querynames import ActionsQuery
from app.core.sqlfiles import NamedQueries
from worker.actions.base import ActionContext
from worker.errors import PermanentError, TransientError

Q: NamedQueries[ActionsQuery] = NamedQueries("actions", ActionsQuery)
#: SQLSTATE classes and codes worth another attempt: rollbacks (serialization, deadlock),
#: resources, operator intervention (statement timeout, shutdown), connection, lock not available.
TRANSIENT_CLASSES = ("40", "53", "57", "08", "58")
TRANSIENT_CODES = ("55P03", "55006")
#: Where in a function an error arose, in the fixed forms Postgres writes the first lines of its context.
_PLACE = re.compile(r"^(PL/pgSQL function \S+ line \d+ at [A-Za-z ]+|SQL function \"[^\"\n]+\" statement \d+)$")


class _Lost(Exception):
    """The action run was no longer running when this call came to record it: roll the call back."""

    def __init__(self, status: str | None) -> None:
        super().__init__(status)
        self.status = status


def split(function: str) -> tuple[str, str]:
    schema, _, name = function.partition(".")
    return schema, name


def error_text(e: psycopg.Error) -> str:
    """The first line of a Postgres error, kept for ``action_runs.error``: a data exception (class 22:
    ``invalid input syntax for type integer: "…"``, ``value "…" is out of range for type integer``)
    quotes the input it refused, which is the event's or the model's, so there the quoted value is left
    out and the place in the function (its context: line and statement kind) is named instead."""
    first = (str(e).splitlines() or [""])[0]
    if not (e.sqlstate or "").startswith("22"):
        return first[:300]
    text = without_value(e.diag.message_primary or first)
    lines = (e.diag.context or "").splitlines()
    place = next((m.group(1) for m in map(_PLACE.match, lines) if m), None)
    return (f"{text} ({place})" if place else text)[:300]


def without_value(message: str) -> str:
    """A data exception's message with the input it quotes left out: from its first ``"`` to its last.
    Postgres writes the refused value whole between two quotes, line breaks and quotes of its own
    included, so the text before the first quote (``invalid input syntax for type integer: ``) and
    after the last (`` is out of range for type integer``) is Postgres's own. Without a closing quote,
    everything from the first one on is left out; the tail is also dropped if it holds a line break."""
    start = message.find('"')
    if start < 0:
        return message
    end = message.rfind('"')
    tail = message[end + 1 :] if end > start else ""
    if "\n" in tail or "\r" in tail:
        tail = ""
    return f"{message[:start]}<value not shown>{tail}"


def _plain(value: Any) -> Any:
    if value is None or isinstance(value, str | int | float | bool | list | dict):
        return value
    if isinstance(value, decimal.Decimal):
        return str(value)
    if isinstance(value, datetime.date | datetime.datetime):
        return value.isoformat()
    return str(value)


async def call_and_record(
    conn: psycopg.AsyncConnection[Any], action: SqlAction, ctx: ActionContext, run_id: int, timeout: float
) -> dict[str, Any]:
    """Call the function and mark action run ``run_id`` succeeded in one transaction."""
    try:
        return await _call(conn, action, ctx, timeout, run_id)
    except _Lost as lost:
        if lost.status == "succeeded":  # the other run's call committed: called exactly once
            return {
                "function": action.function,
                "skipped": "another run of this event called it; this call was rolled back",
            }
        what = f"sql action {ctx.action}"
        raise PermanentError(f"{what}: the action run is no longer running; the call was rolled back") from None


async def call_alone(
    conn: psycopg.AsyncConnection[Any], action: SqlAction, ctx: ActionContext, timeout: float
) -> dict[str, Any]:
    """Call the function in a transaction of its own, with no action run to record: an ``[[alerts]]``
    action (an alert is claimed once before it is sent, and is never retried)."""
    return await _call(conn, action, ctx, timeout, None)


async def _call(
    conn: psycopg.AsyncConnection[Any], action: SqlAction, ctx: ActionContext, timeout: float, run_id: int | None
) -> dict[str, Any]:
    what = f"sql action {ctx.action}"
    schema, name = split(action.function)
    call = sql.SQL("SELECT {}.{}(%(event_id)s::bigint, %(output)s::jsonb)").format(
        sql.Identifier(schema), sql.Identifier(name)
    )
    try:
        async with conn.transaction():
            await conn.execute("SELECT set_config('statement_timeout', %s, true)", (f"{int(timeout * 1000)}ms",))
            cur = await conn.execute(call, {"event_id": ctx.event_id, "output": Jsonb(ctx.output)})
            row = await cur.fetchone()
            result = {"function": action.function, "returned": _plain(row[0] if row else None)}
            if run_id is None:
                return result
            done = await conn.execute(Q["record_action_succeeded"], {"id": run_id, "result": Jsonb(result)})
            if done.rowcount != 1:  # another run finished it meanwhile: roll the call back
                now = await (await conn.execute(Q["action_run_status"], {"id": run_id})).fetchone()
                raise _Lost(now[0] if now else None)
    except psycopg.Error as e:
        state = e.sqlstate or ""
        msg = f"{what}: {action.function} failed: {state} {e.__class__.__name__}: {error_text(e)}"
        if isinstance(e, psycopg.OperationalError) or state[:2] in TRANSIENT_CLASSES or state in TRANSIENT_CODES:
            raise TransientError(msg) from None
        raise PermanentError(msg) from None
    return result


async def problems(conn: psycopg.AsyncConnection[Any], config: Config) -> list[str]:
    """Every ``sql`` action whose function is missing, of the wrong shape or not callable by us."""
    out: list[str] = []
    places = [(f"pipelines.{p}.actions.{i}", a) for p, pl in config.pipelines.items() for i, a in enumerate(pl.actions)]
    places += [(f"alerts.{i}", a) for i, a in enumerate(config.alerts)]
    for where, action in places:
        if not isinstance(action, SqlAction):
            continue
        key = f"{where}.function"
        schema, name = split(action.function)
        async with conn.cursor(row_factory=dict_row) as cur:
            await cur.execute(Q["sql_function_check"], {"schema": schema, "function": name})
            found = await cur.fetchall()
        if not found:
            out.append(f"{key}: no function {action.function} in pg_proc (see the README for what a DBA creates)")
            continue
        best = found[0]
        if not best["signature_ok"]:
            shapes = ", ".join(f"({r['arguments']})" for r in found)
            out.append(f"{key}: {action.function} must take (event_id bigint, output jsonb); found {shapes}")
        elif not best["is_function"]:
            out.append(f"{key}: {action.function} is a procedure; make it a function")
        elif not (best["schema_usage"] and best["can_execute"]):
            out.append(f"{key}: this role may not call {action.function} (GRANT USAGE ON SCHEMA and EXECUTE)")
    return out
