"""Group commit for the worker: model calls stored (and events finished) together share a statement.

``await writer.store(params, closing)`` stores one ``insert_call`` row; with ``closing`` the same
statement finishes the event (the flush's events and jobs in one call, ``hookline.finish_events``,
once its calls are stored). It is the worker's counterpart of the ingest
batcher (``app/web/batcher.py``), on the same scheduling (``app/core/groupcommit.py``: no timer, a
row waits only while another flush runs), with the same rules:

- A flush is one statement (``insert_calls``) outside a transaction block: one commit and one WAL flush
  for the whole batch, instead of one per event.
- Its status and answer NOTIFYs follow right after that commit (``notify_after_commit``, migration
  0015), in a transaction that does not wait for a WAL flush: Postgres holds its one notification
  queue lock through the whole commit of a notifying transaction, so a durable commit that notified
  made every other notifying commit (ingest, claims, other workers) queue behind its fsync. The rows
  are answered first; a worker that dies in between leaves listeners untold (the rows are stored).
  A flush holding the answer of a ``respond = "sync"`` pipeline (``store(…, inline=True)``) notifies
  inside its transaction instead, as ingest does for a batch with a synchronous request: the request
  waiting for that answer hears of it as the commit ends, one round trip sooner.
- A row is answered only after that commit, and ``closing`` is marked carried only then, and only
  when the row finished its event (a failed write leaves the event to the failure path; a row whose
  run no longer holds the event's claim, migration 0047, finished nothing). A caller cancelled while
  its row is being written (worker shutdown) still learns the outcome first, so it never hands back an
  event that was finished.
- A row Postgres rejects fails alone: the flush falls back to one statement per row.
- A database error fails every row of the flush with that error (nothing of it was committed).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
from collections.abc import Mapping
from dataclasses import dataclass
from decimal import Decimal
from typing import TYPE_CHECKING, Any

import psycopg
from psycopg.rows import dict_row

from app.core.groupcommit import GroupCommit
from app.core.records import CallIdRow
from app.core.status import CallStatus
from worker.closing import Closing, carried

if TYPE_CHECKING:
    from worker.db import WorkerDB

log = logging.getLogger("hookline.worker")

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
    inline: bool = False  # a synchronous request waits for this row: notify inside the transaction


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

    def __init__(self, db: WorkerDB, sql: str, notify_sql: str, *, max_flushes: int = 2, max_batch: int = 100) -> None:
        super().__init__(max_flushes=max_flushes, max_batch=max_batch)
        self._db = db
        self._sql = sql  # insert_calls
        self._notify_sql = notify_sql  # notify_after_commit
        self.stats["fallbacks"] = 0  # flushes that fell back to one row at a time
        self.stats["notify_failures"] = 0  # committed batches whose NOTIFYs could not be sent
        self.stats["notified_after"] = 0  # notify_after_commit statements sent

    async def store(
        self, params: Mapping[str, Any], closing: Closing | None = None, *, inline: bool = False
    ) -> CallIdRow | None:
        """Store one call (``insert_call``'s parameters); marks ``closing`` carried once committed.
        ``inline``: a synchronous request waits for this row, so its flush notifies inside its
        transaction."""
        fut: asyncio.Future[CallIdRow | None] = asyncio.get_running_loop().create_future()
        self._add(_Item(params, fut, inline))
        try:
            row = await asyncio.shield(fut)
        except asyncio.CancelledError:
            # Cancelled (shutdown) while the row is on its way: learn whether it committed before
            # the caller decides what to hand back.
            with contextlib.suppress(Exception):
                done = await fut
                if done is not None and done.get("finished"):
                    carried(closing)
            raise
        if row is not None and row.get("finished"):  # not when the run's claim was no longer current
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
        async with self._db.pool.connection() as conn:
            written: list[tuple[Mapping[str, Any], dict[str, Any]]] = []  # to notify after the commit
            inline = any(it.inline for it in batch)  # the statement notifies inside its transaction
            try:
                rows = await self._insert(conn, [it.params for it in batch], inline=inline)
            except ROW_ERRORS as e:
                if len(batch) == 1:
                    self._fail(batch[0], e)
                    return
                self.stats["fallbacks"] += 1
                for it in batch:  # one statement per row: the rejected one fails alone
                    try:
                        got = await self._insert(conn, [it.params], inline=it.inline)
                    except ROW_ERRORS as e1:
                        self._fail(it, e1)
                    else:
                        it.fut.set_result({"id": got[0]["id"], "finished": got[0]["finished"]})
                        if not it.inline:
                            written.append((it.params, got[0]))
            else:
                for it, r in zip(batch, rows, strict=True):
                    it.fut.set_result({"id": r["id"], "finished": r["finished"]})
                    if not inline:
                        written.append((it.params, r))
            await self._notify(conn, written)

    async def _insert(
        self, conn: psycopg.AsyncConnection[Any], params: list[Mapping[str, Any]], *, inline: bool
    ) -> list[dict[str, Any]]:
        async with conn.cursor(row_factory=dict_row) as cur:
            notify = "inline" if inline else "after_commit"
            await cur.execute(self._sql, {"rows": rows_json(params), "notify": notify})
            return await cur.fetchall()

    async def _notify(
        self, conn: psycopg.AsyncConnection[Any], written: list[tuple[Mapping[str, Any], dict[str, Any]]]
    ) -> None:
        """The NOTIFYs the committed rows' triggers left out: each finished event's status, then each
        answer stored (``hookline.notify_event_changes``, which the triggers use too)."""
        status_ids: list[int] = []
        statuses: list[str] = []
        answer_ids: list[int] = []
        pipelines: list[str] = []
        for params, row in written:
            if row.get("finished"):  # not a row whose run's claim was no longer current
                status_ids.append(params["event_id"])
                statuses.append(str(params["finish_status"]))
            if row["id"] is not None and params.get("status") in (CallStatus.SUCCEEDED, CallStatus.SIMULATED):
                answer_ids.append(params["event_id"])
                pipelines.append(str(params["pipeline"]))
        if not status_ids and not answer_ids:
            return
        self.stats["notified_after"] += 1
        try:
            await conn.execute(
                self._notify_sql,
                {
                    "status_ids": status_ids,
                    "statuses": statuses,
                    "answer_ids": answer_ids,
                    "answer_pipelines": pipelines,
                },
            )
        except psycopg.Error as e:  # the rows are stored; only the listeners' wake-up is lost
            self.stats["notify_failures"] += 1
            log.warning("stored %d call(s) but could not notify listeners (%s)", len(written), e.__class__.__name__)

    def _fail(self, item: _Item, error: BaseException) -> None:
        if not item.fut.done():
            item.fut.set_exception(error)
            item.fut.exception()  # retrieved: a caller that is gone does not make it "never retrieved"
