"""The dashboard's live stream: server-sent events fed by the process's one LISTEN connection.

No polling: the stream waits on :meth:`EventListener.subscribe` (NOTIFY from migration 0005), gathers
the notices that arrive within a short batch window, reads those events' rows by id (and the counts by
status, shared by every stream of the process: :class:`SharedCounts`) in one go, and sends one
``update`` message. A quiet stream sends a comment line now and then
so proxies keep it open, and ends after ``MAX_STREAM_SECONDS`` or as soon as the server begins
shutting down (``AppState.stopping``); the browser's EventSource reconnects
by itself (``retry:``), the page re-reads what it shows once the new stream says ``hello`` (changes
made while no stream listened reach no stream), and reloads on ``resync``.
"""

from __future__ import annotations

import asyncio
import json
import time
import weakref
from collections.abc import AsyncIterator
from typing import Any

from app.web.admin import data
from app.web.listener import Notice
from app.web.state import AppState, PoolHolder

#: Notices that arrive this close together become one message.
BATCH_SECONDS = 0.2
KEEPALIVE_SECONDS = 15.0
#: Counts by status are re-read at most this often per web process (all its streams share them).
COUNTS_SECONDS = 2.0
#: A stream is closed after this long (a quiet one too, not at its next keepalive); the browser
#: reconnects 2 s later (``retry:``) and, on the new stream's ``hello``, re-reads what the page shows.
MAX_STREAM_SECONDS = 300.0
#: At most this many rows of one large INSERT batch are sent (the newest).
MAX_ROWS = 100


def sse(event: str, payload: dict[str, Any]) -> bytes:
    return f"event: {event}\ndata: {json.dumps(payload, separators=(',', ':'))}\n\n".encode()


def ids_of(notices: list[Notice]) -> tuple[list[int], bool]:
    """The event ids the notices name (newest MAX_ROWS), and whether a reconnect asks for a resync."""
    ids: set[int] = set()
    resync = False
    for n in notices:
        if n.op == "status" and n.event_id is not None:
            ids.add(n.event_id)
        elif n.op == "insert":
            low, high = n.data.get("min_id"), n.data.get("max_id")
            if isinstance(low, int) and isinstance(high, int):
                ids.update(range(max(low, high - MAX_ROWS + 1), high + 1))
        elif n.op == "reconnected":
            resync = True
    return sorted(ids)[-MAX_ROWS:], resync


class SharedCounts:
    """The counts by status that every dashboard stream of one web process sends: read at most once
    every ``COUNTS_SECONDS``, whatever the number of open tabs, and handed to each stream that has
    notices to count."""

    def __init__(self) -> None:
        self._lock = asyncio.Lock()
        self._tried_at = float("-inf")  # time.monotonic() when the last read began, successful or not
        #: time.monotonic() when the read of ``counts`` began: they count every change notified before.
        self.read_at = float("-inf")
        self.counts: dict[str, int] = {}
        #: Reads made (for tests and debugging).
        self.reads = 0

    def next_read_in(self) -> float:
        """Seconds until a new read may begin."""
        return max(0.0, self._tried_at + COUNTS_SECONDS - time.monotonic())

    async def refresh(self, pool: Any) -> None:
        """Read the counts, unless a read began less than ``COUNTS_SECONDS`` ago (streams that wait
        on the lock meanwhile get the read the first one makes)."""
        async with self._lock:
            if self.next_read_in() > 0:
                return
            started = self._tried_at = time.monotonic()
            self.reads += 1
            counts = await data.tile_counts(pool)
            self.read_at, self.counts = started, counts

    def postpone(self) -> None:
        """The database was away: no stream reads again before ``COUNTS_SECONDS``."""
        self._tried_at = max(self._tried_at, time.monotonic())


_shared: weakref.WeakKeyDictionary[PoolHolder, SharedCounts] = weakref.WeakKeyDictionary()


def shared_counts(state: AppState) -> SharedCounts:
    """The process's :class:`SharedCounts` (one per app, keyed by its pool holder)."""
    found = _shared.get(state.db)
    if found is None:
        found = _shared[state.db] = SharedCounts()
    return found


async def _drain(queue: asyncio.Queue[Notice], first: Notice) -> list[Notice]:
    notices = [first]
    deadline = time.monotonic() + BATCH_SECONDS
    while (left := deadline - time.monotonic()) > 0:
        try:
            async with asyncio.timeout(left):
                notices.append(await queue.get())
        except TimeoutError:
            break
    while not queue.empty():
        notices.append(queue.get_nowait())
    return notices


async def _next(queue: asyncio.Queue[Notice], stopping: asyncio.Event) -> Notice | None:
    """The next notice, or None as soon as ``stopping`` is set."""
    getter = asyncio.ensure_future(queue.get())
    stopper = asyncio.ensure_future(stopping.wait())
    try:
        await asyncio.wait({getter, stopper}, return_when=asyncio.FIRST_COMPLETED)
    finally:
        getter.cancel()
        stopper.cancel()
    if getter.done() and not getter.cancelled():
        return getter.result()
    return None


async def updates(state: AppState) -> AsyncIterator[bytes]:
    """The body of ``GET /admin/stream``.

    Rows of the events named in notices go out at once; the counts by status (shared by the process's
    streams, read at most every ``COUNTS_SECONDS``) with each new read while there are notices they do
    not count yet, until one read after the last notice is sent, so the last change is always counted.
    """
    ended = time.monotonic() + MAX_STREAM_SECONDS
    shared = shared_counts(state)
    sent_read_at = float("-inf")  # SharedCounts.read_at of the counts this stream sent last
    uncounted: float | None = None  # time.monotonic() after the newest notice not counted yet arrived
    async with state.listener.subscribe() as queue:
        connected = await state.listener.wait_connected(5.0)
        yield b"retry: 2000\n\n"
        yield sse("hello", {"listening": connected})
        while time.monotonic() < ended and not state.stopping.is_set():
            wait = KEEPALIVE_SECONDS
            if uncounted is not None:
                wait = 0.0 if shared.read_at > sent_read_at else shared.next_read_in()
            wait = max(0.0, min(wait, ended - time.monotonic()))  # a quiet stream ends on time too
            try:
                async with asyncio.timeout(wait):
                    first: Notice | None = await _next(queue, state.stopping)
            except TimeoutError:
                first = None
            if state.stopping.is_set():
                return  # the server is shutting down: end now, the browser reconnects to another process
            ids, resync = ids_of(await _drain(queue, first)) if first is not None else ([], False)
            if resync:
                yield sse("resync", {})
            if ids:
                uncounted = time.monotonic()
            send_counts = uncounted is not None and (shared.read_at > sent_read_at or shared.next_read_in() == 0)
            if not ids and not send_counts:
                if first is None:
                    yield b": keepalive\n\n"
                continue
            message: dict[str, Any] = {"events": []}
            try:
                pool = await state.db.ensure()
                if ids:
                    message["events"] = await data.events_by_ids(pool, ids)
                if send_counts and shared.read_at <= sent_read_at:
                    await shared.refresh(pool)
            except Exception:  # the database is away: the page shows it, the next notice retries
                if send_counts:
                    shared.postpone()
                yield sse("error", {"detail": "database unavailable"})
                continue
            if send_counts and uncounted is not None and shared.read_at > sent_read_at:
                message["counts"] = dict(shared.counts)
                sent_read_at = shared.read_at
                if sent_read_at >= uncounted:
                    uncounted = None
            if ids or "counts" in message:
                yield sse("update", message)
