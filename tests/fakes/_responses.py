"""Turning a validated request + a scripted step into an HTTP outcome (JSON or SSE)."""

from __future__ import annotations

import json
import secrets
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from tests.fakes._request_checks import (
    RequestRejected,
    check_count_tokens_body,
    check_headers,
    check_messages_body,
    output_schema,
)
from tests.fakes._schema_fill import generate, validate
from tests.fakes._sse import to_sse
from tests.fakes._steps import (
    Step,
    error,
    overloaded,
    rate_limited,
    raw,
    refusal,
    server_error,
    slow,
    spend_limit,
)
from tests.fakes._steps import hang as hang_step
from tests.fakes._steps import invalid_json_reply as invalid_json_step
from tests.fakes._steps import max_tokens_cut as max_tokens_step

if TYPE_CHECKING:
    from tests.fakes.messages_api import FakeMessagesAPI, RecordedRequest

_B58 = "123456789ABCDEFGHJKLMNPQRSTUVWXYZabcdefghijkmnopqrstuvwxyz"
DEFAULT_TEXT = "This is a reply from the fake Messages API."
# models whose adaptive thinking is on by default [docs]: replies start with a thinking block
ADAPTIVE_THINKING_MODELS = frozenset({"claude-haiku-5-5"})


def new_id(prefix: str) -> str:
    return prefix + "".join(secrets.choice(_B58) for _ in range(24))


@dataclass
class Outcome:
    """An HTTP answer. `parsed` is what gets recorded as `response_body`."""

    status: int
    body: bytes
    content_type: str = "application/json"
    headers: dict[str, str] = field(default_factory=dict)
    parsed: Any = None

    @classmethod
    def json(cls, status: int, obj: Any, headers: Mapping[str, str] | None = None) -> Outcome:
        return cls(status, json.dumps(obj).encode(), "application/json", dict(headers or {}), obj)


def error_outcome(
    status: int, error_type: str, message: str, request_id: str, *, error_code: str | None = None
) -> Outcome:
    err: dict[str, Any] = {"type": error_type, "message": message}
    if error_code is not None:
        err["details"] = {"error_code": error_code}
    return Outcome.json(status, {"type": "error", "error": err, "request_id": request_id})


def _dumps(obj: Any) -> str:
    return json.dumps(obj, sort_keys=True, separators=(",", ":"), ensure_ascii=False)


