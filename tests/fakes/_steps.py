"""Scripted outcomes for the fake Messages API.

A `Step` is one outcome for one `/v1/messages` call. Build them with the module-level
constructors (`reply`, `error`, `rate_limited`, ...). Steps round-trip through plain dicts
(`Step.to_dict()` / `Step.from_dict()`) so they can be sent to an out-of-process fake via
`POST /_fake/enqueue`.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any, Literal, get_args

__all__ = [
    "Step",
    "StepKind",
    "default",
    "error",
    "hang",
    "held",
    "invalid_json_reply",
    "max_tokens_cut",
    "overloaded",
    "rate_limited",
    "raw",
    "refusal",
    "reply",
    "server_error",
    "slow",
    "spend_limit",
    "tool_reply",
]

StepKind = Literal[
    "default", "reply", "tool_reply", "error", "raw", "slow", "hang", "held", "refusal", "max_tokens_cut"
]
_KINDS: frozenset[str] = frozenset(get_args(StepKind))


@dataclass(frozen=True)
class Step:
    """One scripted outcome. Prefer the constructor functions over building this by hand.

    - default: what the fake does unscripted (schema-generated output / tool_use / text).
    - reply: `content` is a JSON-able object (sent as JSON text; as `tool_use.input` when the
      request forces a tool and `content` is a dict) or a str (sent verbatim as the text).
    - tool_reply: a `tool_use` block with `content` as its input (`tool_name` or the forced/first tool).
    - error: HTTP `status` with the API error body; `headers` holds retry headers.
    - raw: HTTP `status`, `content` (str) as the body, `content_type`.
    - slow: sleep `seconds`, then run `then` (None = default). hang: never answer.
    - held: wait until the test opens the fake's gate (`open_gate()`), then run `then`.
    - refusal / max_tokens_cut: the model refused / ran out of tokens mid-JSON.
    """

    kind: StepKind
    content: Any = None
    stop_reason: str | None = None
    stop_details: dict[str, Any] | None = None
    usage: dict[str, Any] | None = None
    tool_name: str | None = None
    status: int = 200
    error_type: str | None = None
    message: str | None = None
    error_code: str | None = None
    headers: dict[str, str] = field(default_factory=dict)
    content_type: str | None = None
    seconds: float = 0.0
    then: Step | None = None

    def __post_init__(self) -> None:
        if self.kind not in _KINDS:
            raise ValueError(f"unknown step kind {self.kind!r}; one of {sorted(_KINDS)}")

    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {"kind": self.kind}
        for f in dataclasses.fields(self):
            value = getattr(self, f.name)
            if f.name == "kind" or value == f.default or (f.name == "headers" and not value):
                continue
            out[f.name] = value.to_dict() if isinstance(value, Step) else value
        return out

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Step:
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = set(data) - known
        if unknown:
            raise ValueError(f"unknown step fields {sorted(unknown)}")
        kwargs = dict(data)
        if isinstance(kwargs.get("then"), dict):
            kwargs["then"] = cls.from_dict(kwargs["then"])
        if "headers" in kwargs:
            kwargs["headers"] = {str(k): str(v) for k, v in (kwargs["headers"] or {}).items()}
        return cls(**kwargs)


_DEFAULT_MESSAGES = {
    "invalid_request_error": "Invalid request.",
    "authentication_error": "invalid x-api-key",
    "billing_error": "Your credit balance is too low to access the Anthropic API.",
    "permission_error": "Your API key does not have permission to use the specified resource.",
    "not_found_error": "Not found.",
    "rate_limit_error": "This request would exceed the rate limit for your organization. Please retry later.",
    "api_error": "Internal server error",
    "timeout_error": "Request timed out",
    "overloaded_error": "Overloaded",
}


def default() -> Step:
    """The unscripted behaviour (useful as `slow(..., then=default())` or inside a sequence)."""
    return Step("default")


def reply(content: Any, *, stop_reason: str = "end_turn", usage: dict[str, Any] | None = None) -> Step:
    """A successful reply. dict/list/number → JSON text (or tool input on forced tool use); str → verbatim."""
    return Step("reply", content=content, stop_reason=stop_reason, usage=usage)


def tool_reply(input: dict[str, Any], *, name: str | None = None, usage: dict[str, Any] | None = None) -> Step:
    """A `tool_use` block with this input; `name` defaults to the forced tool or the first tool."""
    return Step("tool_reply", content=input, tool_name=name, stop_reason="tool_use", usage=usage)


def error(
    status: int,
    type: str,
    message: str | None = None,
    *,
    retry_after: float | None = None,
    retry_after_ms: float | None = None,
    error_code: str | None = None,
    should_retry: bool | None = None,
    headers: dict[str, str] | None = None,
) -> Step:
    """An API error response in the real shape, with optional retry headers."""
    hdrs = dict(headers or {})
    if retry_after is not None:
        hdrs["retry-after"] = _num(retry_after)
    if retry_after_ms is not None:
        hdrs["retry-after-ms"] = _num(retry_after_ms)
    if should_retry is not None:
        hdrs["x-should-retry"] = "true" if should_retry else "false"
    return Step(
        "error",
        status=status,
        error_type=type,
        message=message or _DEFAULT_MESSAGES.get(type, type),
        error_code=error_code,
        headers=hdrs,
    )


def _num(value: float) -> str:
    return str(int(value)) if float(value).is_integer() else str(value)


def rate_limited(retry_after: float | None = 1, *, retry_after_ms: float | None = None) -> Step:
    """429 rate_limit_error with `retry-after` (and optionally `retry-after-ms`, which the SDK prefers)."""
    return error(429, "rate_limit_error", retry_after=retry_after, retry_after_ms=retry_after_ms)


def overloaded(*, retry_after: float | None = None, retry_after_ms: float | None = None) -> Step:
    """529 overloaded_error."""
    return error(529, "overloaded_error", retry_after=retry_after, retry_after_ms=retry_after_ms)


def server_error(*, retry_after_ms: float | None = None) -> Step:
    """500 api_error."""
    return error(500, "api_error", retry_after_ms=retry_after_ms)


def spend_limit(*, should_retry: bool | None = None) -> Step:
    """429 rate_limit_error with details.error_code enforced_spend_limit_reached and no retry-after."""
    return error(
        429,
        "rate_limit_error",
        "You have reached your specified API usage limits. You will regain access on 2027-01-01 at 00:00 UTC.",
        error_code="enforced_spend_limit_reached",
        should_retry=should_retry,
    )


def raw(status: int, body: str, *, content_type: str = "text/html", headers: dict[str, str] | None = None) -> Step:
    """Any raw HTTP response (HTML 502 page, truncated JSON with a JSON content-type, ...)."""
    return Step("raw", status=status, content=body, content_type=content_type, headers=dict(headers or {}))


def slow(seconds: float, then: Step | None = None) -> Step:
    """Sleep `seconds` (cut short by stop()), then answer with `then` (default behaviour if None)."""
    return Step("slow", seconds=float(seconds), then=then)


def held(then: Step | None = None) -> Step:
    """Hold the call until the test calls ``open_gate()`` (or the server stops), then answer with
    `then`: how many calls a client keeps in flight at once, without a clock."""
    return Step("held", then=then)


def hang() -> Step:
    """Never answer; the handler is released (without a response) when the server stops."""
    return Step("hang")


def refusal(
    category: str | None = "general_harms",
    *,
    explanation: str | None = "The request was declined by a safety classifier.",
    text: str | None = None,
) -> Step:
    """stop_reason "refusal" with stop_details; content is empty unless `text` is given."""
    details = {"type": "refusal", "category": category, "explanation": explanation}
    return Step("refusal", content=text, stop_reason="refusal", stop_details=details)


def max_tokens_cut(text: str | None = None) -> Step:
    """stop_reason "max_tokens" with truncated JSON text (half of the schema-generated document if None)."""
    return Step("max_tokens_cut", content=text, stop_reason="max_tokens")


def invalid_json_reply(text: str = 'Sure! Here is the JSON you asked for: {"category": ') -> Step:
    """A 200 end_turn reply whose text is not valid JSON."""
    return Step("reply", content=text, stop_reason="end_turn")
