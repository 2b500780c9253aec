"""The worker's own queries (psycopg 3), named blocks from sql/queries/worker.sql.

A query is named by :data:`app.core.querynames.WorkerQuery` (a mistyped name is a type error) and
its row comes back as the typed record of ``app.core.records`` that the overloads below declare.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, Literal, overload

from psycopg.rows import dict_row
from psycopg.types.json import Jsonb
from psycopg_pool import AsyncConnectionPool

from app.core.db import libpq_dsn
from app.core.querynames import WorkerQuery
from app.core.records import ClaimRow, EventRow, HistoryRow, IdRow, LateReplyRow, PickupRow, StoredCallRow
from app.core.sqlfiles import NamedQueries

Q: NamedQueries[WorkerQuery] = NamedQueries("worker", WorkerQuery)


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
            check=AsyncConnectionPool.check_connection,
        )

    async def open(self) -> None:
        await self.pool.open(wait=False)

    async def close(self) -> None:
        await self.pool.close()

    @overload
    async def one(self, name: Literal["start_event"], **params: Any) -> EventRow | None: ...
    @overload
    async def one(self, name: Literal["succeeded_call"], **params: Any) -> StoredCallRow | None: ...
    @overload
    async def one(self, name: Literal["claim_action"], **params: Any) -> ClaimRow | None: ...
    @overload
    async def one(self, name: Literal["insert_call", "newer_processed"], **params: Any) -> IdRow | None: ...
    @overload
    async def one(self, name: Literal["pickup_delay"], **params: Any) -> PickupRow | None: ...
    @overload
    async def one(self, name: Literal["claim_late_reply"], **params: Any) -> LateReplyRow | None: ...

    async def one(self, name: WorkerQuery, **params: Any) -> Any:
        """The first row of a query that returns rows, as its typed record; None when there is none."""
        async with self.pool.connection() as conn, conn.cursor(row_factory=dict_row) as cur:
            await cur.execute(Q[name], _adapt(params))
            return await cur.fetchone() if cur.description else None

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
