"""Clones of the migrated template database, made and dropped on a background thread.

``CREATE DATABASE … TEMPLATE`` takes ~0.2–0.3 s here (Postgres copies the whole catalog, ~9 MB,
whatever the strategy), and a test that needs a database used to wait for it in its setup. The
pool keeps a few clones ready and drops used ones behind the tests, while they wait on sockets
and subprocesses, so a test takes a ready database at once. Each test still has a database of its
own that no other test has touched.
"""

from __future__ import annotations

import threading
from collections import deque
from collections.abc import Callable

import psycopg


class ClonePool:
    def __init__(self, admin_url: str, template: str, prefix: str, *, depth: int = 2) -> None:
        self._admin_url = admin_url
        self._template = template
        self._prefix = prefix
        self._depth = depth
        self._ready: deque[str] = deque()
        self._used: deque[str] = deque()
        self._made = 0
        self._error: BaseException | None = None
        self._stopping = False
        self._changed = threading.Condition()
        self._thread = threading.Thread(target=self._run, name="clone-pool", daemon=True)
        self._thread.start()

    def take(self, timeout: float = 120.0) -> str:
        """A fresh clone's name; raises what went wrong on the background thread, if anything did."""
        with self._changed:
            if not self._changed.wait_for(lambda: self._ready or self._error is not None, timeout=timeout):
                raise TimeoutError(f"no cloned test database within {timeout:g} s")
            if self._error is not None:
                raise RuntimeError("the test database clone pool failed") from self._error
            name = self._ready.popleft()
            self._changed.notify_all()
            return name

    def give_back(self, name: str) -> None:
        """Drop ``name`` soon (its sessions are terminated then)."""
        with self._changed:
            self._used.append(name)
            self._changed.notify_all()

    def close(self) -> None:
        """Stop the thread and drop every clone, ready or used."""
        with self._changed:
            self._stopping = True
            self._changed.notify_all()
        self._thread.join(timeout=120)
        with psycopg.connect(self._admin_url, autocommit=True) as admin:
            for name in (*self._ready, *self._used):
                _drop(admin, name)
        self._ready.clear()
        self._used.clear()

    def _next_job(self) -> Callable[[psycopg.Connection], None] | None:
        with self._changed:
            self._changed.wait_for(lambda: self._stopping or self._used or len(self._ready) < self._depth)
            if self._stopping:
                return None
            if self._used:  # drop first: a run never holds more than depth + 1 clones
                name = self._used.popleft()
                return lambda admin: _drop(admin, name)
            self._made += 1
            name = f"{self._prefix}_{self._made}"
            return lambda admin: self._create(admin, name)

    def _create(self, admin: psycopg.Connection, name: str) -> None:
        _drop(admin, name)  # a clone of that name left by a killed run of this very pid
        admin.execute(f'CREATE DATABASE "{name}" TEMPLATE "{self._template}"')
        with self._changed:
            self._ready.append(name)
            self._changed.notify_all()

    def _run(self) -> None:
        try:
            with psycopg.connect(self._admin_url, autocommit=True) as admin:
                while (job := self._next_job()) is not None:
                    job(admin)
        except BaseException as exc:  # handed to the next take(), which fails the test that waits
            with self._changed:
                self._error = exc
                self._changed.notify_all()


def _drop(admin: psycopg.Connection, name: str) -> None:
    admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
