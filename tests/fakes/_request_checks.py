"""Request validation of the fake Messages API: what the real API (version 2026-10-21) rejects."""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any

from tests.fakes._schema_fill import strict_schema_problems

__all__ = [
    "COUNT_TOKENS_KEYS",
    "FORCED_TOOL_REJECTED_MODELS",
    "MESSAGES_KEYS",
    "NO_PREFILL_MODELS",
    "RequestRejected",
    "check_count_tokens_body",
    "check_messages_body",
    "output_schema",
]

API_VERSIONS = frozenset({"2023-06-01", "2026-10-21"})
MESSAGES_KEYS = frozenset(
    {
        "model", "max_tokens", "messages",
        "cache_control", "container", "diagnostics", "inference_geo", "metadata", "output_config",
        "service_tier", "speed", "stop_sequences", "stream", "system", "thinking", "tool_choice", "tools",
    }
)  # fmt: skip
COUNT_TOKENS_KEYS = frozenset(
    {
        "model",
        "messages",
        "cache_control",
        "output_config",
        "speed",
        "system",
        "thinking",
        "tool_choice",
        "tools",
    }
)
SAMPLING_KEYS = ("temperature", "top_p", "top_k")
STRUCTURED_OUTPUTS_BETA = "structured-outputs-2025-11-13"
# [docs] forced tool_choice returns 400 on these; assistant prefill returns 400 on these
FORCED_TOOL_REJECTED_MODELS = frozenset({"claude-opus-5-5", "claude-sonnet-5-5", "claude-fable-5-1"})
NO_PREFILL_MODELS = frozenset({"claude-haiku-5-5", "claude-opus-5-5", "claude-sonnet-5-5"})
RETIRED_MODEL_PREFIXES = ("claude-2", "claude-instant", "claude-3-", "claude-opus-4-0", "claude-sonnet-4-0",
                          "claude-opus-4-2025", "claude-sonnet-4-2025", "claude-mythos-preview")  # fmt: skip
_TOOL_KEYS = frozenset(
    {"name", "input_schema", "description", "strict", "cache_control", "defer_loading",
     "eager_input_streaming", "input_examples", "allowed_callers", "type"}
)  # fmt: skip
_TOOL_NAME = re.compile(r"^[a-zA-Z0-9_-]{1,128}$")


