"""DDL that waits for its table locks without holding up every other write to the table.

A lock request that waits holds up every later request for the same table, the web's, the worker's
and the user's own writes included, for as long as the wait lasts: a DBA's long read of a table blocks
an ``ALTER TABLE`` or a ``DROP TRIGGER`` on it, and everything queues behind that. So the release step
(migrations, ``[[watch]]`` entries) and ``hookline watch``/``unwatch`` ask for their locks with a short
``lock_timeout``; when one is not granted, the whole transaction is rolled back and tried again after a
pause, until :data:`LOCK_RETRY_SECONDS`.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any, TypeVar

import psycopg

T = TypeVar("T")

#: Each lock request is given up after this long (then the transaction is tried again). Short enough
#: for ingest's HOOKLINE_DB_TIMEOUT: a write queued behind the request waits at most this long.
LOCK_TIMEOUT = "1s"
#: How long a transaction keeps trying for its locks before the caller gives up (nothing applied).
LOCK_RETRY_SECONDS = 600.0
#: Pause before the first retry; it doubles up to :data:`MAX_PAUSE_SECONDS`.
FIRST_PAUSE_SECONDS = 0.25
MAX_PAUSE_SECONDS = 5.0


def when_locks_free(
    conn: psycopg.Connection[Any],
    work: Callable[[], T],
    give_up: Callable[[float], Exception],
    on_wait: Callable[[int], None] | None = None,
) -> T:
    """Run ``work()`` in one transaction on ``conn`` (an autocommit connection) whose lock requests give
    up after :data:`LOCK_TIMEOUT`; on ``LockNotAvailable`` (the transaction rolled back) it is tried again
    after a pause growing from :data:`FIRST_PAUSE_SECONDS` to :data:`MAX_PAUSE_SECONDS`.

    ``on_wait(tries)`` is called before each pause; after :data:`LOCK_RETRY_SECONDS` the exception
    ``give_up(LOCK_RETRY_SECONDS)`` is raised instead. ``work`` must let ``LockNotAvailable`` through
    and may run several times: it should keep nothing of a failed attempt."""
    deadline = time.monotonic() + LOCK_RETRY_SECONDS
    delay, tries = FIRST_PAUSE_SECONDS, 0
    while True:
        try:
            with conn.transaction():
                conn.execute(f"SET LOCAL lock_timeout = '{LOCK_TIMEOUT}'")
                return work()
        except psycopg.errors.LockNotAvailable:
            tries += 1
            if time.monotonic() + delay > deadline:
                raise give_up(LOCK_RETRY_SECONDS) from None
            if on_wait is not None:
                on_wait(tries)
            time.sleep(delay)
            delay = min(delay * 2, MAX_PAUSE_SECONDS)
