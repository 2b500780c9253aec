"""The worker's own queries (psycopg 3), named blocks from sql/queries/worker.sql.

A query is named by :data:`app.core.querynames.WorkerQuery` (a mistyped name is a type error) and
its row comes back as the typed record of ``app.core.records`` that the overloads below declare.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
import weakref
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping
from typing import Any, Literal, TypeVar, overload

import psycopg
from psycopg import pq
from psycopg.rows import dict_row
from psycopg.types.json import Jsonb, set_json_loads
from psycopg_pool import AsyncConnectionPool, PoolClosed, PoolTimeout

from app.core import jsonvalues
from app.core.db import libpq_dsn
from app.core.querynames import WorkerQuery
from app.core.records import (
    CallIdRow,
    ClaimRow,
    FinishedRow,
    HistoryRow,
    IdRow,
    LateReplyRow,
    StartRow,
    StoredCallRow,
)
from app.core.sqlfiles import NamedQueries
from worker.callwriter import CallWriter
from worker.closing import Closing
from worker.handover import Handover

Q: NamedQueries[WorkerQuery] = NamedQueries("worker", WorkerQuery)
log = logging.getLogger("hookline.worker")
T = TypeVar("T")

#: SQLSTATEs that say the server went away, not that the statement was wrong: class 08 (connection
#: exceptions) and an administrator's or a crash's shutdown (57P01-57P03).
_AWAY_STATES = ("57P01", "57P02", "57P03")
#: The longest wait between two tries of a write that must land (:meth:`WorkerDB.durable`).
DURABLE_MAX_DELAY = 10.0
#: Errors the server raised about one try of a statement, which the same statement may pass when tried
#: again: a serialization failure or deadlock (class 40), a lock not available (55P03), a statement
#: canceled, as by statement_timeout (57014). A write that must land tries these this many times.
TRANSIENT_STATES = ("55P03", "57014")
TRANSIENT_TRIES = 5


def transient(exc: BaseException) -> bool:
    """A statement's error that trying the same statement again may not meet (:data:`TRANSIENT_STATES`)."""
    state = exc.sqlstate if isinstance(exc, psycopg.Error) else None
    return state is not None and (state.startswith("40") or state in TRANSIENT_STATES)


def database_away(exc: BaseException) -> bool:
    """The database could not be reached, or the connection broke: a failure of the infrastructure,
    never of the event (no connection from the pool in time, a refused or lost connection, a server
    shutting down). Errors the server raised about a statement (a constraint, a lock or statement
    timeout) are not."""
    if isinstance(exc, PoolClosed):  # the worker is closing its pool: nothing more will land
        return False
    if isinstance(exc, PoolTimeout):
        return True
    if isinstance(exc, psycopg.OperationalError):
        state = exc.sqlstate
        return state is None or state.startswith("08") or state in _AWAY_STATES
    return False


#: A connection idle in the pool longer than this gets a real round-trip check before use.
IDLE_CHECK_SECONDS = 30.0
#: when each connection was last lent (its time in the pool since is at most the time since then)
_lent: weakref.WeakKeyDictionary[psycopg.AsyncConnection[Any], float] = weakref.WeakKeyDictionary()


async def check_connection(conn: psycopg.AsyncConnection[Any]) -> None:
    """The pool's check before lending a connection, without a round trip on the busy path.

    psycopg_pool's own ``check_connection`` sends an empty query every time: one extra round trip per
    statement. Here a connection is first read locally (``consume_input`` takes in whatever the
    server sent while it sat in the pool: the FATAL and EOF of a restart or a terminated backend),
    and only one idle for more than :data:`IDLE_CHECK_SECONDS` pays the empty query. Raising discards
    the connection; the pool then lends (or opens) another.
    """
    if conn.closed or conn.broken:
        raise psycopg.OperationalError("the connection is closed")
    # raises OperationalError on a connection the server closed: the first read takes in what it sent
    # (a FATAL on termination), the second meets the end of the stream
    conn.pgconn.consume_input()
    conn.pgconn.consume_input()
    if conn.pgconn.status != pq.ConnStatus.OK:
        raise psycopg.OperationalError("the connection is bad")
    # A connection last lent less than IDLE_CHECK_SECONDS ago cannot have sat in the pool longer. The
    # time is stamped here, at the lend, not by a ``reset`` callback at the return: psycopg_pool hands
    # every connection of a pool with a reset callback to one of its worker tasks to be put back (a
    # queue and a task switch per statement, about 6 % of a pooled statement's CPU) and puts it back
    # inline otherwise. A connection held out of the pool for that long pays the check once more.
    now = time.monotonic()
    if now - _lent.get(conn, 0.0) > IDLE_CHECK_SECONDS:
        await conn.execute("")
    _lent[conn] = now