class RequestRejected(Exception):
    """The fake answers with this HTTP status / API error type / message."""

    def __init__(self, status: int, error_type: str, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.error_type = error_type
        self.message = message


def _bad(message: str) -> RequestRejected:
    return RequestRejected(400, "invalid_request_error", message)


def _betas(headers: Mapping[str, str]) -> set[str]:
    return {b.strip() for b in headers.get("anthropic-beta", "").split(",") if b.strip()}


def check_headers(headers: Mapping[str, str], api_key: str | None) -> None:
    auth = headers.get("authorization", "")
    key = auth[7:].strip() if auth.lower().startswith("bearer ") else headers.get("x-api-key", "").strip()
    if not key:
        raise RequestRejected(401, "authentication_error", "x-api-key header is required")
    if api_key is not None and key != api_key:
        raise RequestRejected(401, "authentication_error", "invalid x-api-key")
    version = headers.get("anthropic-version")
    if not version:
        raise _bad("anthropic-version: header is required")
    if version not in API_VERSIONS:
        raise _bad(f"anthropic-version: invalid version {version!r}")


def output_schema(body: Mapping[str, Any]) -> dict[str, Any] | None:
    """The JSON schema of `output_config.format` (or the deprecated beta `output_format`)."""
    oc = body.get("output_config")
    fmt = oc.get("format") if isinstance(oc, Mapping) else None
    fmt = fmt if fmt is not None else body.get("output_format")
    schema = fmt.get("schema") if isinstance(fmt, Mapping) else None
    return schema if isinstance(schema, dict) else None


def _check_common(body: Any, headers: Mapping[str, str], allowed: frozenset[str], strict_schemas: bool) -> None:
    if not isinstance(body, dict):
        raise _bad("Request body must be a JSON object")
    version = headers.get("anthropic-version")
    if version != "2023-06-01":
        for key in SAMPLING_KEYS:
            if key in body:
                raise _bad(f"{key}: is not supported with anthropic-version {version}; remove it from the request")
    if "output_format" in body and STRUCTURED_OUTPUTS_BETA in _betas(headers):
        allowed = allowed | {"output_format"}
    for key in body:
        if key not in allowed:
            raise _bad(f"{key}: Extra inputs are not permitted")
    for key in ("model", "messages"):
        if key not in body:
            raise _bad(f"{key}: Field required")
    model = body["model"]
    if not isinstance(model, str) or not model:
        raise _bad("model: Input should be a valid string")
    if not model.startswith("claude-") or model.startswith(RETIRED_MODEL_PREFIXES):
        raise RequestRejected(404, "not_found_error", f"model: {model}")
    _check_messages(body["messages"], model)
    _check_system(body.get("system"))
    tool_names = _check_tools(body.get("tools"), strict_schemas)
    _check_tool_choice(body.get("tool_choice"), tool_names, model, "tools" in body)
    _check_output_config(body, strict_schemas)
    _check_cache_control(body.get("cache_control"), "cache_control")
    thinking = body.get("thinking")
    if thinking is not None and (
        not isinstance(thinking, Mapping)
        or thinking.get("type") not in ("adaptive", "enabled", "disabled", "between_tools")
    ):
        raise _bad("thinking: Input tag does not match any of the expected tags")


def check_messages_body(body: Any, headers: Mapping[str, str], *, strict_schemas: bool = True) -> None:
    _check_common(body, headers, MESSAGES_KEYS, strict_schemas)
    max_tokens = body.get("max_tokens")
    if "max_tokens" not in body:
        raise _bad("max_tokens: Field required")
    if not isinstance(max_tokens, int) or isinstance(max_tokens, bool) or max_tokens < 1:
        raise _bad("max_tokens: Input should be an integer greater than or equal to 1")
    stop = body.get("stop_sequences")
    if stop is not None and (not isinstance(stop, list) or not all(isinstance(s, str) and s for s in stop)):
        raise _bad("stop_sequences: Input should be a list of non-empty strings")
    if "stream" in body and not isinstance(body["stream"], bool):
        raise _bad("stream: Input should be a valid boolean")
    if body.get("service_tier") not in (None, "auto", "standard_only"):
        raise _bad("service_tier: Input should be 'auto' or 'standard_only'")
    if body.get("speed") not in (None, "standard", "fast"):
        raise _bad("speed: Input should be 'standard' or 'fast'")
    metadata = body.get("metadata")
    if metadata is not None and (not isinstance(metadata, Mapping) or set(metadata) - {"user_id"}):
        raise _bad("metadata: only 'user_id' is permitted")


def check_count_tokens_body(body: Any, headers: Mapping[str, str], *, strict_schemas: bool = True) -> None:
    _check_common(body, headers, COUNT_TOKENS_KEYS, strict_schemas)


def _check_messages(messages: Any, model: str) -> None:
    if not isinstance(messages, list) or not messages:
        raise _bad("messages: at least one message is required")
    for i, msg in enumerate(messages):
        if not isinstance(msg, Mapping) or set(msg) - {"role", "content"} or "content" not in msg:
            raise _bad(f"messages.{i}: each message must be an object with only 'role' and 'content'")
        if msg.get("role") not in ("user", "assistant"):
            raise _bad(f"messages.{i}.role: Input should be 'user' or 'assistant'")
        content = msg["content"]
        last_assistant = i == len(messages) - 1 and msg["role"] == "assistant"
        if isinstance(content, str):
            if not content and not last_assistant:
                raise _bad(f"messages.{i}: all messages must have non-empty content")
        elif isinstance(content, list):
            if not content and not last_assistant:
                raise _bad(f"messages.{i}: all messages must have non-empty content")
            for j, block in enumerate(content):
                if not isinstance(block, Mapping) or not isinstance(block.get("type"), str):
                    raise _bad(f"messages.{i}.content.{j}: content blocks must have a 'type'")
                if block["type"] == "text" and (not isinstance(block.get("text"), str) or not block["text"]):
                    raise _bad(f"messages.{i}.content.{j}: text content blocks must be non-empty")
                _check_cache_control(block.get("cache_control"), f"messages.{i}.content.{j}.cache_control")
        else:
            raise _bad(f"messages.{i}.content: Input should be a valid string or list of content blocks")
    if messages[-1].get("role") == "assistant" and model in NO_PREFILL_MODELS:
        raise _bad(f"Prefilling assistant messages is not supported for {model}.")


def _check_system(system: Any) -> None:
    if system is None or isinstance(system, str):
        return
    if not isinstance(system, list):
        raise _bad("system: Input should be a valid string or list of text blocks")
    for i, block in enumerate(system):
        if not isinstance(block, Mapping) or block.get("type") != "text" or not isinstance(block.get("text"), str):
            raise _bad(f"system.{i}: system blocks must be text blocks")
        if not block["text"]:
            raise _bad(f"system.{i}: text content blocks must be non-empty")
        _check_cache_control(block.get("cache_control"), f"system.{i}.cache_control")


def _check_cache_control(cc: Any, where: str) -> None:
    if cc is None:
        return
    if not isinstance(cc, Mapping) or cc.get("type") != "ephemeral" or cc.get("ttl", "5m") not in ("5m", "1h"):
        raise _bad(f"{where}: expected {{'type': 'ephemeral', 'ttl'?: '5m'|'1h'}}")


def _check_tools(tools: Any, strict_schemas: bool) -> list[str]:
    if tools is None:
        return []
    if not isinstance(tools, list):
        raise _bad("tools: Input should be a valid list")
    names: list[str] = []
    for i, tool in enumerate(tools):
        if not isinstance(tool, Mapping):
            raise _bad(f"tools.{i}: Input should be an object")
        if tool.get("type") not in (None, "custom"):  # server tool (web_search_..., bash_..., ...)
            names.append(str(tool.get("name")))
            continue
        for key in tool:
            if key not in _TOOL_KEYS:
                raise _bad(f"tools.{i}.{key}: Extra inputs are not permitted")
        name = tool.get("name")
        if not isinstance(name, str) or not _TOOL_NAME.match(name):
            raise _bad(f"tools.{i}.name: String should match pattern '^[a-zA-Z0-9_-]{{1,128}}$'")
        schema = tool.get("input_schema")
        if not isinstance(schema, Mapping) or schema.get("type") != "object":
            raise _bad(f"tools.{i}.input_schema.type: Input should be 'object'")
        if tool.get("strict") is True and strict_schemas:
            problems = strict_schema_problems(schema, path=f"tools.{i}.input_schema")
            if problems:
                raise _bad("Invalid schema for strict tool: " + "; ".join(problems))
        _check_cache_control(tool.get("cache_control"), f"tools.{i}.cache_control")
        if name in names:
            raise _bad(f"tools: Tool names must be unique (duplicate {name!r})")
        names.append(name)
    return names


def _check_tool_choice(choice: Any, names: list[str], model: str, has_tools: bool) -> None:
    if choice is None:
        return
    if not isinstance(choice, Mapping) or choice.get("type") not in ("auto", "any", "tool", "none"):
        raise _bad("tool_choice.type: Input should be 'auto', 'any', 'tool' or 'none'")
    if not has_tools and choice["type"] != "none":
        raise _bad("tool_choice may only be specified while providing tools.")
    if choice["type"] == "tool" and choice.get("name") not in names:
        raise _bad(f"tool_choice.name: Tool {choice.get('name')!r} not found in tools")
    if choice["type"] in ("tool", "any") and model in FORCED_TOOL_REJECTED_MODELS:
        raise _bad(f"Forced tool use (tool_choice {choice['type']!r}) is not supported for {model}.")


def _check_output_config(body: Mapping[str, Any], strict_schemas: bool) -> None:
    oc = body.get("output_config")
    if oc is not None:
        if not isinstance(oc, Mapping) or set(oc) - {"format", "effort"}:
            raise _bad("output_config: only 'format' and 'effort' are permitted")
        if oc.get("effort") not in (None, "low", "medium", "high", "xhigh", "max"):
            raise _bad("output_config.effort: Input should be 'low', 'medium', 'high', 'xhigh' or 'max'")
    formats = [("output_config.format", oc.get("format") if isinstance(oc, Mapping) else None)]
    formats.append(("output_format", body.get("output_format")))
    given = [(where, fmt) for where, fmt in formats if fmt is not None]
    if len(given) > 1:
        raise _bad("Both output_format and output_config.format were provided; use output_config.format")
    for where, fmt in given:
        if not isinstance(fmt, Mapping) or fmt.get("type") != "json_schema" or set(fmt) - {"type", "schema"}:
            raise _bad(f"{where}: expected {{'type': 'json_schema', 'schema': {{...}}}}")
        schema = fmt.get("schema")
        if not isinstance(schema, Mapping):
            raise _bad(f"{where}.schema: Field required")
        if strict_schemas:
            problems = strict_schema_problems(schema, path=f"{where}.schema")
            if problems:
                raise _bad("Invalid JSON schema for structured output: " + "; ".join(problems))
