"""The fake Messages API, driven by the real `anthropic` SDK over HTTP."""

from __future__ import annotations

import asyncio
import datetime as dt
import json
import threading
import time
import urllib.error
import urllib.request
import uuid
from collections.abc import Iterator
from typing import Any, Literal

import anthropic
import pydantic
import pytest
from anthropic.types import Message, MessageParam, TextBlock, ThinkingBlock, ToolUseBlock

from tests.fakes._schema_fill import generate, validate
from tests.fakes.messages_api import (
    FakeMessagesAPI,
    FakeMessagesAPIProcess,
    Step,
    error,
    hang,
    invalid_json_reply,
    max_tokens_cut,
    overloaded,
    rate_limited,
    raw,
    refusal,
    reply,
    server_error,
    slow,
    spend_limit,
    tool_reply,
)

MODEL = "claude-haiku-4-5"
USER: list[MessageParam] = [{"role": "user", "content": '{"event": "invoice.payment_failed", "id": "evt_1"}'}]


class Tag(pydantic.BaseModel):
    name: str
    weight: float


class Classification(pydantic.BaseModel):
    category: Literal["billing", "auth", "other"]
    severity: int = pydantic.Field(ge=1, le=5)
    summary: str = pydantic.Field(min_length=3, max_length=40)
    occurred_at: dt.datetime
    day: dt.date
    ref: uuid.UUID
    link: pydantic.AnyUrl
    tags: list[Tag] = pydantic.Field(min_length=2)
    parent: Tag | None
    confident: bool


@pytest.fixture
def fake() -> Iterator[FakeMessagesAPI]:
    with FakeMessagesAPI() as server:
        yield server


_OPEN_CLIENTS: list[anthropic.Anthropic] = []


@pytest.fixture(autouse=True)
def _close_clients() -> Iterator[None]:
    yield
    while _OPEN_CLIENTS:
        _OPEN_CLIENTS.pop().close()


def client(fake: FakeMessagesAPI, **kw: Any) -> anthropic.Anthropic:
    """A strict SDK client for `fake` (max_retries=0 unless given), closed after the test."""
    opts: dict[str, Any] = {"api_key": "test", "max_retries": 0, "_strict_response_validation": True}
    c = anthropic.Anthropic(base_url=fake.base_url, **{**opts, **kw})
    _OPEN_CLIENTS.append(c)
    return c


def create(c: anthropic.Anthropic, **kw: Any) -> Message:
    msg: Message = c.messages.create(**{"model": MODEL, "max_tokens": 1024, "messages": USER, **kw})
    return msg


def post(url: str, body: Any, headers: dict[str, str]) -> tuple[int, dict[str, Any], dict[str, str]]:
    req = urllib.request.Request(url, data=json.dumps(body).encode(), method="POST", headers=headers)  # noqa: S310
    try:
        with urllib.request.urlopen(req, timeout=5) as resp:  # noqa: S310
            return resp.status, json.loads(resp.read()), dict(resp.headers)
    except urllib.error.HTTPError as exc:
        with exc:
            return exc.code, json.loads(exc.read()), dict(exc.headers)


# ------------------------------------------------------------------------------------ happy paths
def test_structured_output_is_valid_against_the_schema(fake: FakeMessagesAPI) -> None:
    schema = anthropic.transform_schema(Classification)
    msg = create(client(fake), output_config={"format": {"type": "json_schema", "schema": schema}})
    assert msg.stop_reason == "end_turn" and msg.id.startswith("msg_") and msg.model == MODEL
    text = next(b for b in msg.content if isinstance(b, TextBlock)).text
    doc = json.loads(text)
    assert validate(doc, schema) == []
    parsed = Classification.model_validate(doc)  # the full model, incl. constraints moved to description
    assert 1 <= parsed.severity <= 5 and len(parsed.tags) >= 2 and parsed.parent is not None


