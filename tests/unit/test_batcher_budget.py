"""The web's group commit takes a batch by rows and by bytes: Postgres refuses a statement's parameters
over 1 GiB and closes the connection, which failed every request of the batch with a 503. A source can
not accept a body that alone would not fit."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from app.core.config import parse_config
from app.core.errors import ConfigError
from app.web.batcher import MAX_BATCH_BYTES, Batcher, _Item, _size

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

    assert parse_config(source(128 * MIB)).sources["big"].max_body_bytes == 128 * MIB
    with pytest.raises(ConfigError, match=r"sources\.big\.max_body_bytes: .*less than or equal to 134217728"):
        parse_config(source(128 * MIB + 1))


def test_a_payload_not_sent_as_its_json_text_counts_at_its_largest() -> None:
    """A form (or UTF-16) body's payload is serialised by ``json.dumps`` (``\\u00XX`` for a control
    byte: six times the body): the budget counts it so, not as nothing."""
    body = b"a=%00" * 1000
    as_text = ("src", "d", None, None, None, None, None, body, '{"a": "x"}')
    as_form = ("src", "d", None, None, None, None, None, body, {"a": "\x00" * 1000})
    assert _size(as_text) == 4 + len(body) + 10  # "src", "d", the body, the JSON text
    assert _size(as_form) == 4 + 7 * len(body)