def queue_pool(**kwargs: Any) -> AsyncConnectionPool:
    """procrastinate's connection pool (its ``pool_factory``): autocommit, and the same local check
    as the worker's own pool. procrastinate runs one statement per call (its SQL functions are atomic
    by themselves), so the ``BEGIN`` and ``COMMIT`` psycopg would wrap around each were two extra round
    trips, and psycopg_pool's check a third, for every job fetched and every job finished."""
    kwargs["check"] = check_connection
    return AsyncConnectionPool(**kwargs, configure=_queue_connection)


async def _queue_connection(conn: psycopg.AsyncConnection[Any]) -> None:
    """Autocommit, and the worker's own JSON reader (:func:`_read_json`): the fetch claims a lone job's
    event in its statement and returns its payload on this connection."""
    await conn.set_autocommit(True)
    await _read_json(conn)


async def _read_json(conn: psycopg.AsyncConnection[Any]) -> None:
    """Every number a watched row can hold reads (app.core.jsonvalues): an event whose payload did not
    failed its job again and again, and left the events claimed with it ``processing``."""
    set_json_loads(jsonvalues.loads, conn)


def json_params(params: Mapping[str, Any]) -> dict[str, Any]:
    """Statement parameters as the worker's queries take them: dicts and lists as jsonb."""
    return {k: Jsonb(v) if isinstance(v, dict | list) else v for k, v in params.items()}


