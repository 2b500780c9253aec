"""The web's group commit takes a batch by rows and by bytes: Postgres refuses a statement's parameters
over 1 GiB and closes the connection, which failed every request of the batch with a 503. A source can
not accept a body that alone would not fit."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from app.core.config import parse_config
from app.core.errors import ConfigError
from app.web.batcher import MAX_BATCH_BYTES, Batcher, _Item

MIB = 1024 * 1024


async def _never() -> None:
    raise AssertionError("no pool is needed to take a batch")


def _items(sizes: list[int]) -> list[_Item]:
    loop = asyncio.get_running_loop()
    return [_Item(("src", f"d{i}"), loop.create_future(), size) for i, size in enumerate(sizes)]


async def test_a_batch_stops_at_its_byte_budget_and_always_takes_one() -> None:
    batcher = Batcher(_never, max_batch=500)
    batcher._pending = _items([5 * MIB] * 30)  # 150 MiB waiting: 12 fit in 64 MiB, the rest follow
    sizes = []
    while batcher._pending:
        sizes.append(len(batcher._take()))
    assert sizes == [12, 12, 6] and MAX_BATCH_BYTES == 64 * MIB
    batcher._pending = _items([200 * MIB, 1, 1])  # one row over the budget still goes, alone
    assert [len(batcher._take()) for _ in range(2)] == [1, 2]
    batcher._pending = _items([1] * 600)  # small rows: the row cap
    assert len(batcher._take()) == 500


def test_a_source_body_cap_past_what_one_insert_can_carry_is_refused() -> None:
    def source(cap: int) -> dict[str, Any]:
        return {"sources": {"big": {"provider": "standard_webhooks", "secrets_env": ["X"], "max_body_bytes": cap}}}

    assert parse_config(source(256 * MIB)).sources["big"].max_body_bytes == 256 * MIB
    with pytest.raises(ConfigError, match=r"sources\.big\.max_body_bytes: .*less than or equal to 268435456"):
        parse_config(source(256 * MIB + 1))
