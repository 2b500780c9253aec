"""The worker's pools check a connection before lending it without a round trip, unless it may have
sat in the pool for :data:`worker.db.IDLE_CHECK_SECONDS`; the time is taken when it is lent, so the
pools need no reset callback and put each connection back inline (worker.db.check_connection)."""

from __future__ import annotations

from typing import Any

import pytest

from app.core.db import libpq_dsn
from worker import db


async def test_a_connection_lent_long_ago_pays_the_round_trip_check_and_a_recent_one_does_not(
    db_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    pool = db.queue_pool(conninfo=libpq_dsn(db_url), min_size=1, max_size=1, open=False)
    await pool.open(wait=True)
    try:
        assert pool._reset is None  # put back inline, not through one of the pool's worker tasks
        async with pool.connection() as conn:  # a new connection: checked with the round trip, then stamped
            await conn.execute("SELECT 1")
        sent: list[Any] = []
        execute = conn.execute

        async def counted(query: Any, *args: Any, **kwargs: Any) -> Any:
            sent.append(query)
            return await execute(query, *args, **kwargs)

        monkeypatch.setattr(conn, "execute", counted)
        async with pool.connection() as again:
            assert again is conn
        assert sent == []  # lent a moment ago: read locally only
        db._lent[conn] -= db.IDLE_CHECK_SECONDS + 1  # as if it had been lent, and so idle, that long ago
        async with pool.connection():
            pass
        assert sent == [""]  # the empty query
        async with pool.connection():
            pass
        assert sent == [""]  # stamped again by that lend
    finally:
        await pool.close()


async def test_the_worker_pool_needs_no_reset_callback(db_url: str) -> None:
    worker_db = db.WorkerDB(db_url)
    assert worker_db.pool._reset is None
    assert worker_db.pool._check is db.check_connection