def estimate_tokens(body: Mapping[str, Any]) -> int:
    """Deterministic input-token estimate: len(json of system+tools+messages+schema) // 4."""
    payload = {k: body.get(k) for k in ("system", "tools", "messages")}
    payload["schema"] = output_schema(body)
    return max(1, len(_dumps(payload)) // 4)


def _cache_prefix(body: Mapping[str, Any]) -> tuple[str, float] | None:
    """(serialised cached prefix, ttl seconds) when the request asks for prompt caching."""
    ttls: list[str] = []
    top = body.get("cache_control")
    if isinstance(top, Mapping):
        ttls.append(top.get("ttl", "5m"))
    system = body.get("system")
    blocks = system if isinstance(system, list) else []
    ttls += [b["cache_control"].get("ttl", "5m") for b in blocks if isinstance(b.get("cache_control"), Mapping)]
    ttls += [t["cache_control"].get("ttl", "5m") for t in body.get("tools") or [] if t.get("cache_control")]
    last_msg = -1
    for i, msg in enumerate(body["messages"]):
        content = msg.get("content")
        for block in content if isinstance(content, list) else []:
            if isinstance(block, Mapping) and isinstance(block.get("cache_control"), Mapping):
                ttls.append(block["cache_control"].get("ttl", "5m"))
                last_msg = i
    if not ttls:
        return None
    prefix: dict[str, Any] = {"model": body["model"], "tools": body.get("tools"), "system": system}
    if last_msg >= 0:
        prefix["messages"] = body["messages"][: last_msg + 1]
    elif system is None and not body.get("tools"):
        prefix["messages"] = body["messages"]  # nothing static: top-level caching covers the whole prompt
    return _dumps(prefix), 3600.0 if "1h" in ttls else 300.0


@dataclass
class Ctx:
    fake: FakeMessagesAPI
    body: dict[str, Any]
    headers: dict[str, str]
    request_id: str

    @property
    def schema(self) -> dict[str, Any] | None:
        return output_schema(self.body)

    def tool(self, forced_only: bool) -> dict[str, Any] | None:
        tools = [t for t in self.body.get("tools") or [] if t.get("type") in (None, "custom")]
        choice = self.body.get("tool_choice") or {}
        if choice.get("type") == "tool":
            return next((t for t in tools if t["name"] == choice["name"]), None)
        if choice.get("type") == "any" or (tools and not forced_only):
            return tools[0] if tools else None
        return None

    def usage(self, output_tokens: int, override: Mapping[str, Any] | None) -> dict[str, Any]:
        total = estimate_tokens(self.body)
        creation = {"ephemeral_5m_input_tokens": 0, "ephemeral_1h_input_tokens": 0}
        read = 0
        cached = _cache_prefix(self.body)
        if cached is not None:
            prefix, ttl = cached
            tokens = min(max(1, len(prefix) // 4), total - 1) if total > 1 else 0
            if self.fake.cache_lookup(prefix, ttl):
                read = tokens
            else:
                creation["ephemeral_1h_input_tokens" if ttl > 300 else "ephemeral_5m_input_tokens"] = tokens
        usage: dict[str, Any] = {
            "input_tokens": total - read - sum(creation.values()),
            "output_tokens": output_tokens,
            "cache_creation_input_tokens": sum(creation.values()),
            "cache_read_input_tokens": read,
            "cache_creation": creation,
            "server_tool_use": None,
            "service_tier": "standard",
            "inference_geo": "global",
        }
        for key, value in (override or {}).items():
            if isinstance(value, Mapping) and isinstance(usage.get(key), dict):
                usage[key] = {**usage[key], **value}
            else:
                usage[key] = value
        return usage


# ------------------------------------------------------------------------------------- scenarios
def scenario_step(fake: FakeMessagesAPI, headers: Mapping[str, str]) -> Step | None:
    """The step named by the `x-fake-scenario` request header, if any applies to this attempt."""
    name = headers.get("x-fake-scenario")
    if not name:
        return None
    attempt = fake.scenario_attempt(name, headers.get("x-fake-key", ""))
    ra = headers.get("x-fake-retry-after")
    ra_ms = headers.get("x-fake-retry-after-ms")
    retry: dict[str, Any] = {
        "retry_after": float(ra) if ra is not None else (None if ra_ms else 1),
        "retry_after_ms": float(ra_ms) if ra_ms is not None else None,
    }
    once = {
        "429-once": rate_limited(**retry),
        "529-once": overloaded(**retry),
        "500-once": server_error(retry_after_ms=retry["retry_after_ms"]),
        "not-json-500": raw(500, "<html><body><h1>500 Internal Server Error</h1></body></html>"),
    }
    always = {
        "429-always": rate_limited(**retry),
        "529-always": overloaded(**retry),
        "500-always": server_error(retry_after_ms=retry["retry_after_ms"]),
        "429-spend": spend_limit(),
        "429-spend-noretry": spend_limit(should_retry=False),
        "400": error(400, "invalid_request_error", "scripted bad request"),
        "401": error(401, "authentication_error"),
        "minimal": raw(200, json.dumps({"content": [{"type": "text", "text": "hi"}]}), content_type="application/json"),
        "textplain": raw(200, "this is not json", content_type="text/plain"),
        "html200": raw(200, "<html><body>ok</body></html>", content_type="text/html"),
        "badjson200": raw(200, '{"id": "msg_trunc", "content": [', content_type="application/json"),
        "slow": slow(float(headers.get("x-fake-sleep", "1.5"))),
        "hang": hang_step(),
        "refusal": refusal(),
        "max-tokens": max_tokens_step(),
        "invalid-json": invalid_json_step(),
    }
    if name in once:
        return once[name] if attempt == 0 else None
    if name in always:
        return always[name]
    return error(400, "invalid_request_error", f"unknown x-fake-scenario {name!r}")


# ------------------------------------------------------------------------------------- dispatch
def respond(fake: FakeMessagesAPI, rec: RecordedRequest, raw_text: str) -> Outcome | None:
    """The outcome for one API call; None means "answer nothing" (server stopping during slow/hang)."""
    rid = new_id("req_")
    out = _respond(fake, rec, raw_text, rid)
    if out is not None:
        out.headers.setdefault("request-id", rid)
        out.headers.setdefault("anthropic-organization-id", fake.organization_id)
    return out


def _respond(fake: FakeMessagesAPI, rec: RecordedRequest, raw_text: str, rid: str) -> Outcome | None:
    method, path, headers = rec.method, rec.path, rec.headers
    if path.startswith("/v1/messages/batches"):
        try:
            check_headers(headers, fake.api_key)
        except RequestRejected as rej:
            return error_outcome(rej.status, rej.error_type, rej.message, rid)
        return fake.batches.route(method, path, raw_text, rid)
    endpoints = {"/v1/messages": True, "/v1/messages/count_tokens": False}
    if path not in endpoints:
        return error_outcome(404, "not_found_error", f"Not found: {method} {path}", rid)
    if method != "POST":
        return error_outcome(405, "invalid_request_error", f"Method {method} not allowed", rid)
    try:
        check_headers(headers, fake.api_key)
        try:
            body = json.loads(raw_text)
        except ValueError as exc:
            raise RequestRejected(400, "invalid_request_error", f"There was an error parsing the body: {exc}") from exc
        check = check_messages_body if endpoints[path] else check_count_tokens_body
        check(body, headers, strict_schemas=fake.strict_schemas)
    except RequestRejected as rej:
        return error_outcome(rej.status, rej.error_type, rej.message, rid)
    if not endpoints[path]:
        return Outcome.json(200, {"input_tokens": estimate_tokens(body)})
    wait = fake.over_limit()
    if wait is not None:
        out = run_step(Ctx(fake, body, headers, rid), rate_limited(retry_after=max(1, int(wait) + 1)))
        assert out is not None
        out.headers.update(fake.rate_limit_headers(0, limited=True))
        rec.step = "rate-limit"
        return out
    ctx = Ctx(fake, body, headers, rid)
    step, source = fake.take_for_model(str(body.get("model")))
    if step is None:
        step, source = fake.take_keyed(raw_text)
    if step is None:
        step, source = scenario_step(fake, headers), "scenario"
    if step is None:
        step, source = fake.take_fifo_or_default()
    rec.step = f"{source}:{step.kind}" if step is not None else source
    out = run_step(ctx, step)
    if out is None:
        return None
    is_message = isinstance(out.parsed, dict) and out.parsed.get("type") == "message"
    tokens = out.parsed["usage"]["input_tokens"] if is_message else 0
    for k, v in fake.rate_limit_headers(tokens, limited=out.status == 429).items():
        out.headers.setdefault(k, v)
    if is_message and body.get("stream"):
        out = to_sse(out)
    return out


def run_step(ctx: Ctx, step: Step | None) -> Outcome | None:
    fake = ctx.fake
    if step is None or step.kind == "default":
        blocks, stop_reason = _generated(ctx)
        return _message(ctx, blocks, stop_reason, None, None)
    match step.kind:
        case "slow":
            if fake.stopping.wait(step.seconds):
                return None
            return run_step(ctx, step.then)
        case "hang":
            fake.stopping.wait()
            return None
        case "held":
            while not fake.gate.wait(0.05):
                if fake.stopping.is_set():
                    return None
            return run_step(ctx, step.then)
        case "error":
            out = error_outcome(
                step.status,
                step.error_type or "api_error",
                step.message or "",
                ctx.request_id,
                error_code=step.error_code,
            )
            out.headers.update(step.headers)
            return out
        case "raw":
            text = step.content if isinstance(step.content, str) else json.dumps(step.content)
            return Outcome(step.status, text.encode(), step.content_type or "text/plain", dict(step.headers), text)
        case "reply":
            forced = ctx.tool(forced_only=True)
            if forced is not None and isinstance(step.content, dict):
                blocks = [_tool_block(forced["name"], step.content)]
                reason = "tool_use" if step.stop_reason == "end_turn" else step.stop_reason
                return _message(ctx, blocks, reason, None, step.usage)
            text = step.content if isinstance(step.content, str) else json.dumps(step.content)
            return _message(ctx, [_text_block(text)], step.stop_reason, None, step.usage)
        case "tool_reply":
            tool = ctx.tool(forced_only=False)
            name = step.tool_name or (tool["name"] if tool else "tool")
            return _message(ctx, [_tool_block(name, step.content or {})], "tool_use", None, step.usage)
        case "refusal":
            blocks = [] if step.content is None else [_text_block(str(step.content))]
            return _message(ctx, blocks, "refusal", step.stop_details, step.usage)
        case "max_tokens_cut":
            text = step.content
            if text is None:
                full = json.dumps(generate(ctx.schema)) if ctx.schema else '{"summary": "the event describes a'
                text = full[: max(1, len(full) // 2)]
            usage = {"output_tokens": ctx.body["max_tokens"], **(step.usage or {})}
            return _message(ctx, [_text_block(str(text))], "max_tokens", None, usage)
    raise ValueError(f"unhandled step kind {step.kind!r}")


def _text_block(text: str) -> dict[str, Any]:
    return {"type": "text", "text": text, "citations": None}


def _tool_block(name: str, tool_input: dict[str, Any]) -> dict[str, Any]:
    return {
        "type": "tool_use",
        "id": new_id("toolu_01"),
        "name": name,
        "input": tool_input,
        "caller": {"type": "direct"},
    }


def _generated(ctx: Ctx) -> tuple[list[dict[str, Any]], str]:
    forced = ctx.tool(forced_only=True)
    if forced is not None:
        schema = forced["input_schema"]
        tool_input = generate(schema)
        _self_check(tool_input, schema)
        return [_tool_block(forced["name"], tool_input)], "tool_use"
    schema = ctx.schema
    if schema is not None:
        doc = generate(schema)
        _self_check(doc, schema)
        text = json.dumps(doc)
    else:
        text = DEFAULT_TEXT
    stop_reason = "end_turn"
    if len(text) // 4 + 1 > ctx.body["max_tokens"]:  # the model runs out of tokens mid-output
        text, stop_reason = text[: ctx.body["max_tokens"] * 4], "max_tokens"
    blocks = [_text_block(text)]
    thinking = ctx.body.get("thinking") or {}
    if thinking.get("type") in ("adaptive", "enabled") or (
        ctx.body["model"] in ADAPTIVE_THINKING_MODELS and thinking.get("type") != "disabled"
    ):
        blocks.insert(0, {"type": "thinking", "thinking": "", "signature": new_id("sig_")})
    return blocks, stop_reason


def _self_check(doc: Any, schema: dict[str, Any]) -> None:
    problems = validate(doc, schema)
    if problems:
        raise RuntimeError(f"fake generated a document that breaks its schema: {problems}")


def _message(
    ctx: Ctx,
    blocks: list[dict[str, Any]],
    stop_reason: str | None,
    stop_details: dict[str, Any] | None,
    usage_override: Mapping[str, Any] | None,
) -> Outcome:
    out_chars = sum(len(b.get("text", "")) + len(json.dumps(b.get("input", ""))) for b in blocks)
    output_tokens = min(ctx.body["max_tokens"], max(1, out_chars // 4 + 1))
    message = {
        "id": new_id("msg_01"),
        "type": "message",
        "role": "assistant",
        "model": ctx.body["model"],
        "content": blocks,
        "stop_reason": stop_reason,
        "stop_sequence": None,
        "stop_details": stop_details,
        "container": None,
        "diagnostics": None,
        "usage": ctx.usage(output_tokens, usage_override),
    }
    return Outcome.json(200, message)
