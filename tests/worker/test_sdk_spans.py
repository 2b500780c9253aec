"""The anthropic SDK's OpenTelemetry spans: off when nothing would record them, on when something can.

Each SDK call builds its span's attributes even when no tracer provider is registered (the span is then
dropped): about an eighth of the SDK's own CPU per call. The worker's client turns its spans off unless an
application registered a tracer provider before the client was made, or ``ANTHROPIC_OPEN_TELEMETRY*``
is set (the SDK reads it then, as it documents). Checked through real calls to the fake Messages API.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from typing import Any

import pytest
from opentelemetry import trace
from opentelemetry.trace import NonRecordingSpan, Span, SpanContext, TraceFlags, Tracer, TracerProvider
from opentelemetry.util.types import Attributes

from tests.fakes.messages_api import FakeMessagesAPI, reply
from worker.llm import make_client, sdk_spans_wanted

REQUEST = {"model": "claude-haiku-4-5", "max_tokens": 64, "messages": [{"role": "user", "content": "hi"}]}


class _RecordingTracer(Tracer):
    def __init__(self, names: list[str]) -> None:
        self.names = names

    def start_span(self, name: str, *args: Any, **kwargs: Any) -> Span:
        self.names.append(name)
        return NonRecordingSpan(SpanContext(trace_id=1, span_id=2, is_remote=False, trace_flags=TraceFlags(0)))

    def start_as_current_span(self, name: str, *args: Any, **kwargs: Any) -> Iterator[Span]:  # type: ignore[override]
        raise NotImplementedError


class _RecordingProvider(TracerProvider):
    """What an application's OpenTelemetry setup registers; records the names of the spans started."""

    def __init__(self) -> None:
        self.names: list[str] = []

    def get_tracer(
        self,
        instrumenting_module_name: str,
        instrumenting_library_version: str | None = None,
        schema_url: str | None = None,
        attributes: Attributes = None,
    ) -> Tracer:
        return _RecordingTracer(self.names)


@pytest.fixture
def no_otel_env(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in [n for n in os.environ if n.startswith(("ANTHROPIC_OPEN_TELEMETRY", "OTEL_"))]:
        monkeypatch.delenv(name)


async def _call(fake: FakeMessagesAPI) -> tuple[dict[str, Any], bool]:
    """One call through the worker's client; its body, and whether the client's spans are on."""
    client = make_client(api_key="sk-test", base_url=fake.base_url, timeout=10, max_retries=0, transport="aiohttp")
    try:
        fake.enqueue(reply({"label": "ok"}))
        raw = await client.messages.with_raw_response.create(**REQUEST)  # type: ignore[call-overload]
        body = await raw.json()
        return body, bool(client.open_telemetry["traces"]["enabled"])
    finally:
        await client.close()


async def test_no_spans_are_built_when_nothing_is_registered_to_record_them(
    fake: FakeMessagesAPI, no_otel_env: None
) -> None:
    assert not sdk_spans_wanted()
    body, enabled = await _call(fake)
    assert body["type"] == "message" and enabled is False


async def test_a_registered_tracer_provider_gets_the_sdk_spans(
    fake: FakeMessagesAPI, no_otel_env: None, monkeypatch: pytest.MonkeyPatch
) -> None:
    provider = _RecordingProvider()
    monkeypatch.setattr(trace, "_TRACER_PROVIDER", provider)  # what trace.set_tracer_provider() leaves
    assert sdk_spans_wanted()
    body, enabled = await _call(fake)
    assert body["type"] == "message" and enabled is True
    assert len(provider.names) == 1, provider.names  # the SDK's one span for the call


async def test_the_sdk_environment_variables_still_decide_when_set(
    fake: FakeMessagesAPI, no_otel_env: None, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("ANTHROPIC_OPEN_TELEMETRY", "true")
    assert sdk_spans_wanted()
    _, enabled = await _call(fake)
    assert enabled is True  # the SDK read the variable (the worker did not pass the option)
