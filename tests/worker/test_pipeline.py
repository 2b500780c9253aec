"""Pipeline behaviour below HTTP: ``handle_event`` driven directly against the real Postgres and the
fake Messages API. Events are written with plain SQL (as a DBA or a watch trigger would); no web
process and no queue loop run, so each test says exactly which job run does what.
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from typing import Any

import psycopg
import pytest

from app.core.config import Config
from tests.fakes.messages_api import FakeMessagesAPI, Step, error, invalid_json_reply, raw, reply
from tests.harness import Receiver, config_from, make_settings, rows
from worker.runtime import Runtime
from worker.tasks import RetryLater, handle_event

GOOD = {"subject": "Hello", "body": "World"}
SCHEMA = {
    "type": "object",
    "properties": {"subject": {"type": "string"}, "body": {"type": "string"}},
    "required": ["subject", "body"],
    "additionalProperties": False,
}


def make_config(**pipeline_over: Any) -> Config:
    pipeline: dict[str, Any] = {
        "source": "stripe",
        "events": ["invoice.*"],
        "fields": ["type", "data.object.note"],
        "instructions": "Write to the customer.",
        "output_schema": SCHEMA,
        "retry": {"max_attempts": 3, "backoff_seconds": 0.05, "max_backoff_seconds": 1, "jitter": False},
        "actions": [{"type": "http", "url_env": "HL_CRM_URL"}],
    }
    pipeline.update(pipeline_over)
    return config_from(
        {
            "sources": {"stripe": {"provider": "stripe", "secrets_env": ["HL_STRIPE_SECRET"]}},
            "pipelines": {"recovery": pipeline},
        }
    )


pytestmark = pytest.mark.usefixtures("stripe_and_crm")


@pytest.fixture
async def runtime(db_url: str, fake: FakeMessagesAPI, request: pytest.FixtureRequest) -> AsyncIterator[Runtime]:
    marker = request.node.get_closest_marker("pipeline")
    config = make_config(**(marker.kwargs if marker else {}))
    settings = make_settings(db_url, anthropic_api_key="sk-test", anthropic_base_url=fake.base_url)
    rt = Runtime.build(settings, config)
    await rt.open()
    try:
        yield rt
    finally:
        await rt.close()


def insert_event(
    db_url: str,
    delivery_id: str,
    *,
    event_type: str = "invoice.payment_failed",
    note: str = "card declined",
    ordering_key: str | None = None,
    occurred_at: datetime | None = None,
    payload: Any = None,
) -> int:
    payload = payload if payload is not None else {"type": event_type, "data": {"object": {"note": note}}}
    with psycopg.connect(db_url, autocommit=True) as conn:
        row = conn.execute(
            "INSERT INTO hookline.events (source, delivery_id, event_type, payload, ordering_key, occurred_at) "
            "VALUES ('stripe', %s, %s, %s, %s, %s) RETURNING id",
            (delivery_id, event_type, json.dumps(payload), ordering_key, occurred_at),
        ).fetchone()
    assert row is not None
    return int(row[0])


def event(db_url: str, event_id: int) -> tuple[Any, ...]:
    return rows(db_url, "SELECT status, attempts, dry_run, detail FROM hookline.events WHERE id = %s", event_id)[0]


def calls(db_url: str, event_id: int) -> list[str]:
    return [
        r[0] for r in rows(db_url, "SELECT status FROM hookline.llm_calls WHERE event_id = %s ORDER BY id", event_id)
    ]


async def test_success_stores_the_call_then_runs_the_action(
    db_url: str, runtime: Runtime, fake: FakeMessagesAPI, receiver: Receiver
) -> None:
    fake.enqueue(reply(GOOD))
    event_id = insert_event(db_url, "evt_ok")
    assert await handle_event(runtime, event_id) == "succeeded"
    assert event(db_url, event_id)[:3] == ("succeeded", 1, False)
    assert calls(db_url, event_id) == ["succeeded"]
    assert rows(db_url, "SELECT status, attempts FROM hookline.action_runs WHERE event_id = %s", event_id) == [
        ("succeeded", 1)
    ]
    assert [json.loads(r.body)["output"] for r in receiver.received] == [GOOD]
    prompt = json.dumps(fake.requests[-1].body)
    assert "card declined" in prompt


@pytest.mark.pipeline(respond="sync", actions=[])
async def test_the_answer_a_sender_waits_for_is_announced_inside_its_commit(
    db_url: str, runtime: Runtime, fake: FakeMessagesAPI
) -> None:
    """A ``respond = "sync"`` pipeline's answer goes through the group commit with ``inline``: its flush
    notifies inside its transaction (worker/callwriter.py), so the waiting request is told one round trip
    sooner; nothing is sent after the commit."""
    fake.enqueue(reply(GOOD))
    event_id = insert_event(db_url, "evt_sync_inline")
    assert await handle_event(runtime, event_id) == "succeeded"
    assert calls(db_url, event_id) == ["succeeded"]
    assert runtime.db.calls.stats["rows"] == 1 and runtime.db.calls.stats["notified_after"] == 0


@pytest.mark.pipeline(actions=[])
async def test_an_answer_nobody_waits_for_is_announced_after_its_commit(
    db_url: str, runtime: Runtime, fake: FakeMessagesAPI
) -> None:
    fake.enqueue(reply(GOOD))
    event_id = insert_event(db_url, "evt_async_after")
    assert await handle_event(runtime, event_id) == "succeeded"
    assert runtime.db.calls.stats["rows"] == 1 and runtime.db.calls.stats["notified_after"] == 1


async def test_the_stored_response_is_the_apis_own_json(
    db_url: str, runtime: Runtime, fake: FakeMessagesAPI, receiver: Receiver
) -> None:
    """``llm_calls.response`` holds the answer as the API sent it: not re-serialised through the SDK's
    models (which would add every field the API left out, as null)."""
    fake.enqueue(reply(GOOD, usage={"input_tokens": 12, "output_tokens": 5}))
    event_id = insert_event(db_url, "evt_raw")
    assert await handle_event(runtime, event_id) == "succeeded"
    sent = fake.calls_to("/v1/messages")[-1].response_body
    assert rows(db_url, "SELECT response FROM hookline.llm_calls WHERE event_id = %s", event_id) == [(sent,)]
    assert rows(db_url, "SELECT input_tokens, output_tokens FROM hookline.llm_calls WHERE event_id = %s", event_id) == [
        (12, 5)
    ]


async def test_a_second_run_of_a_finished_event_does_nothing(
    db_url: str, runtime: Runtime, fake: FakeMessagesAPI, receiver: Receiver
) -> None:
    fake.enqueue(reply(GOOD))
    event_id = insert_event(db_url, "evt_twice")
    assert await handle_event(runtime, event_id) == "succeeded"
    assert await handle_event(runtime, event_id) == "noop"
    assert len(fake.calls_to("/v1/messages")) == 1
    assert len(receiver.received) == 1


async def test_invalid_output_gets_one_repair_turn(db_url: str, runtime: Runtime, fake: FakeMessagesAPI) -> None:
    fake.enqueue(invalid_json_reply(), reply(GOOD))
    event_id = insert_event(db_url, "evt_repair")
    assert await handle_event(runtime, event_id) == "succeeded"
    assert calls(db_url, event_id) == ["invalid_output", "succeeded"]
    assert len(fake.calls_to("/v1/messages")) == 2


async def test_an_answer_holding_what_postgres_cannot_store_gets_the_repair_turn(
    db_url: str, runtime: Runtime, fake: FakeMessagesAPI
) -> None:
    """A JSON answer whose text escapes a NUL (an injected payload can ask for one): its output could not
    be stored (jsonb refuses \\u0000), so the answer used to be lost and each retry paid again. It is an
    invalid answer now, given the repair turn, and every call is stored."""
    fake.enqueue(reply({"subject": "a\x00b", "body": "World"}), reply(GOOD))
    event_id = insert_event(db_url, "evt_nul_answer")
    assert await handle_event(runtime, event_id) == "succeeded"
    assert calls(db_url, event_id) == ["invalid_output", "succeeded"]
    assert len(fake.calls_to("/v1/messages")) == 2
    [(error,)] = rows(db_url, "SELECT error FROM hookline.llm_calls WHERE status = 'invalid_output'")
    assert "cannot be stored" in error


async def test_raw_characters_postgres_cannot_store_are_kept_as_replacement_characters(
    db_url: str, runtime: Runtime, fake: FakeMessagesAPI
) -> None:
    """The model's text itself holds a NUL and an unpaired surrogate (the API's JSON escapes them): the
    response is stored, and read, with U+FFFD in their place; the answer is valid and used."""
    fake.enqueue(reply('{"subject": "a\x00b\ud800c", "body": "World"}'))
    event_id = insert_event(db_url, "evt_raw_nul")
    assert await handle_event(runtime, event_id) == "succeeded"
    assert calls(db_url, event_id) == ["succeeded"]
    [(output, text)] = rows(
        db_url, "SELECT output, response->'content'->0->>'text' FROM hookline.llm_calls WHERE event_id = %s", event_id
    )
    assert output["subject"] == "a\ufffdb\ufffdc" and "a\ufffdb\ufffdc" in text


async def test_transient_error_retries_then_succeeds_reusing_nothing_twice(
    db_url: str, runtime: Runtime, fake: FakeMessagesAPI, receiver: Receiver
) -> None:
    fake.enqueue(error(500, "api_error"), reply(GOOD))
    event_id = insert_event(db_url, "evt_retry")
    with pytest.raises(RetryLater):
        await handle_event(runtime, event_id)
    status, attempts, _, detail = event(db_url, event_id)
    assert (status, attempts) == ("retrying", 1)
    assert "attempt 1 of 3" in detail
    assert await handle_event(runtime, event_id) == "succeeded"
    assert calls(db_url, event_id) == ["failed", "succeeded"]
    assert len(receiver.received) == 1


@pytest.mark.parametrize(
    "answer",
    [
        raw(200, "<html>Sign in to the proxy</html>"),
        raw(200, '{"id": "msg_cut", "content": [', content_type="application/json"),
    ],
    ids=["html_page", "cut_json"],
)
async def test_a_200_whose_body_is_not_json_is_retried_not_a_dead_letter(
    db_url: str, runtime: Runtime, fake: FakeMessagesAPI, receiver: Receiver, answer: Step
) -> None:
    fake.enqueue(answer, reply(GOOD))
    event_id = insert_event(db_url, "evt_not_json")
    with pytest.raises(RetryLater):
        await handle_event(runtime, event_id)
    status, attempts, _, detail = event(db_url, event_id)
    assert (status, attempts) == ("retrying", 1) and "attempt 1 of 3" in detail
    assert await handle_event(runtime, event_id) == "succeeded"
    assert calls(db_url, event_id) == ["failed", "succeeded"]
    assert len(receiver.received) == 1


async def test_permanent_error_is_a_dead_letter(db_url: str, runtime: Runtime, fake: FakeMessagesAPI) -> None:
    fake.enqueue(error(400, "invalid_request_error", "bad request"))
    event_id = insert_event(db_url, "evt_dead")
    assert await handle_event(runtime, event_id) == "dead"
    assert event(db_url, event_id)[0] == "dead"
    dead = rows(db_url, "SELECT event_id, attempts, detail FROM hookline.dead_letters")
    assert dead == [(event_id, 1, "permanent error")]


async def test_attempts_run_out_into_the_dead_letters(db_url: str, runtime: Runtime, fake: FakeMessagesAPI) -> None:
    fake.enqueue(*[error(500, "api_error")] * 3)
    event_id = insert_event(db_url, "evt_exhausted")
    for _ in range(2):
        with pytest.raises(RetryLater):
            await handle_event(runtime, event_id)
    assert await handle_event(runtime, event_id) == "dead"
    assert rows(db_url, "SELECT detail FROM hookline.dead_letters") == [("gave up after 3 attempt(s)",)]


async def test_a_failing_action_retries_without_a_second_model_call(
    db_url: str, runtime: Runtime, fake: FakeMessagesAPI, receiver: Receiver
) -> None:
    fake.enqueue(reply(GOOD))
    receiver.statuses.append(503)
    event_id = insert_event(db_url, "evt_action_retry")
    with pytest.raises(RetryLater):
        await handle_event(runtime, event_id)
    assert rows(db_url, "SELECT status FROM hookline.action_runs WHERE event_id = %s", event_id) == [("failed",)]
    assert await handle_event(runtime, event_id) == "succeeded"
    assert len(fake.calls_to("/v1/messages")) == 1, "the stored answer is reused"
    assert rows(db_url, "SELECT status, attempts FROM hookline.action_runs WHERE event_id = %s", event_id) == [
        ("succeeded", 2)
    ]


@pytest.mark.pipeline(history=2)
async def test_history_of_the_same_entity_reaches_the_prompt(
    db_url: str, runtime: Runtime, fake: FakeMessagesAPI
) -> None:
    fake.set_default(reply(GOOD))
    earlier = [insert_event(db_url, f"evt_h{i}", note=f"n{i}", ordering_key="cus_1") for i in range(3)]
    last = insert_event(db_url, "evt_h_last", note="now", ordering_key="cus_1")
    assert await handle_event(runtime, last) == "succeeded"
    user = json.dumps(fake.requests[-1].body["messages"])
    assert "n1" in user and "n2" in user and "n0" not in user
    assert all(event(db_url, e)[0] == "queued" for e in earlier)


@pytest.mark.pipeline(latest_wins=True)
async def test_latest_wins_skips_an_older_event_once_a_newer_one_is_done(
    db_url: str, runtime: Runtime, fake: FakeMessagesAPI
) -> None:
    fake.set_default(reply(GOOD))
    now = datetime.now(UTC)
    newer = insert_event(db_url, "evt_new", ordering_key="cus_2", occurred_at=now)
    older = insert_event(db_url, "evt_old", ordering_key="cus_2", occurred_at=now - timedelta(minutes=5))
    assert await handle_event(runtime, newer) == "succeeded"
    assert await handle_event(runtime, older) == "skipped"
    assert "superseded" in event(db_url, older)[3]
    assert len(fake.calls_to("/v1/messages")) == 1


async def test_no_matching_pipeline_is_skipped_without_a_call(
    db_url: str, runtime: Runtime, fake: FakeMessagesAPI
) -> None:
    event_id = insert_event(db_url, "evt_other", event_type="customer.created")
    assert await handle_event(runtime, event_id) == "skipped"
    assert fake.calls_to("/v1/messages") == []


async def test_without_a_key_the_request_is_stored_as_a_dry_run(db_url: str, receiver: Receiver) -> None:
    rt = Runtime.build(make_settings(db_url), make_config())
    await rt.open()
    try:
        event_id = insert_event(db_url, "evt_dry")
        assert await handle_event(rt, event_id) == "succeeded"
    finally:
        await rt.close()
    assert event(db_url, event_id)[:3] == ("succeeded", 1, True)
    assert calls(db_url, event_id) == ["dry_run"]
    assert receiver.received == []


async def test_replay_with_recompute_and_force_supersedes_and_repeats(
    db_url: str, runtime: Runtime, fake: FakeMessagesAPI, receiver: Receiver
) -> None:
    fake.enqueue(reply(GOOD), reply({"subject": "Again", "body": "Twice"}))
    event_id = insert_event(db_url, "evt_replay")
    assert await handle_event(runtime, event_id) == "succeeded"
    rows(db_url, "SELECT hookline.replay(%s::bigint, true, true)", event_id)
    assert await handle_event(runtime, event_id, recompute=True, force_actions=True) == "succeeded"
    assert calls(db_url, event_id) == ["superseded", "succeeded"]
    assert [json.loads(r.body)["output"]["subject"] for r in receiver.received] == ["Hello", "Again"]


@pytest.mark.pipeline(
    fields=[],
    actions=[
        {
            "type": "http",
            "url_env": "HL_CRM_URL",
            "body": '{"a": {{ fields.payload | tojson }}, "b": {{ fields.value[1] }}}',
        }
    ],
)
async def test_a_payload_that_is_not_an_object_is_fields_payload_and_fields_value(
    db_url: str, runtime: Runtime, fake: FakeMessagesAPI, receiver: Receiver
) -> None:
    """A JSON array (or a string, a number) has no keys: an action's template reads it whole as
    ``fields.payload``, or ``fields.value``, the name a sync reply's template gave it (test_sync_reply_rules)."""
    fake.enqueue(reply(GOOD))
    event_id = insert_event(db_url, "evt_array", payload=[1, 2])
    assert await handle_event(runtime, event_id) == "succeeded", event(db_url, event_id)
    assert [json.loads(r.body) for r in receiver.received] == [{"a": [1, 2], "b": 2}]
