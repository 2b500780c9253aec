"""The worker's own queries (psycopg 3), named blocks from sql/queries/worker.sql.

A query is named by :data:`app.core.querynames.WorkerQuery` (a mistyped name is a type error) and
its row comes back as the typed record of ``app.core.records`` that the overloads below declare.
"""

from __future__ import annotations

import time
import weakref
from collections.abc import Mapping
from typing import Any, Literal, overload

import psycopg
from psycopg import pq
from psycopg.rows import dict_row
from psycopg.types.json import Jsonb
from psycopg_pool import AsyncConnectionPool

from app.core.db import libpq_dsn
from app.core.querynames import WorkerQuery
from app.core.records import CallIdRow, ClaimRow, HistoryRow, IdRow, LateReplyRow, StartRow, StoredCallRow
from app.core.sqlfiles import NamedQueries
from worker.callwriter import CallWriter
from worker.closing import Closing
from worker.handover import Handover

Q: NamedQueries[WorkerQuery] = NamedQueries("worker", WorkerQuery)


#: A connection idle in the pool longer than this gets a real round-trip check before use.
IDLE_CHECK_SECONDS = 30.0
_returned: weakref.WeakKeyDictionary[psycopg.AsyncConnection[Any], float] = weakref.WeakKeyDictionary()


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
    if time.monotonic() - _returned.get(conn, 0.0) > IDLE_CHECK_SECONDS:
        await conn.execute("")


async def _stamp_return(conn: psycopg.AsyncConnection[Any]) -> None:
    """The pool's reset callback: remember when the connection came back."""
    _returned[conn] = time.monotonic()


def queue_pool(**kwargs: Any) -> AsyncConnectionPool:
    """procrastinate's connection pool (its ``pool_factory``): autocommit, and the same local check
    as the worker's own pool. procrastinate runs one statement per call (its SQL functions are atomic
    by themselves), so the ``BEGIN`` and ``COMMIT`` psycopg would wrap around each were two extra round
    trips, and psycopg_pool's check a third, for every job fetched and every job finished."""
    kwargs["check"] = check_connection
    return AsyncConnectionPool(**kwargs, configure=_autocommit, reset=_stamp_return)


async def _autocommit(conn: psycopg.AsyncConnection[Any]) -> None:
    await conn.set_autocommit(True)


def _adapt(params: Mapping[str, Any]) -> dict[str, Any]:
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
            reset=_stamp_return,
        )
        #: group commit of the calls stored (and events finished) by concurrent jobs
        self.calls = CallWriter(self, Q["insert_calls"], Q["notify_after_commit"])
        #: the jobs procrastinate handed over that an event's last write finished (worker.handover)
        self.handover = Handover()

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

    async def one(self, name: WorkerQuery, **params: Any) -> Any:
        """The first row of a query that returns rows, as its typed record; None when there is none."""
        async with self.pool.connection() as conn, conn.cursor(row_factory=dict_row) as cur:
            await cur.execute(Q[name], _adapt(params))
            return await cur.fetchone() if cur.description else None

    async def start(self, **params: Any) -> list[StartRow]:
        """``start_events``: the claimed jobs and their events, one row per job."""
        async with self.pool.connection() as conn, conn.cursor(row_factory=dict_row) as cur:
            await cur.execute(Q["start_events"], _adapt(params))
            return list(await cur.fetchall())  # type: ignore[arg-type]

    async def history(self, **params: Any) -> list[HistoryRow]:
        """``recent_for_key``: the last events of the same entity."""
        async with self.pool.connection() as conn, conn.cursor(row_factory=dict_row) as cur:
            await cur.execute(Q["recent_for_key"], _adapt(params))
            return list(await cur.fetchall())  # type: ignore[arg-type]

    async def run(self, name: WorkerQuery, **params: Any) -> int:
        """Run a statement; returns the number of rows it touched."""
        async with self.pool.connection() as conn, conn.cursor() as cur:
            await cur.execute(Q[name], _adapt(params))
            return cur.rowcount
