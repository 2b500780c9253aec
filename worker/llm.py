"""Claude through the anthropic SDK: structured output, validation with one repair turn, usage and cost."""

from __future__ import annotations

import copy
import json
import time
from dataclasses import dataclass, field
from decimal import Decimal
from typing import Any

import anthropic

from app.core.status import CallStatus
from worker.errors import InvalidOutput
from worker.pricing import cost_usd
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


@dataclass
class Answer:
    output: Any
    calls: list[CallRecord]


def make_client(
    *, api_key: str, base_url: str | None, timeout: float, max_retries: int, **kw: Any
) -> anthropic.AsyncAnthropic:
    return anthropic.AsyncAnthropic(api_key=api_key, base_url=base_url, timeout=timeout, max_retries=max_retries, **kw)


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
    return spec.validate(data)


async def _one_call(client: LLMClient, request: dict[str, Any]) -> CallRecord:
    started = time.monotonic()
    raw = await client.messages.with_raw_response.create(**request)
    message = await raw.parse()
    latency = int((time.monotonic() - started) * 1000)
    body = message.model_dump(mode="json", exclude_none=False)
    usage = body.get("usage") or {}
    simulated = isinstance(client, SimulatedModel)
    return CallRecord(
        model=request["model"],
        status=CallStatus.SIMULATED if simulated else CallStatus.SUCCEEDED,
        request=request,
        response=body,
        usage=usage,
        cost_usd=None if simulated else cost_usd(request["model"], usage),
        latency_ms=latency,
        request_id=raw.request_id or raw.headers.get("request-id"),
    )


async def ask(client: LLMClient, request: dict[str, Any], spec: OutputSpec) -> Answer:
    """Call the model and validate; on a schema failure, send the error back once for a repair.

    API errors propagate (worker.errors.classify decides retry or dead letter). Every round trip is
    returned in ``calls`` so the caller stores all of them, failed ones included.
    """
    calls: list[CallRecord] = []
    if isinstance(client, SimulatedModel):
        with client.answering(spec.raw_schema):
            first = await _one_call(client, request)
    else:
        first = await _one_call(client, request)
    calls.append(first)
    try:
        first.output = _check(first.response or {}, spec)
        return Answer(first.output, calls)
    except ValueError as e:
        first.status, first.error = CallStatus.INVALID_OUTPUT, str(e)
        problem = str(e)
    if (first.response or {}).get("stop_reason") in ("refusal", "max_tokens"):
        raise InvalidOutput(f"invalid model output: {problem}", output=_text_of(first.response or {}), calls=calls)
    repair = copy.deepcopy(request)
    repair["messages"] = [
        *request["messages"],
        {"role": "assistant", "content": _text_of(first.response or {}) or ""},
        {
            "role": "user",
            "content": f"That answer does not match the required schema: {problem}. "
            "Answer again with JSON that matches the schema exactly.",
        },
    ]
    second = await _one_call(client, repair)
    calls.append(second)
    try:
        second.output = _check(second.response or {}, spec)
        return Answer(second.output, calls)
    except ValueError as e:
        second.status, second.error = CallStatus.INVALID_OUTPUT, str(e)
        raise InvalidOutput(
            f"invalid model output after one repair attempt: {e}", output=_text_of(second.response or {}), calls=calls
        ) from None
