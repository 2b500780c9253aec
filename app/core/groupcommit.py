"""Group commit: work items arriving together share one write, with no timer.

The scheduling that the ingest batcher (``app/web/batcher.py``) and the worker's call writer
(``worker/callwriter.py``) share. A subclass says how a batch is written (:meth:`GroupCommit._write`)
and how its items learn of a failure that took the whole batch (:meth:`GroupCommit._fail`).

- An item waits only while other flushes run: with fewer than ``max_flushes`` in flight a flush starts
  on the next turn of the event loop and takes every item queued by then (up to ``max_batch``), so a
  lone item pays nothing extra. Under load items queue behind the running flushes and the next flush
  takes them all.
- An exception out of :meth:`_write` (the database is unavailable, or the flush is cancelled) fails
  every item of that batch that has no answer yet, through :meth:`_fail`.
"""

from __future__ import annotations

import asyncio
import contextlib
from abc import ABC, abstractmethod
from typing import Generic, TypeVar

T = TypeVar("T")


class GroupCommit(ABC, Generic[T]):
    def __init__(self, *, max_flushes: int, max_batch: int) -> None:
        self.max_flushes = max(1, max_flushes)
        self.max_batch = max(1, max_batch)
        self._pending: list[T] = []
        self._flushes = 0
        self._scheduled = False  # a flush task exists that has not taken its batch yet
        self._tasks: set[asyncio.Task[None]] = set()
        #: flushes, items written, and the largest batch seen (subclasses add their own counters)
        self.stats: dict[str, int] = {"flushes": 0, "rows": 0, "max_batch_seen": 0}

    def _add(self, item: T) -> None:
        """Queue an item; a flush picks it up on the next turn of the loop (or after the running ones)."""
        self._pending.append(item)
        self._kick()

    def _kick(self) -> None:
        if self._pending and not self._scheduled and self._flushes < self.max_flushes:
            self._flushes += 1
            self._scheduled = True
            task = asyncio.create_task(self._flush())
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)

    def _take(self) -> list[T]:
        """The next batch (the oldest ``max_batch`` items); the rest stay queued."""
        batch, self._pending = self._pending[: self.max_batch], self._pending[self.max_batch :]
        return batch

    async def _flush(self) -> None:
        batch: list[T] = []
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
            for item in batch:
                self._fail(item, e)
            if not isinstance(e, Exception):
                raise
        finally:
            self._flushes -= 1
            self._kick()

    @abstractmethod
    async def _write(self, batch: list[T]) -> None:
        """Write the batch and answer each of its items."""

    @abstractmethod
    def _fail(self, item: T, error: BaseException) -> None:
        """Answer one item with ``error``, unless it already has its answer."""

    async def close(self) -> None:
        """Wait for the flushes in flight (shutdown drains them; nothing is left half-answered)."""
        while self._tasks:
            with contextlib.suppress(Exception):
                await asyncio.gather(*list(self._tasks), return_exceptions=True)


__all__ = ["GroupCommit"]
