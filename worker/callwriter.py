"""Group commit for the worker: model calls stored (and events finished) together share a statement.

``await writer.store(params, closing)`` stores one ``insert_call`` row; with ``closing`` the same
statement finishes the event (``hookline.finish_event``). It is the worker's counterpart of the ingest
batcher (``app/web/batcher.py``), with the same rules:

- A row waits only while other flushes run: with fewer than ``max_flushes`` in flight a flush starts on
  the next turn of the event loop and takes every row queued by then (no timer: a lone event pays
  nothing extra). Under load rows queue behind the running flushes and the next one takes them all.
- A flush is one statement (``insert_calls``) outside a transaction block: one commit, one WAL flush
  and one wake-up of the NOTIFY listeners for the whole batch, instead of one per event.
- A row is answered only after that commit, and ``closing`` is marked carried only then (a failed
  write leaves the event to the failure path). A caller cancelled while its row is being written
  (worker shutdown) still learns the outcome first, so it never hands back an event that was finished.
- A row Postgres rejects fails alone: the flush falls back to one ``insert_call`` per row.
- A database error fails every row of the flush with that error (nothing of it was committed).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
from collections.abc import Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import psycopg
from psycopg.rows import dict_row

from app.core.records import CallIdRow
from worker.closing import Closing, carried

if TYPE_CHECKING:
    from worker.db import WorkerDB

#: The columns of ``insert_calls``, in its order (``insert_call``'s parameters).
COLUMNS = (
    "event_id",
    "pipeline",
    "model",
    "status",
    "request",
    "response",
    "output",
    "error",
    "input_tokens",
    "output_tokens",
    "cache_creation_input_tokens",
    "cache_read_input_tokens",
    "cost_usd",
    "latency_ms",
    "request_id",
    "requested_model",
    "route",
    "stop_reason",
    "finish_status",
    "finish_dry_run",
    "finish_detail",
    "finish_job_id",
)
_JSON = frozenset({"request", "response", "output"})

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


def _json(value: Any) -> Any:
    """A jsonb value as JSON text (dicts and lists; anything else goes as it is, like ``_adapt``)."""
    return json.dumps(value, separators=(",", ":")) if isinstance(value, dict | list) else value


def columns(params: list[Mapping[str, Any]]) -> dict[str, list[Any]]:
    """The rows as ``insert_calls``'s parallel arrays."""
    return {c: [_json(p[c]) if c in _JSON else p[c] for p in params] for c in COLUMNS}


class CallWriter:
    """Group commit of ``hookline.llm_calls`` rows (and their events' finish) for one worker process."""

    def __init__(self, db: WorkerDB, sql: str, *, max_flushes: int = 2, max_batch: int = 100) -> None:
        self._db = db
        self._sql = sql  # insert_calls
        self.max_flushes = max(1, max_flushes)
        self.max_batch = max(1, max_batch)
        self._pending: list[_Item] = []
        self._flushes = 0
        self._scheduled = False
        self._tasks: set[asyncio.Task[None]] = set()
        #: flushes, rows, the largest batch seen, and flushes that fell back to one row at a time
        self.stats = {"flushes": 0, "rows": 0, "max_batch_seen": 0, "fallbacks": 0}

    async def store(self, params: Mapping[str, Any], closing: Closing | None = None) -> CallIdRow | None:
        """Store one call (``insert_call``'s parameters); marks ``closing`` carried once committed."""
        fut: asyncio.Future[CallIdRow | None] = asyncio.get_running_loop().create_future()
        self._pending.append(_Item(params, fut))
        self._kick()
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

    def _kick(self) -> None:
        if self._pending and not self._scheduled and self._flushes < self.max_flushes:
            self._flushes += 1
            self._scheduled = True
            task = asyncio.create_task(self._flush())
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)

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

    async def _flush(self) -> None:
        batch: list[_Item] = []
        self._scheduled = False
        try:
            batch = self._take()
            self._kick()  # more than one batch waiting: the next flush starts alongside
            if batch:
                self.stats["flushes"] += 1
                self.stats["rows"] += len(batch)
                self.stats["max_batch_seen"] = max(self.stats["max_batch_seen"], len(batch))
                await self._write(batch)
        except BaseException as e:  # the database is unavailable, or we are being cancelled
            for it in batch:
                if not it.fut.done():
                    it.fut.set_exception(e)
                    it.fut.exception()  # retrieved: a caller that is gone does not make it "never retrieved"
            if not isinstance(e, Exception):
                raise
        finally:
            self._flushes -= 1
            self._kick()

    async def _write(self, batch: list[_Item]) -> None:
        if len(batch) == 1:  # the single-row statement: nothing to share
            it = batch[0]
            try:
                it.fut.set_result(await self._db.one("insert_call", **it.params))
            except ROW_ERRORS as e:
                it.fut.set_exception(e)
                it.fut.exception()
            return
        try:
            async with self._db.pool.connection() as conn, conn.cursor(row_factory=dict_row) as cur:
                await cur.execute(self._sql, columns([it.params for it in batch]))
                rows = await cur.fetchall()
        except ROW_ERRORS:
            self.stats["fallbacks"] += 1
            for it in batch:
                try:
                    it.fut.set_result(await self._db.one("insert_call", **it.params))
                except ROW_ERRORS as e:
                    it.fut.set_exception(e)
                    it.fut.exception()
            return
        got = {int(r["n"]): r for r in rows}
        for n, it in enumerate(batch, start=1):
            r = got.get(n)
            it.fut.set_result({"id": r["id"]} if r is not None else None)

    async def close(self) -> None:
        """Wait for the flushes in flight (nothing is left half-answered)."""
        while self._tasks:
            with contextlib.suppress(Exception):
                await asyncio.gather(*list(self._tasks), return_exceptions=True)
