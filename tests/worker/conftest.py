"""Fixtures shared by the worker tests."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest

from worker.runtime import Runtime


@pytest.fixture
async def opened() -> AsyncIterator[list[Runtime]]:
    """Runtimes a test opens (``opened.append(rt)``), closed after it."""
    got: list[Runtime] = []
    yield got
    for rt in got:
        await rt.close()
