"""A simulated model for local runs (``hookline dev --simulate-model``): no API key, no network.

:class:`SimulatedModel` answers the very call the worker makes on the anthropic client
(``messages.with_raw_response.create(**request)`` → ``parse()``) with a real ``anthropic.types.Message``
whose text is a JSON value built from the request's output schema. The worker stores such calls with
status ``simulated`` and never prices them. It is only ever used when asked for explicitly
(``python -m worker --simulate-model``, which ``hookline dev --simulate-model`` runs).
"""

from __future__ import annotations

import contextlib
import contextvars
import itertools
import json
from collections.abc import Iterator
from datetime import UTC, datetime
from typing import Any

import anthropic

_IDS = itertools.count(1)
#: The pipeline's own schema, when the worker gives it: the schema sent to the API is a simplified
#: copy (structured outputs drop constraints such as minItems > 1), and answers are checked against
#: the original.
_SCHEMA: contextvars.ContextVar[dict[str, Any] | None] = contextvars.ContextVar("simulated_schema", default=None)
#: The very value to answer with, when the worker gives one (a micro-batch's combined call: one part
#: per event it asks for, which an example of the sent schema alone cannot name).
_VALUE: contextvars.ContextVar[tuple[Any] | None] = contextvars.ContextVar("simulated_value", default=None)


def example(schema: dict[str, Any], root: dict[str, Any] | None = None, name: str = "value") -> Any:
    """A value that satisfies ``schema`` (the JSON Schema subset structured outputs accept)."""
    root = root if root is not None else schema
    if "$ref" in schema:
        target: Any = root
        for part in str(schema["$ref"]).removeprefix("#/").split("/"):
            target = target.get(part, {}) if isinstance(target, dict) else {}
        return example(target, root, name)
    if "const" in schema:
        return schema["const"]
    if schema.get("enum"):
        return schema["enum"][0]
    for key in ("anyOf", "oneOf", "allOf"):
        options = [s for s in schema.get(key) or [] if s.get("type") != "null"]
        if options:
            return example(options[0], root, name)
    kind = schema.get("type", "object" if "properties" in schema else "string")
    if isinstance(kind, list):
        kind = next((k for k in kind if k != "null"), "null")
    if kind == "object":
        props = schema.get("properties") or {}
        return {key: example(sub, root, key) for key, sub in props.items()}
    if kind == "array":
        count = max(int(schema.get("minItems", 0)), min(1, int(schema.get("maxItems", 1))))
        return [example(schema.get("items") or {}, root, name) for _ in range(count)]
    if kind == "integer":
        return int(schema.get("minimum", schema.get("exclusiveMinimum", -1) + 1))
    if kind == "number":
        return float(schema.get("minimum", 0))
    if kind == "boolean":
        return True
    if kind == "null":
        return None
    return _string(schema, name)


def _string(schema: dict[str, Any], name: str) -> str:
    fmt = schema.get("format")
    if fmt == "date-time":
        return datetime.now(UTC).isoformat()
    if fmt == "date":
        return datetime.now(UTC).date().isoformat()
    if fmt == "email":
        return "simulated@example.com"
    if fmt in ("uri", "url"):
        return "https://example.com/simulated"
    if fmt == "uuid":
        return "00000000-0000-4000-8000-000000000000"
    text = f"simulated {name}"
    text = text.ljust(int(schema.get("minLength", 0)), ".")
    return text[: int(schema["maxLength"])] if "maxLength" in schema else text


class _Raw:
    def __init__(self, message: anthropic.types.Message, request_id: str) -> None:
        self._message = message
        self.request_id = request_id
        self.headers: dict[str, str] = {"request-id": request_id}

    async def parse(self) -> anthropic.types.Message:
        return self._message

    async def json(self) -> object:
        return self._message.model_dump(mode="json", exclude_none=False)


class _RawMessages:
    async def create(self, **request: Any) -> _Raw:
        sent = ((request.get("output_config") or {}).get("format") or {}).get("schema") or {}
        schema = _SCHEMA.get() or sent
        given = _VALUE.get()
        value = given[0] if given is not None else example(schema) if schema else {}
        n = next(_IDS)
        message = anthropic.types.Message.model_validate(
            {
                "id": f"msg_simulated_{n}",
                "type": "message",
                "role": "assistant",
                "model": request.get("model", ""),
                "content": [{"type": "text", "text": json.dumps(value)}],
                "stop_reason": "end_turn",
                "stop_sequence": None,
                "usage": {"input_tokens": 0, "output_tokens": 0},
            }
        )
        return _Raw(message, f"simulated_{n}")


class _Messages:
    def __init__(self) -> None:
        self.with_raw_response = _RawMessages()


class SimulatedModel:
    """Stands in for ``anthropic.AsyncAnthropic`` in the worker: answers locally, instantly."""

    def __init__(self) -> None:
        self.messages = _Messages()

    @contextlib.contextmanager
    def answering(self, schema: dict[str, Any]) -> Iterator[None]:
        """Answer calls made inside from ``schema`` (the pipeline's own) rather than the one sent."""
        token = _SCHEMA.set(schema)
        try:
            yield
        finally:
            _SCHEMA.reset(token)

    @contextlib.contextmanager
    def answering_with(self, value: Any) -> Iterator[None]:
        """Answer calls made inside with ``value`` itself (its JSON as the answer's text)."""
        token = _VALUE.set((value,))
        try:
            yield
        finally:
            _VALUE.reset(token)

    async def close(self) -> None:
        """Nothing to release."""
