"""Group commit for ingest: requests arriving together share one statement and one commit.

``await batcher.insert(row) -> (event_id, duplicate)`` is the whole interface. ``row`` holds the
arguments of ``insert_event`` (``sql/queries/ingest.sql``), source and delivery id first.

- A row waits only while other flushes are running: when fewer than ``max_flushes`` are in flight, a
  flush starts on the next turn of the event loop and takes every row queued by then (no timer, so a
  lone request pays nothing extra). Under load, rows queue behind the running flushes and the next
  flush takes them all, up to ``max_batch``.
- A flush is one statement, ``store_events`` (one multi-row ``INSERT … ON CONFLICT DO NOTHING``), sent
  outside any transaction block: Postgres commits it by itself before it answers, so a flush is one
  round trip (no ``BEGIN``/``COMMIT``). The statement-level triggers of migration 0008 defer the
  batch's jobs in one call, so a batch costs one fsync, whatever its size.
- Its wake-ups (hookline_events ``insert``, procrastinate's ``job_inserted``) are sent right after the
  commit, once every row has its answer, by one more short statement (``notify_events_stored``, with
  the ids stored; migration 0018): a commit that NOTIFYs holds Postgres's notification queue lock
  through its WAL flush, so every other notifying transaction (the worker's claims, other batches)
  would wait for this batch's fsync. A batch with a synchronous request (``respond_sync``) notifies
  inside its transaction: its caller waits for the worker, which then wakes one round trip sooner. If
  the wake-ups cannot be sent, the events are stored all the same and workers find them at their
  next poll.
- Every row is answered after that commit (never before durability). Rows that already existed were
  committed by someone else: a batch of only duplicates inserts nothing, so it writes no WAL, sends no
  NOTIFY and needs no fsync (a duplicate in a batch with new rows is answered with them).
- A second delivery of a key still in flight in this process waits for the first one's outcome
  instead of queueing a second insert that Postgres would block on the first one's row lock.
- A delivery this process saw committed (stored by it, or found stored) within ``known_seconds`` is
  answered from memory: no statement at all, so a retry storm costs verification and parsing only.
  Only committed keys are remembered (never a failed or unanswered row), and hookline never deletes
  event rows, so the answer is the one Postgres would give; the age limit bounds what a row deleted by
  hand can cost (a re-send in that window is called a duplicate). ``known_size`` caps the memory
  (oldest out first; 0 turns it off).
- A row Postgres rejects (``DataError`` …) fails its own request only: the flush falls back to one
  savepoint per row and commits the others.
- Two web processes inserting the same new deliveries in opposite orders can deadlock; Postgres
  aborts one batch, which is written again (rows stay in arrival order: ordering keys need it).
- A database error fails every request of the flush with that error (the caller answers 503; nothing
  of the flush was committed). The rows a committed statement returned are answered first, so an error
  after the commit (the lookup of deliveries that other sessions committed meanwhile) fails only those.
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
from collections import OrderedDict
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from typing import Any

import asyncpg

from app.core.groupcommit import GroupCommit
from app.core.querynames import IngestQuery
from app.core.sqlfiles import NamedQueries

Q: NamedQueries[IngestQuery] = NamedQueries("ingest", IngestQuery)
log = logging.getLogger("hookline.ingest")

Key = tuple[str, str]
DEADLOCK_RETRIES = 3
#: A batch's bodies and payloads, in bytes, past its first row (see Batcher._take).
MAX_BATCH_BYTES = 64 * 1024 * 1024
#: Errors that leave a sent batch's outcome unknown: its answer, not its statement, may be what was lost.
UNKNOWN_OUTCOME: tuple[type[BaseException], ...] = (
    TimeoutError,
    OSError,
    asyncpg.exceptions.ConnectionDoesNotExistError,
    asyncpg.exceptions.InterfaceError,
)
Result = tuple[int | None, bool]

#: Errors that belong to one row (its values), not to the database: that row gets them, others commit.
#: Ingest answers a DataError or ProgramLimitExceeded 400; an integrity violation (no constraint checks
#: a sender's values) and any other database error 503, as nothing of that request was stored.
ROW_ERRORS: tuple[type[BaseException], ...] = (
    asyncpg.exceptions.DataError,
    asyncpg.exceptions.IntegrityConstraintViolationError,
    asyncpg.exceptions.ProgramLimitExceededError,
)


@dataclass(slots=True)
class _Item:
    row: Sequence[Any]
    fut: asyncio.Future[Result]
    #: the bytes it adds to its batch's statement (its body, and the text of its payload)
    size: int = 0


#: Positions of the jsonb values (headers, payload): sent as JSON text, because asyncpg would read a
#: payload that is itself a JSON array as one more dimension of the array parameter.
_JSON_COLUMNS = (6, 8)


class RawJson(str):
    """A jsonb value given as its JSON text already (the request body ingest parsed): sent as is."""

    __slots__ = ()


def _json(value: Any) -> str | None:
    if value is None or type(value) is RawJson:
        return None if value is None else str(value)
    return json.dumps(value, separators=(",", ":"))


def _size(row: Sequence[Any]) -> int:
    """The bytes a row adds to its batch's statement, at most: its texts and body, and for a payload
    not given as its JSON text (a form, a UTF-16 body) six times the body, the most ``json.dumps``
    makes of it (``\\u00XX`` for one byte)."""
    size = sum(len(v) for v in row if isinstance(v, bytes | str))
    if not isinstance(row[8], str) and isinstance(row[7], bytes):
        size += 6 * len(row[7])
    return size


def _sync(it: _Item) -> bool:
    """The row is a synchronous request (``respond_sync``, the last column)."""
    return bool(it.row[13])


def _columns(items: Sequence[_Item]) -> list[list[Any]]:
    """The rows as the 14 parallel arrays ``store_events`` unnests."""
    cols = [list(col) for col in zip(*(it.row for it in items), strict=True)]
    for i in _JSON_COLUMNS:
        cols[i] = [_json(v) for v in cols[i]]
    return cols


class Batcher(GroupCommit[_Item]):
    """Group commit of ``hookline.events`` rows for one web process (one event loop)."""

    def __init__(
        self,
        pool: Callable[[], Awaitable[Any]],
        *,
        max_flushes: int = 4,
        max_batch: int = 500,
        known_size: int = 20_000,
        known_seconds: float = 600.0,
    ) -> None:
        super().__init__(max_flushes=max_flushes, max_batch=max_batch)
        self._pool = pool
        self._inflight: dict[Key, asyncio.Future[Result]] = {}
        #: Keys known to be committed: event id and when this process learned it, oldest first.
        self._known: OrderedDict[Key, tuple[int, float]] = OrderedDict()
        self._known_size = known_size
        self._known_seconds = known_seconds
        #: Counters for tests and the bench: flushes, rows, the largest batch, duplicates answered from
        #: memory, wake-ups sent after a commit and those that could not be, rows found stored after their
        #: batch went unanswered.
        self.stats |= {
            "fallbacks": 0,
            "deadlocks": 0,
            "known_hits": 0,
            "notified_after": 0,
            "notify_failures": 0,
            "stored_after_all": 0,
        }

    def known(self, source: str, delivery_id: str) -> int | None:
        """The event id of a delivery this process saw committed within ``known_seconds``, else None:
        a re-send answered with no statement and no lock."""
        key: Key = (source, delivery_id)
        known = self._known.get(key)
        if known is None:
            return None
        if time.monotonic() - known[1] < self._known_seconds:
            self.stats["known_hits"] += 1
            return known[0]
        del self._known[key]  # too old to vouch for: ask Postgres again
        return None

    async def insert(self, row: Sequence[Any]) -> Result:
        """Store ``row`` (``insert_event``'s arguments) durably; ``(event_id, duplicate)``."""
        key: Key = (row[0], row[1])
        event_id = self.known(row[0], row[1])
        if event_id is not None:  # committed, and this process saw it
            return event_id, True
        first = self._inflight.get(key)
        if first is not None:  # same delivery already on its way: its outcome is ours
            event_id, _ = await asyncio.shield(first)
            return event_id, True
        fut: asyncio.Future[Result] = asyncio.get_running_loop().create_future()
        self._inflight[key] = fut
        self._add(_Item(row, fut, _size(row)))
        return await asyncio.shield(fut)

    def _take(self) -> list[_Item]:
        """The next batch: the oldest items, at most ``max_batch`` and, past the first, MAX_BATCH_BYTES
        of bodies and payloads (Postgres refuses a statement's parameters over 1 GiB, and closes the
        connection: every request of the batch would get a 503)."""
        n, size = 0, 0
        for it in self._pending[: self.max_batch]:
            size += it.size
            if n and size > MAX_BATCH_BYTES:
                break
            n += 1
        batch, self._pending = self._pending[:n], self._pending[n:]
        return batch

    def _settle(self, it: _Item, result: Result | None = None, error: BaseException | None = None) -> None:
        """Answer one row (its request, and any same-key request waiting on it): once, here only."""
        key = (it.row[0], it.row[1])
        if self._inflight.get(key) is it.fut:
            del self._inflight[key]
        if it.fut.done():
            return
        if error is not None:
            it.fut.set_exception(error)
            it.fut.exception()  # retrieved: a failure nobody awaits any more (client gone) is not logged
        else:
            assert result is not None
            it.fut.set_result(result)
            if result[0] is not None and self._known_size:
                self._remember(key, result[0])

    def note_committed(self, source: str, delivery_id: str, event_id: int) -> None:
        """A delivery stored by another statement than the group commit's (``on_invalid = "store"``):
        its re-sends are answered by :meth:`known` as the group commit's rows are."""
        if self._known_size:
            self._remember((source, delivery_id), event_id)

    def _remember(self, key: Key, event_id: int) -> None:
        """Note a committed key (a row just stored, or found stored); past ``known_size`` the oldest goes."""
        known = self._known
        known.pop(key, None)
        known[key] = (event_id, time.monotonic())
        if len(known) > self._known_size:
            known.popitem(last=False)  # O(1); a plain dict's next(iter(…)) crawls over its deleted slots

    def _fail(self, item: _Item, error: BaseException) -> None:
        self._settle(item, error=error)

    async def _write(self, batch: list[_Item]) -> None:
        pool = await self._pool()
        sent = False
        try:
            async with pool.acquire() as conn:
                sent = True
                await self._write_retrying(conn, batch)
        except UNKNOWN_OUTCOME:
            if sent:
                await self._stored_after_all(pool, batch)
            raise  # the rows not found: nothing of theirs was stored

    async def _stored_after_all(self, pool: Any, batch: list[_Item]) -> None:
        """The batch's statement was sent but its answer never came (the client's timeout fired, the
        connection broke): it may have committed all the same, e.g. a commit that was waiting for a
        synchronous standby when the timeout's cancel reached it. Its rows are looked up on another
        connection: each one found is stored, and answered so (not "nothing was stored"). If the look-up
        fails too, the error stands for every row."""
        open_rows = [it for it in batch if not it.fut.done()]
        if not open_rows:
            return
        try:
            async with pool.acquire() as conn:
                found = await conn.fetch(
                    Q["find_events"], [it.row[0] for it in open_rows], [it.row[1] for it in open_rows]
                )
                ids = {(r["source"], r["delivery_id"]): r["id"] for r in found}
                stored = []
                for it in open_rows:
                    event_id = ids.get((it.row[0], it.row[1]))
                    if event_id is not None:
                        self.stats["stored_after_all"] += 1
                        self._settle(it, (event_id, False))
                        stored.append(event_id)
                if stored:  # their NOTIFYs may be lost with the reply: wake the workers (a spare one is harmless)
                    await self._notify_stored(conn, stored)
        except Exception as e:
            log.warning("could not look up a batch whose commit went unanswered: %s", e.__class__.__name__)

    async def _write_retrying(self, conn: Any, batch: list[_Item]) -> None:
        for attempt in range(DEADLOCK_RETRIES):
            try:
                await self._write_once(conn, batch)
                return
            except asyncpg.exceptions.DeadlockDetectedError:
                # Two processes inserting the same new keys in opposite orders: Postgres aborted
                # this batch (nothing of it committed); the other one went through. Again.
                self.stats["deadlocks"] += 1
                if attempt == DEADLOCK_RETRIES - 1:
                    raise

    async def _write_once(self, conn: Any, batch: list[_Item]) -> None:
        try:
            # One statement, no BEGIN/COMMIT round trips: outside a transaction block Postgres commits
            # it on its own, and asyncpg returns only after ReadyForQuery, i.e. after that commit.
            rows = await conn.fetch(Q["store_events"], *_columns(batch))
            got = {int(r["n"]) - 1: (r["id"], not r["inserted"]) for r in rows}
            inline = any(_sync(it) for it in batch)  # the statement notified inside its transaction
            silent = [] if inline else [event_id for event_id, dup in got.values() if not dup]
        except ROW_ERRORS as e:
            if len(batch) == 1:
                self._settle(batch[0], error=e)
                return
            self.stats["fallbacks"] += 1
            got = await self._one_by_one(conn, batch)
            # one statement per row: each notified inside the transaction only for a synchronous row
            silent = [event_id for n, (event_id, dup) in got.items() if not dup and not _sync(batch[n])]
        for n, (event_id, dup) in got.items():  # committed: answered before anything else can fail
            self._settle(batch[n], (event_id, dup))
        missing = [it for n, it in enumerate(batch) if n not in got and not it.fut.done()]
        if missing:  # the conflicting delivery committed while our statement ran
            found = await conn.fetch(Q["find_events"], [it.row[0] for it in missing], [it.row[1] for it in missing])
            ids = {(r["source"], r["delivery_id"]): r["id"] for r in found}
            for it in missing:
                self._settle(it, (ids.get((it.row[0], it.row[1])), True))
        if silent:
            await self._notify_stored(conn, silent)

    async def _notify_stored(self, conn: Any, ids: list[int]) -> None:
        """The wake-ups of the committed rows ``ids``, which ``store_events`` left to its writer.

        Sent after every row of the batch has its answer. If they cannot be sent, the events are stored
        all the same: workers find their jobs at their next poll.
        """
        try:
            await conn.fetchval(Q["notify_events_stored"], ids)
            self.stats["notified_after"] += 1
        except (asyncpg.PostgresError, asyncpg.InterfaceError, OSError) as e:
            self.stats["notify_failures"] += 1
            log.warning("stored %d events, but could not wake listeners: %s", len(ids), e.__class__.__name__)

    async def _one_by_one(self, conn: Any, batch: list[_Item]) -> dict[int, Result]:
        """One savepoint per row: a rejected row fails alone, the rest commit together."""
        got: dict[int, Result] = {}
        async with conn.transaction():
            for n, it in enumerate(batch):
                try:
                    async with conn.transaction():  # SAVEPOINT
                        rows = await conn.fetch(Q["store_events"], *_columns([it]))
                except ROW_ERRORS as e:
                    self._settle(it, error=e)
                    continue
                for r in rows:
                    got[n] = (r["id"], not r["inserted"])
        return got


__all__ = ["ROW_ERRORS", "Batcher", "RawJson"]
