"""One LISTEN connection per web process, shared by everything that waits on events.

Migration 0005 NOTIFYs channel ``hookline_events`` once per INSERT statement and once per status
change (``{"op": "status", "id": N, "status": "..."}``); migration 0006 once per stored model answer
(``{"op": "answer", "id": N, "pipeline": "..."}``); the worker sends ``{"op": "reply", "id": N,
"reply": "default"}`` when an event's sync pipeline will not run (its waiting request re-reads).
This hub owns the process's single dedicated connection (never a pool connection: a request that
waits holds no database connection) and fans the notices out:

* :meth:`EventListener.watch` — wait for one event's status or answer (synchronous replies). Register the
  waiter first, then read the current status once, then wait: a change between the two cannot be
  missed.
* :meth:`EventListener.subscribe` — a bounded queue of every notice (the dashboard's live stream,
  ``hookline tail``-like consumers). A slow consumer loses the oldest notices, never blocks others.

The connection starts on first use and reconnects with backoff. After a reconnect NOTIFYs may have
been missed, so every waiter is woken with ``reconnected`` to re-read the database, and subscribers
get a ``{"op": "reconnected"}`` notice. A LISTEN connection only reads, so a connection that died
silently (a failover whose old server vanished, a NAT or firewall that dropped an idle one) would never
say so: every :data:`CHECK_EVERY_S` it must answer a ``SELECT 1`` within :data:`CHECK_TIMEOUT_S`, or it
is dropped and replaced.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Any

from prometheus_client import Gauge

from app.core import db

log = logging.getLogger("hookline.listener")

CHANNEL = "hookline_events"

#: How often the LISTEN connection is asked a ``SELECT 1``, and how long it has to answer (seconds).
CHECK_EVERY_S = 10.0
CHECK_TIMEOUT_S = 5.0


@dataclass(frozen=True)
class Notice:
    """One decoded NOTIFY: ``op`` is ``insert``, ``status`` or ``reconnected``."""

    op: str
    data: dict[str, Any] = field(default_factory=dict)

    @property
    def event_id(self) -> int | None:
        value = self.data.get("id")
        return int(value) if isinstance(value, int) else None


class Waiter:
    """Woken when its event's status changes (``status`` set), an answer for it is stored
    (``answered`` holds the pipeline names) or the listener reconnected."""

    def __init__(self, event_id: int) -> None:
        self.event_id = event_id
        self._changed = asyncio.Event()
        self.status: str | None = None
        self.reconnected = False
        self.answered: set[str] = set()

    def _answer(self, pipeline: str) -> None:
        self.answered.add(pipeline)
        self._changed.set()

    def _wake(self, status: str | None) -> None:
        if status is None:
            self.reconnected = True
        else:
            self.status = status
        self._changed.set()

    async def changed(self, timeout: float) -> bool:
        """Wait up to ``timeout`` s for a change; True when woken. Clears the flag for the next wait."""
        try:
            async with asyncio.timeout(max(0.0, timeout)):
                await self._changed.wait()
        except TimeoutError:
            return False
        self._changed.clear()
        return True


def _setter(flag: asyncio.Event) -> Any:
    return lambda _conn: flag.set()


async def _until_lost(conn: Any, lost: asyncio.Event) -> None:
    """Returns when the connection is lost: closed (``lost``), or silent (a ``SELECT 1`` unanswered
    within :data:`CHECK_TIMEOUT_S`, or failing)."""
    while True:
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(CHECK_EVERY_S):
                await lost.wait()
        if lost.is_set():
            return
        try:
            async with asyncio.timeout(CHECK_TIMEOUT_S):
                await conn.fetchval("SELECT 1")
        except Exception as e:  # TimeoutError included: nothing came back
            log.warning("LISTEN connection did not answer its check (%s)", e.__class__.__name__)
            return


class EventListener:
    def __init__(
        self, url: str | None, *, queue_size: int = 1000, max_backoff: float = 10.0, gauge: Gauge | None = None
    ) -> None:
        self._url = url
        self._gauge = gauge  # hookline_sync_waiting: kept as waiters come and go
        self._queue_size = queue_size
        self._max_backoff = max_backoff
        self._waiters: dict[int, set[Waiter]] = {}
        self._queues: set[asyncio.Queue[Notice]] = set()
        self._task: asyncio.Task[None] | None = None
        self.connected = asyncio.Event()
        self.connections_made = 0

    # -- lifecycle -------------------------------------------------------------------------------

    def ensure_started(self) -> None:
        if self._task is None and self._url is not None:
            self._task = asyncio.create_task(self._run(), name="hookline-listener")

    async def close(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await self._task
            self._task = None
        self.connected.clear()

    async def _run(self) -> None:
        assert self._url is not None
        delay = 0.2
        while True:
            conn: Any = None
            try:
                conn = await db.connect(self._url, application_name="hookline-web-listen")
                lost = asyncio.Event()
                conn.add_termination_listener(_setter(lost))
                await conn.add_listener(CHANNEL, self._on_notify)
                first = self.connections_made == 0
                self.connections_made += 1
                self.connected.set()
                delay = 0.2
                if not first:
                    self._broadcast_reconnect()
                await _until_lost(conn, lost)
                log.warning("LISTEN connection lost; reconnecting")
            except asyncio.CancelledError:
                raise
            except Exception as e:
                log.warning("LISTEN connection failed (%s); retrying in %.1fs", e.__class__.__name__, delay)
            finally:
                self.connected.clear()
                if conn is not None:
                    with contextlib.suppress(Exception):
                        await conn.close(timeout=1)  # a silent connection is aborted after the second
            await asyncio.sleep(delay)
            delay = min(delay * 2, self._max_backoff)

    # -- fan-out ---------------------------------------------------------------------------------

    def _on_notify(self, _conn: Any, _pid: int, _channel: str, payload: str) -> None:
        try:
            data = json.loads(payload)
        except ValueError:
            return
        if not isinstance(data, dict):
            return
        notice = Notice(op=str(data.get("op", "")), data=data)
        if notice.op == "status" and notice.event_id is not None:
            for waiter in tuple(self._waiters.get(notice.event_id, ())):
                waiter._wake(str(data.get("status")))
        elif notice.op == "answer" and notice.event_id is not None:
            for waiter in tuple(self._waiters.get(notice.event_id, ())):
                waiter._answer(str(data.get("pipeline")))
        elif notice.op == "reply" and notice.event_id is not None:  # the worker decided the reply
            for waiter in tuple(self._waiters.get(notice.event_id, ())):
                waiter._answer("")
        self._publish(notice)

    def _broadcast_reconnect(self) -> None:
        for waiters in tuple(self._waiters.values()):
            for waiter in tuple(waiters):
                waiter._wake(None)
        self._publish(Notice("reconnected"))

    def _publish(self, notice: Notice) -> None:
        for q in tuple(self._queues):
            if q.full():
                with contextlib.suppress(asyncio.QueueEmpty):
                    q.get_nowait()
            q.put_nowait(notice)

    # -- consumers -------------------------------------------------------------------------------

    @contextlib.asynccontextmanager
    async def watch(self, event_id: int) -> AsyncIterator[Waiter]:
        """Register a waiter for one event for the duration of the block (cancellation-safe)."""
        self.ensure_started()
        waiter = Waiter(event_id)
        self._waiters.setdefault(event_id, set()).add(waiter)
        if self._gauge is not None:
            self._gauge.inc()
        try:
            yield waiter
        finally:
            if self._gauge is not None:
                self._gauge.dec()
            waiters = self._waiters.get(event_id)
            if waiters is not None:
                waiters.discard(waiter)
                if not waiters:
                    del self._waiters[event_id]

    @contextlib.asynccontextmanager
    async def subscribe(self) -> AsyncIterator[asyncio.Queue[Notice]]:
        """A bounded queue of every notice while the block runs."""
        self.ensure_started()
        q: asyncio.Queue[Notice] = asyncio.Queue(self._queue_size)
        self._queues.add(q)
        try:
            yield q
        finally:
            self._queues.discard(q)

    def waiting(self) -> int:
        """How many requests wait on an event right now."""
        return sum(len(w) for w in self._waiters.values())

    async def wait_connected(self, timeout: float) -> bool:
        self.ensure_started()
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(timeout):
                await self.connected.wait()
        return self.connected.is_set()
