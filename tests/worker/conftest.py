"""Fixtures shared by the worker tests."""

from __future__ import annotations

from collections.abc import AsyncIterator

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