def test_generated_documents_honour_strict_grammar_corners() -> None:
    schema = {
        "type": "object",
        "additionalProperties": False,
        "required": ["a", "b", "c", "d", "e"],
        "properties": {
            "a": {"const": "fixed"},
            "b": {"type": ["string", "null"], "format": "email"},
            "c": {"anyOf": [{"type": "null"}, {"$ref": "#/$defs/node"}]},
            "d": {"type": "array", "items": {"enum": [3, 4]}, "minItems": 1},
            "e": {"type": "number", "description": "{exclusiveMinimum: 7}"},
        },
        "$defs": {"node": {"type": "object", "properties": {"x": {"type": "integer"}}, "required": ["x"]}},
    }
    doc = generate(schema)
    assert doc["a"] == "fixed" and "@" in doc["b"] and doc["c"] == {"x": 1} and doc["d"] == [3] and doc["e"] > 7
    assert validate(doc, schema) == []
    assert validate({**doc, "zzz": 1}, schema) == ["$: additional property 'zzz' not allowed"]


def test_parse_with_pydantic_output_format(fake: FakeMessagesAPI) -> None:
    msg = client(fake).messages.parse(model=MODEL, max_tokens=1024, messages=USER, output_format=Classification)
    assert isinstance(msg.parsed_output, Classification)
    assert fake.calls_to("/v1/messages")[0].body["output_config"]["format"]["type"] == "json_schema"


def test_scripted_reply_overrides_generation(fake: FakeMessagesAPI) -> None:
    fake.enqueue(reply({"category": "billing"}, usage={"output_tokens": 7}))
    msg = create(client(fake))
    assert isinstance(msg.content[0], TextBlock) and json.loads(msg.content[0].text) == {"category": "billing"}
    assert msg.usage.output_tokens == 7
    assert create(client(fake)).content[0].text == "This is a reply from the fake Messages API."  # type: ignore[union-attr]


def test_forced_tool_use_reply(fake: FakeMessagesAPI) -> None:
    tool = {
        "name": "classify_event",
        "input_schema": anthropic.transform_schema(Classification),
        "strict": True,
    }
    msg = create(client(fake), tools=[tool], tool_choice={"type": "tool", "name": "classify_event"})
    block = msg.content[0]
    assert isinstance(block, ToolUseBlock) and block.id.startswith("toolu_") and block.name == "classify_event"
    assert block.caller is not None and block.caller.type == "direct" and msg.stop_reason == "tool_use"
    Classification.model_validate(block.input)
    fake.enqueue(tool_reply({"category": "auth"}), reply({"category": "other"}))
    m1 = create(client(fake), tools=[tool], tool_choice={"type": "any"})
    m2 = create(client(fake), tools=[tool], tool_choice={"type": "any"})
    assert [b.input for b in (m1.content[0], m2.content[0]) if isinstance(b, ToolUseBlock)] == [
        {"category": "auth"},
        {"category": "other"},
    ]


def test_usage_prompt_cache_and_count_tokens(fake: FakeMessagesAPI) -> None:
    c = client(fake)
    system = [{"type": "text", "text": "You classify webhook events. " * 40, "cache_control": {"type": "ephemeral"}}]
    first, second = create(c, system=system), create(c, system=system)
    u1, u2 = first.usage, second.usage
    assert u1.cache_creation_input_tokens and u1.cache_read_input_tokens == 0 and u1.input_tokens > 0
    assert (
        u1.cache_creation is not None and u1.cache_creation.ephemeral_5m_input_tokens == u1.cache_creation_input_tokens
    )
    assert u2.cache_read_input_tokens == u1.cache_creation_input_tokens and u2.cache_creation_input_tokens == 0
    assert u1.output_tokens > 0 and u1.service_tier == "standard"
    total = c.messages.count_tokens(model=MODEL, messages=USER, system=system).input_tokens  # type: ignore[arg-type]
    assert total == u2.input_tokens + u2.cache_read_input_tokens
    plain = create(c).usage
    assert plain.cache_creation_input_tokens == 0 and plain.cache_read_input_tokens == 0


def test_request_id_and_rate_limit_headers(fake: FakeMessagesAPI) -> None:
    raw_resp = client(fake).messages.with_raw_response.create(model=MODEL, max_tokens=64, messages=USER)
    msg = raw_resp.parse()
    assert msg._request_id == raw_resp.headers["request-id"] and msg._request_id.startswith("req_")
    assert raw_resp.headers["anthropic-organization-id"]
    assert int(raw_resp.headers["anthropic-ratelimit-requests-remaining"]) < 4000
    assert raw_resp.headers["anthropic-ratelimit-tokens-reset"].endswith("Z")
    rec = fake.requests[0]
    assert rec.headers["anthropic-version"] == "2026-10-21" and rec.status == 200
    assert rec.response_body["id"] == msg.id


