"""Shared acceptance fixtures: the fake Messages API and a local receiver for http actions."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from tests.fakes.messages_api import FakeMessagesAPI
from tests.harness import Receiver


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    """A local HTTP endpoint standing in for the user's CRM."""
    r = Receiver()
    yield r
    r.close()


@pytest.fixture
def fake() -> Iterator[FakeMessagesAPI]:
    """The fake Messages API the real anthropic SDK talks to."""
    with FakeMessagesAPI() as f:
        yield f
