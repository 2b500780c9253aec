"""Fixtures shared by the worker tests."""

from __future__ import annotations

import contextlib
import socket
from collections.abc import AsyncIterator, Iterator

import pytest

from tests.harness import Receiver
from worker.runtime import Runtime


@pytest.fixture
async def opened() -> AsyncIterator[list[Runtime]]:
    """Runtimes a test opens (``opened.append(rt)``), closed after it."""
    got: list[Runtime] = []
    yield got
    for rt in got:
        await rt.close()


@pytest.fixture
def stripe_and_crm(monkeypatch: pytest.MonkeyPatch, receiver: Receiver) -> None:
    """The environment the worker tests' stripe source and CRM action read: ``HL_STRIPE_SECRET`` and
    ``HL_CRM_URL`` (the receiver's). A module asks for it with
    ``pytestmark = pytest.mark.usefixtures("stripe_and_crm")``."""
    monkeypatch.setenv("HL_STRIPE_SECRET", "whsec_worker_tests")
    monkeypatch.setenv("HL_CRM_URL", receiver.url)


@pytest.fixture
def unreachable() -> Iterator[str]:
    """``http://127.0.0.1:PORT``, whose listener never accepts: its queue is full, so new SYNs are
    dropped and nothing is ever sent (a connect that times out)."""
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(0)
    port = listener.getsockname()[1]
    fillers = []
    for _ in range(4):
        filler = socket.socket()
        filler.setblocking(False)
        with contextlib.suppress(BlockingIOError):
            filler.connect(("127.0.0.1", port))
        fillers.append(filler)
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        for s in (*fillers, listener):
            s.close()