def test_thinking_block_comes_first_on_haiku_5_5(fake: FakeMessagesAPI) -> None:
    msg = create(client(fake), model="claude-haiku-5-5")
    assert isinstance(msg.content[0], ThinkingBlock) and isinstance(msg.content[1], TextBlock)
    assert len(create(client(fake), model="claude-haiku-5-5", thinking={"type": "disabled"}).content) == 1


def test_stream_assembles_the_same_message(fake: FakeMessagesAPI) -> None:
    with client(fake).messages.stream(
        model=MODEL, max_tokens=1024, messages=USER, output_format=Classification
    ) as stream:
        final = stream.get_final_message()
    assert isinstance(final.parsed_output, Classification) and final.stop_reason == "end_turn"


# ------------------------------------------------------------------------------------ failure modes
def test_429_with_retry_after_ms_is_retried_then_succeeds(fake: FakeMessagesAPI) -> None:
    fake.enqueue(rate_limited(retry_after=30, retry_after_ms=20))
    started = time.monotonic()
    raw_resp = client(fake, max_retries=1).messages.with_raw_response.create(model=MODEL, max_tokens=64, messages=USER)
    assert raw_resp.retries_taken == 1 and time.monotonic() - started < 2
    calls = fake.calls_to("/v1/messages")
    assert [c.status for c in calls] == [429, 200]
    assert [c.headers["x-stainless-retry-count"] for c in calls] == ["0", "1"]
    assert calls[0].response_body["error"]["type"] == "rate_limit_error"


def test_429_without_retries_raises_rate_limit_error(fake: FakeMessagesAPI) -> None:
    fake.enqueue(rate_limited())
    with pytest.raises(anthropic.RateLimitError) as info:
        create(client(fake))
    assert info.value.response.headers["retry-after"] == "1" and info.value.request_id
    assert info.value.type == "rate_limit_error" and len(fake.requests) == 1


@pytest.mark.parametrize(
    ("step", "exc", "status"),
    [
        (overloaded(), anthropic.OverloadedError, 529),
        (server_error(), anthropic.InternalServerError, 500),
        (error(404, "not_found_error", "model: nope"), anthropic.NotFoundError, 404),
        (raw(502, "<html>bad gateway</html>"), anthropic.InternalServerError, 502),
    ],
)
def test_status_errors_map_to_sdk_exceptions(
    fake: FakeMessagesAPI, step: Step, exc: type[anthropic.APIStatusError], status: int
) -> None:
    fake.enqueue(step)
    with pytest.raises(exc) as info:
        create(client(fake))
    assert info.value.status_code == status and info.value.request_id == fake.requests[0].response_headers["request-id"]


def test_529_is_an_internal_server_error_subclass() -> None:
    assert issubclass(anthropic.OverloadedError, anthropic.InternalServerError)


def test_spend_limit(fake: FakeMessagesAPI) -> None:
    fake.enqueue(spend_limit(should_retry=False))
    with pytest.raises(anthropic.EnforcedSpendLimitReachedError) as info:
        create(client(fake, max_retries=2))
    assert isinstance(info.value, anthropic.RateLimitError) and info.value.error_code == "enforced_spend_limit_reached"
    assert "retry-after" not in info.value.response.headers and len(fake.requests) == 1


def test_slow_reply_times_out_the_client(fake: FakeMessagesAPI) -> None:
    fake.enqueue(slow(2))
    started = time.monotonic()
    with pytest.raises(anthropic.APITimeoutError):
        create(client(fake, timeout=0.3))
    assert time.monotonic() - started < 1.5


def test_sampling_params_and_unknown_keys_are_rejected(fake: FakeMessagesAPI) -> None:
    fake.enqueue(reply("kept for the next valid call"))
    for extra in ({"temperature": 0.0}, {"top_k": 5}, {"bogus": 1}):
        with pytest.raises(anthropic.BadRequestError) as info:
            create(client(fake), extra_body=extra)
        assert info.value.type == "invalid_request_error" and next(iter(extra)) in str(info.value.api_message)
    assert fake.pending() == 1 and create(client(fake)).content[0].text == "kept for the next valid call"  # type: ignore[union-attr]


