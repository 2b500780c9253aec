"""Group commit for the worker: model calls stored (and events finished) together share a statement.

``await writer.store(params, closing)`` stores one ``insert_call`` row; with ``closing`` the same
statement finishes the event (``hookline.finish_event``). It is the worker's counterpart of the ingest
batcher (``app/web/batcher.py``), on the same scheduling (``app/core/groupcommit.py``: no timer, a
row waits only while another flush runs), with the same rules:

- A flush is one statement (``insert_calls``) outside a transaction block: one commit, one WAL flush
  and one wake-up of the NOTIFY listeners for the whole batch, instead of one per event.
- A row is answered only after that commit, and ``closing`` is marked carried only then (a failed
  write leaves the event to the failure path). A caller cancelled while its row is being written
  (worker shutdown) still learns the outcome first, so it never hands back an event that was finished.
- A row Postgres rejects fails alone: the flush falls back to one statement per row.
- A database error fails every row of the flush with that error (nothing of it was committed).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
from collections.abc import Mapping
from dataclasses import dataclass
from decimal import Decimal
from typing import TYPE_CHECKING, Any

import psycopg
from psycopg.rows import dict_row

from app.core.groupcommit import GroupCommit
from app.core.records import CallIdRow
from worker.closing import Closing, carried

if TYPE_CHECKING:
    from worker.db import WorkerDB

#: Errors that belong to one row's values, not to the database: that row fails, the others commit.
ROW_ERRORS: tuple[type[BaseException], ...] = (
    psycopg.errors.DataError,
    psycopg.errors.IntegrityError,
    psycopg.errors.ProgramLimitExceeded,
)


@dataclass(slots=True)
class _Item:
    params: Mapping[str, Any]
    fut: asyncio.Future[CallIdRow | None]


def _plain(value: Any) -> Any:
    """JSON for what ``json`` does not know: a Decimal (a price) as its exact text."""
    if isinstance(value, Decimal):
        return str(value)
    raise TypeError(f"{type(value).__name__} is not JSON serializable")


def rows_json(params: list[Mapping[str, Any]]) -> str:
    """The rows as ``insert_calls``'s one parameter: a JSON array, each row with its position ``n``.
    One ``json.dumps`` in C instead of psycopg dumping twenty arrays element by element."""
    return json.dumps([{**p, "n": n} for n, p in enumerate(params, start=1)], default=_plain, separators=(",", ":"))


class CallWriter(GroupCommit[_Item]):
    """Group commit of ``hookline.llm_calls`` rows (and their events' finish) for one worker process."""

    def __init__(self, db: WorkerDB, sql: str, *, max_flushes: int = 2, max_batch: int = 100) -> None:
        super().__init__(max_flushes=max_flushes, max_batch=max_batch)
        self._db = db
        self._sql = sql  # insert_calls
        self.stats["fallbacks"] = 0  # flushes that fell back to one row at a time

    async def store(self, params: Mapping[str, Any], closing: Closing | None = None) -> CallIdRow | None:
        """Store one call (``insert_call``'s parameters); marks ``closing`` carried once committed."""
        fut: asyncio.Future[CallIdRow | None] = asyncio.get_running_loop().create_future()
        self._add(_Item(params, fut))
        try:
            row = await asyncio.shield(fut)
        except asyncio.CancelledError:
            # Cancelled (shutdown) while the row is on its way: learn whether it committed before
            # the caller decides what to hand back.
            with contextlib.suppress(Exception):
                await fut
                carried(closing if params.get("finish_status") is not None else None)
            raise
        if params.get("finish_status") is not None:
            carried(closing)
        return row

    def _take(self) -> list[_Item]:
        """The next batch: at most one row per (event, pipeline), so every row's outcome is its own."""
        batch: list[_Item] = []
        rest: list[_Item] = []
        seen: set[tuple[Any, Any]] = set()
        for it in self._pending:
            key = (it.params["event_id"], it.params["pipeline"])
            if len(batch) < self.max_batch and key not in seen:
                seen.add(key)
                batch.append(it)
            else:
                rest.append(it)
        self._pending = rest
        return batch

    async def _write(self, batch: list[_Item]) -> None:
        try:
            rows = await self._insert([it.params for it in batch])
        except ROW_ERRORS as e:
            if len(batch) == 1:
                self._fail(batch[0], e)
                return
            self.stats["fallbacks"] += 1
            for it in batch:  # one statement per row: the rejected one fails alone
                try:
                    got = await self._insert([it.params])
                except ROW_ERRORS as e1:
                    self._fail(it, e1)
                else:
                    it.fut.set_result({"id": got[0]["id"]})
            return
        for it, r in zip(batch, rows, strict=True):
            it.fut.set_result({"id": r["id"]})

    async def _insert(self, params: list[Mapping[str, Any]]) -> list[dict[str, Any]]:
        async with self._db.pool.connection() as conn, conn.cursor(row_factory=dict_row) as cur:
            await cur.execute(self._sql, {"rows": rows_json(params)})
            return await cur.fetchall()

    def _fail(self, item: _Item, error: BaseException) -> None:
        if not item.fut.done():
            item.fut.set_exception(error)
            item.fut.exception()  # retrieved: a caller that is gone does not make it "never retrieved"
