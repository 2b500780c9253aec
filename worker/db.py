"""The worker's own queries (psycopg 3), named blocks from sql/queries/worker.sql."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from psycopg.rows import dict_row
from psycopg.types.json import Jsonb
from psycopg_pool import AsyncConnectionPool

from app.core.db import libpq_dsn
from app.core.sqlfiles import queries

Q = queries("worker")


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

    async def one(self, name: str, **params: Any) -> dict[str, Any] | None:
        async with self.pool.connection() as conn, conn.cursor(row_factory=dict_row) as cur:
            await cur.execute(Q[name], _adapt(params))
            return await cur.fetchone() if cur.description else None

    async def all(self, name: str, **params: Any) -> list[dict[str, Any]]:
        async with self.pool.connection() as conn, conn.cursor(row_factory=dict_row) as cur:
            await cur.execute(Q[name], _adapt(params))
            return await cur.fetchall() if cur.description else []

    async def run(self, name: str, **params: Any) -> int:
        async with self.pool.connection() as conn, conn.cursor() as cur:
            await cur.execute(Q[name], _adapt(params))
            return cur.rowcount