def test_invalid_bodies_are_rejected(fake: FakeMessagesAPI) -> None:
    c = client(fake)
    raw_schema = {"format": {"type": "json_schema", "schema": Classification.model_json_schema()}}
    bad_calls: list[dict[str, Any]] = [
        {"max_tokens": 0},
        {"messages": []},
        {"messages": [{"role": "user", "content": ""}]},
        {"output_config": raw_schema},  # not transform_schema()'d: minimum/maxLength, no additionalProperties
        {
            "tools": [{"name": "t", "input_schema": {"type": "object"}}],
            "tool_choice": {"type": "tool", "name": "x"},
        },
    ]
    for kw in bad_calls:
        with pytest.raises(anthropic.BadRequestError):
            create(c, **kw)
    with pytest.raises(anthropic.NotFoundError):
        create(c, model="gpt-4o")
    status, body, headers = post(
        fake.base_url + "/v1/messages",
        {"model": MODEL, "max_tokens": 5, "messages": USER},
        {"authorization": "Bearer k", "content-type": "application/json"},
    )
    assert status == 400 and "anthropic-version" in body["error"]["message"] and headers["request-id"]


def test_missing_or_wrong_key_is_401() -> None:
    with FakeMessagesAPI(api_key="right") as fake:
        status, body, headers = post(
            fake.base_url + "/v1/messages",
            {"model": MODEL, "max_tokens": 5, "messages": USER},
            {"anthropic-version": "2026-10-21", "content-type": "application/json"},
        )
        assert status == 401 and body["type"] == "error" and body["error"]["type"] == "authentication_error"
        assert body["request_id"] == headers["request-id"]
        with pytest.raises(anthropic.AuthenticationError):
            create(client(fake, api_key="wrong", max_retries=2))
        assert len(fake.requests) == 2  # 401 is not retried
        assert create(client(fake, api_key="right")).stop_reason == "end_turn"


def test_refusal_truncation_and_invalid_json_break_parse(fake: FakeMessagesAPI) -> None:
    c = client(fake)
    fake.enqueue(refusal(), max_tokens_cut(), invalid_json_reply())
    kw: dict[str, Any] = {
        "model": MODEL,
        "max_tokens": 1024,
        "messages": USER,
        "output_format": Classification,
    }
    msg = c.messages.parse(**kw)
    assert msg.stop_reason == "refusal" and msg.content == [] and msg.parsed_output is None
    assert msg.stop_details is not None and msg.stop_details.category == "general_harms"
    for _ in range(2):
        with pytest.raises(pydantic.ValidationError):
            c.messages.parse(**kw)
    assert fake.requests[1].response_body["stop_reason"] == "max_tokens"


def test_small_max_tokens_cuts_generated_output(fake: FakeMessagesAPI) -> None:
    schema = anthropic.transform_schema(Classification)
    msg = create(client(fake), max_tokens=10, output_config={"format": {"type": "json_schema", "schema": schema}})
    assert msg.stop_reason == "max_tokens" and msg.usage.output_tokens == 10


def test_scenario_header(fake: FakeMessagesAPI) -> None:
    headers = {"x-fake-scenario": "529-once", "x-fake-retry-after-ms": "10", "x-fake-key": "k1"}
    msg = create(client(fake, max_retries=1), extra_headers=headers)
    assert msg.stop_reason == "end_turn" and [r.status for r in fake.requests] == [529, 200]


def test_hang_does_not_block_stop() -> None:
    fake = FakeMessagesAPI().start()
    fake.enqueue(hang())
    errors: list[BaseException] = []

    def call() -> None:
        try:
            create(client(fake, timeout=5))
        except BaseException as exc:
            errors.append(exc)

    worker = threading.Thread(target=call)
    worker.start()
    fake.wait_for_calls("/v1/messages", 1)
    started = time.monotonic()
    fake.stop()
    assert time.monotonic() - started < 1.5
    worker.join(5)
    assert not worker.is_alive() and isinstance(errors[0], anthropic.APIConnectionError)
    assert fake.requests[0].status is None


