"""The simulated model's answers fit their schema; the CLI's one-line story and tables read right."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from decimal import Decimal
from typing import Any, Literal

import anthropic
import jsonschema
import pytest
from pydantic import BaseModel

from app.cli.observe import table
from app.cli.tail import format_brief, format_story
from app.core.logs import escape
from app.core.timeline import EventStory
from worker.simulated import SimulatedModel, example


class Item(BaseModel):
    sku: str
    qty: int


class Order(BaseModel):
    priority: Literal["low", "high"]
    items: list[Item]
    note: str | None
    score: float
    urgent: bool


SCHEMAS: list[dict[str, Any]] = [
    {
        "type": "object",
        "properties": {"subject": {"type": "string"}, "body": {"type": "string"}},
        "required": ["subject"],
    },
    {
        "type": "object",
        "properties": {
            "risk": {"type": "string", "enum": ["low", "medium", "high"]},
            "tags": {"type": "array", "items": {"type": "string"}, "minItems": 2},
            "when": {"type": "string", "format": "date-time"},
            "email": {"type": "string", "format": "email"},
            "count": {"type": "integer", "minimum": 3},
            "code": {"type": "string", "minLength": 30},
            "kind": {"const": "fixed"},
            "maybe": {"anyOf": [{"type": "null"}, {"type": "number"}]},
        },
        "required": ["risk", "tags", "when", "email", "count", "code", "kind", "maybe"],
        "additionalProperties": False,
    },
    Order.model_json_schema(),
]


@pytest.mark.parametrize("schema", SCHEMAS)
def test_simulated_answer_fits_the_schema(schema: dict[str, Any]) -> None:
    jsonschema.validate(example(schema), schema, format_checker=jsonschema.FormatChecker())
    sent = anthropic.transform_schema(schema)  # what the API gets: simpler, still answered validly
    jsonschema.validate(example(sent), sent, format_checker=jsonschema.FormatChecker())


async def test_simulated_model_answers_like_the_messages_api() -> None:
    client = SimulatedModel()
    request = {
        "model": "claude-haiku-5-5",
        "max_tokens": 100,
        "messages": [{"role": "user", "content": "{}"}],
        "output_config": {"format": {"type": "json_schema", "schema": anthropic.transform_schema(Order)}},
    }
    raw = await client.messages.with_raw_response.create(**request)
    message = await raw.parse()
    assert raw.request_id.startswith("simulated_") and message.stop_reason == "end_turn"
    Order.model_validate(json.loads(message.content[0].text))  # type: ignore[union-attr]
    await client.close()


def _story(calls: list[dict[str, Any]], actions: list[dict[str, Any]], status: str = "succeeded") -> EventStory:
    event = {
        "id": 3,
        "source": "stripe",
        "event_type": "invoice.paid",
        "status": status,
        "last_error": "boom",
        "detail": None,
    }
    return EventStory(event=event, timeline=[], calls=calls, actions=actions)


def test_one_line_story() -> None:
    call = {"pipeline": "p", "model": "m", "input_tokens": 100, "output_tokens": 7, "cost_usd": Decimal("0.0001")}
    calls = [call | {"status": "invalid_output"}, call | {"status": "succeeded"}]
    actions = [{"pipeline": "p", "action": "http#0", "status": "succeeded"}]
    line = format_story(_story(calls, actions))
    assert line == "event 3 stripe/invoice.paid → p → m (200+14 tokens, $0.000200) → http#0 succeeded → succeeded"
    assert format_story(_story([], [], "dead")) == "event 3 stripe/invoice.paid → no pipeline → dead (boom)"
    brief = {"id": 3, "source": "db", "event_type": None, "tenant": "acme", "status": "queued"}
    assert format_brief(brief) == "event 3 db (tenant acme) → queued"


def test_sender_text_cannot_drive_the_terminal() -> None:
    """ESC/CSI/OSC sequences, CR, BEL, C1 controls and bidi overrides a sender put in an event type, a
    tenant, a skip detail or an error are shown as escapes, in the one-line story and in tables."""
    hostile = "a\x1b[2K\rb\x1b]52;c;eA==\x07c\x9b31md\u202ee\u2066f\u200fg\u061ch\u2028i"
    shown = "a\\x1b[2K\\rb\\x1b]52;c;eA==\\x07c\\x9b31md\\u202ee\\u2066f\\u200fg\\u061ch\\u2028i"
    assert escape(hostile) == shown
    assert escape("café → ok, 日本") == "café → ok, 日本"
    story = _story([], [], "skipped")
    story.event.update(event_type=hostile, detail=hostile)
    assert format_story(story) == f"event 3 stripe/{shown} → no pipeline → skipped ({shown})"
    brief = {"id": 3, "source": "db", "event_type": hostile, "tenant": hostile, "status": "queued"}
    assert format_brief(brief) == f"event 3 db/{shown} (tenant {shown}) → queued"
    assert table(["tenant"], [(hostile,)]).splitlines()[2] == shown


def test_table_aligns_numbers_right() -> None:
    when = datetime(2026, 1, 2, 3, 4, 5, 678000, tzinfo=UTC)
    out = table(["name", "n", "at"], [("a", 1, when), ("bbb", 22, None)]).splitlines()
    assert out == [
        "name   n  at",
        "----  --  -----------------------",
        "a      1  2026-01-02 03:04:05.678",
        "bbb   22  -",
    ]
