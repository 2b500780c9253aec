"""Claude through the anthropic SDK: structured output, validation with one repair turn, usage and cost."""

from __future__ import annotations

import copy
import json
import os
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from decimal import Decimal
from typing import Any

import anthropic
from opentelemetry import trace

from app.core.status import CallStatus
from worker.closing import Closing, finish_params
from worker.errors import InvalidOutput
from worker.prompt import OutputSpec
from worker.simulated import SimulatedModel

#: What the worker asks: the anthropic client, or the simulated model of `hookline dev --simulate-model`.
LLMClient = anthropic.AsyncAnthropic | SimulatedModel


@dataclass
class CallRecord:
    """One Messages API round trip, as stored in hookline.llm_calls."""

    model: str
    status: CallStatus
    request: dict[str, Any]
    response: dict[str, Any] | None = None
    output: Any = None
    error: str | None = None
    usage: dict[str, Any] = field(default_factory=dict)
    cost_usd: Decimal | None = None
    latency_ms: int | None = None
    request_id: str | None = None
    #: why this model answered (hookline.llm_calls.route): primary, fallback:…, escalate:…, retry:max_tokens, repair
    #: (an escalation's own further calls keep its prefix: escalate:FIELD+repair)
    route: str = "primary"
    requested_model: str | None = None
    headers: Any = None
    #: round trips this row counts (hookline.llm_calls.calls): 0 for a micro-batch part whose combined
    #: call another part's row counts
    calls: int = 1


#: One gated Messages API round trip: ``call(request, route)`` (limits, breaker, fallback around it).
Caller = Callable[[dict[str, Any], str], Awaitable[CallRecord]]


class Refused(InvalidOutput):
    """stop_reason "refusal": asking again gets the same answer; straight to the dead letters."""

    permanent = True


class CutShort(InvalidOutput):
    """stop_reason "max_tokens" even with the larger budget: dead, with the cut answer kept."""

    permanent = True


@dataclass
class Answer:
    output: Any
    calls: list[CallRecord]


def sdk_spans_wanted() -> bool:
    """Whether the SDK's OpenTelemetry spans can go anywhere: ``ANTHROPIC_OPEN_TELEMETRY*`` is set (the
    SDK then reads it, as it documents), or a tracer provider was registered before the client was made
    (``opentelemetry-instrument``, ``OTEL_PYTHON_TRACER_PROVIDER``, the application's own setup). Without
    either, each call would build the attributes of a span that nothing records: about 30 us, an eighth
    of the SDK's own CPU per call."""
    if any(name.startswith("ANTHROPIC_OPEN_TELEMETRY") for name in os.environ):
        return True
    return not isinstance(trace.get_tracer_provider(), trace.ProxyTracerProvider)


def make_client(
    *, api_key: str, base_url: str | None, timeout: float, max_retries: int, transport: str = "httpx", **kw: Any
) -> anthropic.AsyncAnthropic:
    """The SDK client; ``transport="aiohttp"`` runs it on the SDK's aiohttp transport. Its spans are off
    when nothing would record them (:func:`sdk_spans_wanted`)."""
    if transport == "aiohttp":
        kw.setdefault("http_client", anthropic.DefaultAioHttpClient(timeout=timeout))
    if not sdk_spans_wanted():
        kw.setdefault("open_telemetry", False)
    # the same four timeouts as the bare number, given as the SDK's Timeout: each request copies the
    # client's, and a number is first checked against typing's SupportsFloat protocol (about 12 us a call)
    return anthropic.AsyncAnthropic(
        api_key=api_key, base_url=base_url, timeout=anthropic.Timeout(timeout), max_retries=max_retries, **kw
    )


def _unstorable(text: str) -> bool:
    """Whether Postgres's jsonb refuses this string: it holds NUL or an unpaired surrogate."""
    if "\x00" in text:
        return True
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return True
    return False


def _any_unstorable(value: Any) -> bool:
    if isinstance(value, str):
        return _unstorable(value)
    if isinstance(value, dict):
        return any(_unstorable(k) or _any_unstorable(v) for k, v in value.items())
    if isinstance(value, list):
        return any(_any_unstorable(v) for v in value)
    return False