# ------------------------------------------------------------------------------------ routing / async
async def test_enqueue_for_routes_by_body_substring(fake: FakeMessagesAPI) -> None:
    fake.enqueue_for("evt_B", error(400, "invalid_request_error", "scripted for B"))
    fake.enqueue_for("evt_A", reply({"who": "A"}))
    fake.enqueue(reply({"who": "fifo"}))
    aclient = anthropic.AsyncAnthropic(
        api_key="test", base_url=fake.base_url, max_retries=0, _strict_response_validation=True
    )

    async def call(event_id: str) -> Any:
        msgs: list[MessageParam] = [{"role": "user", "content": json.dumps({"id": event_id})}]
        try:
            msg = await aclient.messages.create(model=MODEL, max_tokens=64, messages=msgs)
        except anthropic.BadRequestError as exc:
            return exc.api_message
        block = msg.content[0]
        assert isinstance(block, TextBlock)
        return json.loads(block.text) if block.text.startswith("{") else None

    results = await asyncio.gather(call("evt_A"), call("evt_B"), call("evt_C"))
    assert list(results) == [{"who": "A"}, "scripted for B", {"who": "fifo"}]
    assert await call("evt_A") is None  # nothing scripted left: the generated plain-text reply
    await aclient.close()
    assert fake.pending("evt_A") == 0 and fake.pending("evt_B") == 0 and fake.pending() == 0


async def test_concurrent_calls_get_their_own_scripted_replies(fake: FakeMessagesAPI) -> None:
    ids = [f"evt_{i:03d}" for i in range(50)]
    for event_id in ids:
        fake.enqueue_for(event_id, reply({"id": event_id}))
    aclient = anthropic.AsyncAnthropic(
        api_key="test", base_url=fake.base_url, max_retries=0, _strict_response_validation=True
    )

    async def call(event_id: str) -> Any:
        msgs: list[MessageParam] = [{"role": "user", "content": f"classify {event_id}"}]
        msg = await aclient.messages.create(model=MODEL, max_tokens=64, messages=msgs)
        block = msg.content[0]
        return json.loads(block.text)["id"] if isinstance(block, TextBlock) else None

    results = await asyncio.gather(*(call(i) for i in ids))
    await aclient.close()
    assert list(results) == ids
    assert len({r.response_headers["request-id"] for r in fake.requests}) == 50


async def test_async_client_structured_output_and_retry(fake: FakeMessagesAPI) -> None:
    fake.enqueue(overloaded(retry_after_ms=10))
    aclient = anthropic.AsyncAnthropic(
        api_key="test", base_url=fake.base_url, max_retries=1, _strict_response_validation=True
    )
    msg = await aclient.messages.parse(model=MODEL, max_tokens=1024, messages=USER, output_format=Classification)
    await aclient.close()
    assert isinstance(msg.parsed_output, Classification)
    assert [r.headers["x-stainless-async"] for r in fake.requests] == ["async:asyncio"] * 2


def test_steps_round_trip_through_dicts() -> None:
    steps = [
        slow(0.5, then=spend_limit()),
        rate_limited(retry_after_ms=5),
        reply({"a": [1]}),
        refusal(),
        hang(),
    ]
    assert [Step.from_dict(json.loads(json.dumps(s.to_dict()))) for s in steps] == steps


def test_out_of_process_mode() -> None:
    with FakeMessagesAPIProcess() as proc:
        proc.enqueue(reply({"from": "child"}), rate_limited(retry_after_ms=5))
        c = anthropic.Anthropic(api_key="k", base_url=proc.base_url, max_retries=0, _strict_response_validation=True)
        _OPEN_CLIENTS.append(c)
        first = create(c)
        assert isinstance(first.content[0], TextBlock) and json.loads(first.content[0].text) == {"from": "child"}
        with pytest.raises(anthropic.RateLimitError):
            create(c)
        assert [r["status"] for r in proc.calls_to("/v1/messages")] == [200, 429]
        proc.reset()
        assert proc.log() == []
        pid = proc.pid
    assert proc.proc is not None and proc.proc.returncode == 0, f"pid {pid} did not exit cleanly"