class WorkerDB:
    def __init__(self, url: str, *, min_size: int = 1, max_size: int = 10) -> None:
        self.pool = AsyncConnectionPool(
            libpq_dsn(url),
            min_size=min_size,
            max_size=max_size,
            open=False,
            kwargs={"autocommit": True, "application_name": "hookline-worker"},
            check=check_connection,
            configure=_read_json,
        )
        #: group commit of the calls stored (and events finished) by concurrent jobs
        self.calls = CallWriter(self, Q["insert_calls"], Q["notify_after_commit"])
        #: the jobs procrastinate handed over that an event's last write finished (worker.handover)
        self.handover = Handover()
        #: set when the worker is asked to stop: a write that must land gives up after its current try
        self.stopping = asyncio.Event()

    async def durable(self, write: Callable[[], Awaitable[T]], what: str, *, one_statement: bool = False) -> T:
        """``write()``, tried again with backoff for as long as the database is away
        (:func:`database_away`), for a write that must not be lost: what a model call that was paid
        for answered, and its usage. With ``one_statement`` (``write`` is one statement, which such an
        error rolls back whole), a :func:`transient` error of the statement (a deadlock, a lock or
        statement timeout) is tried again up to TRANSIENT_TRIES times in all; a write of several
        statements is not (one of them that committed would be applied twice). Any other error is
        raised at once.

        A cancellation (the pipeline's ``timeout_seconds``, procrastinate ending the job when its worker
        loop restarts after a database restart) does not stop the write: the caller waits until it
        landed, then the cancellation goes on. Only a requested worker stop (:attr:`stopping`) ends
        the tries: the current one is the last, and its error is raised.
        """
        task = asyncio.ensure_future(self._keep_trying(write, what, TRANSIENT_TRIES if one_statement else 1))
        try:
            return await asyncio.shield(task)
        except asyncio.CancelledError:
            with contextlib.suppress(Exception):
                await task
            raise

    async def _keep_trying(self, write: Callable[[], Awaitable[T]], what: str, transient_tries: int) -> T:
        delay = 0.25
        tries = 0
        refused = 0  # tries that met a transient error of the statement
        while True:
            try:
                result = await write()
            except Exception as e:
                away = database_away(e)
                if not away:
                    refused += 1
                if self.stopping.is_set() or not (away or (transient(e) and refused < transient_tries)):
                    raise
                tries += 1
                if tries == 1:
                    log.warning(
                        "could not store %s (%s: %s); trying again %s",
                        what,
                        type(e).__name__,
                        e,
                        "until the database is back" if away else f"(at most {transient_tries} tries)",
                    )
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self.stopping.wait(), delay)
                delay = min(delay * 2, DURABLE_MAX_DELAY)
            else:
                if tries:
                    log.info("stored %s after %d failed tries", what, tries)
                return result

    async def open(self) -> None:
        await self.pool.open(wait=False)

    async def close(self) -> None:
        await self.calls.close()
        await self.pool.close()

    async def store_call(
        self, params: Mapping[str, Any], closing: Closing | None = None, *, inline: bool = False
    ) -> CallIdRow | None:
        """``insert_call`` through the group commit; with finish parameters (``closing.params``) the
        same statement finishes the event, and ``closing`` is marked carried once it committed.
        ``inline``: a synchronous request waits for this row (its flush notifies inside its transaction)."""
        try:
            return await self.calls.store(params, closing, inline=inline)
        finally:
            if closing is not None and closing.done:
                self.handover.finished(closing.job_id)

    @overload
    async def one(self, name: Literal["succeeded_call"], **params: Any) -> StoredCallRow | None: ...
    @overload
    async def one(self, name: Literal["claim_action"], **params: Any) -> ClaimRow | None: ...
    @overload
    async def one(self, name: Literal["newer_processed", "micro_item_stuck"], **params: Any) -> IdRow | None: ...
    @overload
    async def one(self, name: Literal["insert_call"], **params: Any) -> CallIdRow | None: ...
    @overload
    async def one(self, name: Literal["claim_late_reply"], **params: Any) -> LateReplyRow | None: ...
    @overload
    async def one(self, name: Literal["finish_event"], **params: Any) -> FinishedRow | None: ...

    async def one(self, name: WorkerQuery, **params: Any) -> Any:
        """The first row of a query that returns rows, as its typed record; None when there is none."""
        async with self.pool.connection() as conn, conn.cursor(row_factory=dict_row) as cur:
            await cur.execute(Q[name], json_params(params))
            return await cur.fetchone() if cur.description else None

    async def start(self, **params: Any) -> list[StartRow]:
        """``start_events``: the claimed jobs and their events, one row per job."""
        async with self.pool.connection() as conn, conn.cursor(row_factory=dict_row) as cur:
            await cur.execute(Q["start_events"], json_params(params))
            return list(await cur.fetchall())  # type: ignore[arg-type]

    async def history(self, **params: Any) -> list[HistoryRow]:
        """``recent_for_key``: the last events of the same entity."""
        async with self.pool.connection() as conn, conn.cursor(row_factory=dict_row) as cur:
            await cur.execute(Q["recent_for_key"], json_params(params))
            return list(await cur.fetchall())  # type: ignore[arg-type]

    async def rows(self, name: WorkerQuery, **params: Any) -> list[dict[str, Any]]:
        """Every row a statement returns, as a dict."""
        async with self.pool.connection() as conn, conn.cursor(row_factory=dict_row) as cur:
            await cur.execute(Q[name], json_params(params))
            return list(await cur.fetchall()) if cur.description else []

    @contextlib.asynccontextmanager
    async def transaction(self) -> AsyncIterator[Callable[..., Awaitable[list[dict[str, Any]]]]]:
        """One transaction on one connection: yields ``rows(name, **params)``, :meth:`rows` run in it.
        It commits when the block ends, and rolls back if the block raises."""
        async with self.pool.connection() as conn, conn.transaction(), conn.cursor(row_factory=dict_row) as cur:

            async def rows(name: WorkerQuery, **params: Any) -> list[dict[str, Any]]:
                await cur.execute(Q[name], json_params(params))
                return list(await cur.fetchall()) if cur.description else []

            yield rows

    async def run(self, name: WorkerQuery, **params: Any) -> int:
        """Run a statement; returns the number of rows it touched."""
        async with self.pool.connection() as conn, conn.cursor() as cur:
            await cur.execute(Q[name], json_params(params))
            return cur.rowcount