def _storable(value: Any) -> Any:
    """``value`` with each NUL and unpaired surrogate of its strings replaced by U+FFFD."""
    if isinstance(value, str):
        if not _unstorable(value):
            return value
        return "".join("\ufffd" if c == "\x00" or 0xD800 <= ord(c) <= 0xDFFF else c for c in value)
    if isinstance(value, dict):
        return {_storable(k): _storable(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_storable(v) for v in value]
    return value


def storable_message(message: dict[str, Any]) -> dict[str, Any]:
    """A Messages API message as it can be stored: NUL and unpaired surrogates in the model's own
    content (its text, a tool's input) replaced by U+FFFD, in place; it is stored, and read, so."""
    content = message.get("content")
    if content is not None and _any_unstorable(content):
        message["content"] = _storable(content)
    return message


def _text_of(message: dict[str, Any]) -> str | None:
    for block in message.get("content") or []:
        if block.get("type") == "text":
            return str(block.get("text", ""))
    for block in message.get("content") or []:
        if block.get("type") == "tool_use":
            return json.dumps(block.get("input"))
    return None


def _check(message: dict[str, Any], spec: OutputSpec) -> Any:
    stop = message.get("stop_reason")
    if stop == "refusal":
        details = message.get("stop_details") or {}
        raise ValueError(f"the model refused (category {details.get('category')})")
    if stop == "max_tokens":
        raise ValueError("the answer was cut at max_tokens; raise max_tokens for this pipeline")
    text = _text_of(message)
    if text is None:
        raise ValueError("the answer has no text block")
    try:
        data = json.loads(text)
    except ValueError as e:
        raise ValueError(f"the answer is not JSON: {e}") from None
    if "\\u" in text and _any_unstorable(data):  # only an escape in the text can make one
        raise ValueError("the answer holds \\u0000 or an unpaired surrogate, which cannot be stored")
    return spec.validate(data)


def check_answer(message: dict[str, Any], spec: OutputSpec) -> Any:
    """The validated output of a message; :class:`Refused` for a refusal, ValueError otherwise."""
    if message.get("stop_reason") == "refusal":
        details = message.get("stop_details") or {}
        raise Refused(f"the model refused (category {details.get('category')})")
    return _check(message, spec)


async def _one_call(client: LLMClient, request: dict[str, Any]) -> CallRecord:
    started = time.monotonic()
    raw = await client.messages.with_raw_response.create(**request)
    # The API's own JSON, stored as sent: the SDK's parse into pydantic models and the dump back to a
    # dict cost a sixth of the SDK's CPU per call and added nothing the worker reads.
    try:
        body = await raw.json()
    except ValueError:  # not JSON at all: a proxy's HTML page, a cut-off body
        body = None
    latency = int((time.monotonic() - started) * 1000)
    if not isinstance(body, dict):  # only the real API can answer that (a proxy's page, say): retried
        raise anthropic.APIResponseValidationError(
            response=getattr(raw, "http_response"),  # noqa: B009 (the simulated raw has none)
            body=body,
            message="the Messages API answered with something other than a JSON object",
        )
    storable_message(body)
    simulated = isinstance(client, SimulatedModel)
    return CallRecord(  # its cost_usd is the gate's to set: with the model's configured prices (worker.gate)
        model=request["model"],
        status=CallStatus.SIMULATED if simulated else CallStatus.SUCCEEDED,
        request=request,
        response=body,
        usage=body.get("usage") or {},
        latency_ms=latency,
        request_id=raw.request_id or raw.headers.get("request-id"),
        headers=raw.headers,
    )


async def one_call(client: LLMClient, request: dict[str, Any]) -> CallRecord:
    """One round trip, no validation (the caller gates it)."""
    return await _one_call(client, request)


def then(route: str, step: str) -> str:
    """The route of a further call made for a call whose route is ``route`` (its ``retry:max_tokens``,
    ``repair`` or ``fallback:…``). Within an escalation it keeps the ``escalate:FIELD`` prefix
    (``escalate:urgent+repair``), so an escalated answer that needed one more call is still known as
    the escalated one, and is never escalated again; a micro-batch's combined call keeps its
    ``micro_batch:N`` (``micro_batch:20+fallback:overloaded``), so its parts are still known as such."""
    return f"{route}+{step}" if route.startswith(("escalate:", "micro_batch:")) else step


async def ask(
    call: Caller, request: dict[str, Any], spec: OutputSpec, *, max_tokens_cap: int, route: str = "primary"
) -> Answer:
    """Call the model and validate the answer.

    - a refusal is final (:class:`Refused`, permanent);
    - a ``max_tokens`` cut is asked once more with a larger budget (up to ``max_tokens_cap``), then
      :class:`CutShort` (permanent);
    - a schema failure gets one repair turn, then :class:`InvalidOutput` (retried by policy).

    API errors propagate (worker.errors.classify decides retry or dead letter). ``call`` keeps every
    round trip for the caller to store, failed ones included.
    """
    calls: list[CallRecord] = []
    first = await call(request, route)
    calls.append(first)
    stop = (first.response or {}).get("stop_reason")
    if stop == "max_tokens":
        first.status, first.error = CallStatus.INVALID_OUTPUT, "the answer was cut at max_tokens"
        larger = min(max(int(request["max_tokens"]) * 4, 1024), max_tokens_cap)
        if larger <= int(request["max_tokens"]):
            raise CutShort(
                f"invalid model output: cut at max_tokens = {request['max_tokens']} (cap {max_tokens_cap})",
                output=_text_of(first.response or {}),
                calls=calls,
            )
        request = {**request, "model": first.model, "max_tokens": larger}
        first = await call(request, then(route, "retry:max_tokens"))
        calls.append(first)
        if (first.response or {}).get("stop_reason") == "max_tokens":
            first.status, first.error = CallStatus.INVALID_OUTPUT, "the answer was cut at max_tokens"
            raise CutShort(
                f"invalid model output: still cut at max_tokens = {larger} after one larger retry",
                output=_text_of(first.response or {}),
                calls=calls,
            )
    try:
        first.output = _check(first.response or {}, spec)
        return Answer(first.output, calls)
    except ValueError as e:
        first.status, first.error = CallStatus.INVALID_OUTPUT, str(e)
        problem = str(e)
    if (first.response or {}).get("stop_reason") == "refusal":
        raise Refused(f"the model refused: {problem}", output=_text_of(first.response or {}), calls=calls)
    repair = copy.deepcopy(request)
    repair["model"] = first.model
    repair["messages"] = [
        *request["messages"],
        {"role": "assistant", "content": _text_of(first.response or {}) or ""},
        {
            "role": "user",
            "content": f"That answer does not match the required schema: {problem}. "
            "Answer again with JSON that matches the schema exactly.",
        },
    ]
    second = await call(repair, then(route, "repair"))
    calls.append(second)
    try:
        second.output = _check(second.response or {}, spec)
        return Answer(second.output, calls)
    except ValueError as e:
        second.status, second.error = CallStatus.INVALID_OUTPUT, str(e)
        cls = Refused if (second.response or {}).get("stop_reason") == "refusal" else InvalidOutput
        raise cls(
            f"invalid model output after one repair attempt: {e}", output=_text_of(second.response or {}), calls=calls
        ) from None


def call_row(
    event_id: int, pipeline: str, rec: CallRecord, closing: Closing | None = None, *, dry: bool = False
) -> dict[str, Any]:
    """``insert_call``'s parameters; with ``closing``, the same statement finishes the event."""
    usage = rec.usage or {}
    return finish_params(closing, dry=dry) | {
        "event_id": event_id,
        "pipeline": pipeline,
        "model": rec.model,
        "status": rec.status,
        "request": rec.request,
        "response": rec.response,
        "output": rec.output,
        "error": rec.error,
        "input_tokens": usage.get("input_tokens"),
        "output_tokens": usage.get("output_tokens"),
        "cache_creation_input_tokens": usage.get("cache_creation_input_tokens"),
        "cache_read_input_tokens": usage.get("cache_read_input_tokens"),
        "cost_usd": rec.cost_usd,
        "latency_ms": rec.latency_ms,
        "request_id": rec.request_id,
        "requested_model": rec.requested_model or rec.model,
        "route": rec.route,
        "stop_reason": (rec.response or {}).get("stop_reason"),
        "calls": rec.calls,
    }
