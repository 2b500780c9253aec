"""The dashboard's live stream: server-sent events fed by the process's one LISTEN connection.

No polling: the stream waits on :meth:`EventListener.subscribe` (NOTIFY from migration 0005), gathers
the notices that arrive within a short batch window, reads those events' rows by id (and the counts by
status) in one go, and sends one ``update`` message. A quiet stream sends a comment line now and then
so proxies keep it open, and ends after ``MAX_STREAM_SECONDS`` or as soon as the server begins
shutting down (``AppState.stopping``); the browser's EventSource reconnects
by itself (``retry:``) and the page re-reads the database on ``resync``.
"""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import AsyncIterator
from typing import Any

from app.web.admin import data
from app.web.listener import Notice
from app.web.state import AppState

#: Notices that arrive this close together become one message.
BATCH_SECONDS = 0.2
KEEPALIVE_SECONDS = 15.0
#: Counts by status are re-read at most this often per stream.
COUNTS_SECONDS = 2.0
#: A stream is closed after this long; the browser reconnects at once (bounded server shutdown).
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

    Rows of the events named in notices go out at once; the counts by status (a scan of the events
    table) at most every ``COUNTS_SECONDS``, and once more when the stream falls quiet, so the last
    change is always counted.
    """
    ended = time.monotonic() + MAX_STREAM_SECONDS
    counted_at, counts_due = 0.0, False
    async with state.listener.subscribe() as queue:
        connected = await state.listener.wait_connected(5.0)
        yield b"retry: 2000\n\n"
        yield sse("hello", {"listening": connected})
        while time.monotonic() < ended and not state.stopping.is_set():
            wait = KEEPALIVE_SECONDS
            if counts_due:
                wait = max(0.0, counted_at + COUNTS_SECONDS - time.monotonic())
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
            counts_due = counts_due or bool(ids)
            send_counts = counts_due and time.monotonic() - counted_at >= COUNTS_SECONDS
            if not ids and not send_counts:
                if first is None:
                    yield b": keepalive\n\n"
                continue
            message: dict[str, Any] = {"events": []}
            try:
                pool = await state.db.ensure()
                if ids:
                    message["events"] = await data.events_by_ids(pool, ids)
                if send_counts:
                    message["counts"] = await data.status_counts(pool)
                    counted_at, counts_due = time.monotonic(), False
            except Exception:  # the database is away: the page shows it, the next notice retries
                yield sse("error", {"detail": "database unavailable"})
                continue
            yield sse("update", message)
