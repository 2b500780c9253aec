"""Synchronous replies at their edges: an event stored as invalid, a ``respond_default`` that fails to
render, the sender's retry after the default, and a replay of an event answered in time. Real uvicorn,
the real worker, the fake Messages API, a fake Slack ``response_url`` (the Receiver)."""

from __future__ import annotations

import logging
from typing import Any
from urllib.parse import urlencode

import httpx
import pytest

from app.signatures import sign
from app.web import sync_reply
from tests.acceptance.test_sync_providers import PUBLIC, SCHEMA, TWILIO_SECRET
from tests.acceptance.test_sync_replies import DEFAULT, command_body, make_config, settings_for, slash
from tests.fakes.messages_api import FakeMessagesAPI, reply, slow
from tests.harness import Receiver, config_from, make_settings, rows, wait_for_status, web_server, worker_task


@pytest.fixture(autouse=True)
def env(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HL_SLACK_SECRET", "slack-signing-secret-for-sync-tests")
    monkeypatch.setenv("HL_TWILIO", TWILIO_SECRET)


def twilio_config(
    source: dict[str, Any] | None = None, others: dict[str, dict[str, Any]] | None = None, **pipeline: Any
) -> Any:
    return config_from(
        {
            "sources": {"sms": {"provider": "twilio", "secrets_env": ["HL_TWILIO"], **(source or {})}},
            "pipelines": {
                "sms-reply": {
                    "source": "sms",
                    "events": ["*"],
                    "fields": ["Body"],
                    "instructions": "Answer the text message.",
                    "output_schema": SCHEMA,
                    "respond": "sync",
                    "respond_timeout_ms": 300,
                    "respond_content_type": "application/xml",
                    "respond_body": "<Response><Message>{{ output.answer }}</Message></Response>",
                    "respond_default": "<Response><Message>Got {{ fields.Body }}; more soon.</Message></Response>",
                    **pipeline,
                },
                **(others or {}),
            },
        }
    )


async def twilio_post(client: httpx.AsyncClient, base: str, form: dict[str, str], sid: str) -> httpx.Response:
    body = urlencode(form).encode()
    headers = {
        **sign("twilio", secret=TWILIO_SECRET, body=body, url=f"{PUBLIC}/webhooks/sms", delivery_id=sid),
        "content-type": "application/x-www-form-urlencoded",
    }
    return await client.post(f"{base}/webhooks/sms", content=body, headers=headers, timeout=30)


async def test_a_payload_stored_as_invalid_gets_the_default_at_once(db_url: str) -> None:
    """on_invalid = "store": the event is stored as skipped, no answer will come: respond_default, in the
    reply's own content type, not hookline's JSON acknowledgement."""
    sorry = "<Response><Message>Sorry, we could not read that.</Message></Response>"
    config = twilio_config(
        {"schemas": {"*": {"type": "object", "required": ["Body"]}}, "on_invalid": "store"},
        respond_timeout_ms=15000,
        respond_default=sorry,
    )
    settings = make_settings(db_url, public_url=PUBLIC)
    form = {"MessageSid": "SM9", "From": "+15550001", "SmsStatus": "received"}  # no Body
    async with web_server(settings, config) as base, httpx.AsyncClient() as client:  # no worker: nothing to wait for
        first = await twilio_post(client, base, form, "SM9")
        again = await twilio_post(client, base, form, "SM9")  # the sender's retry
    for r in (first, again):
        assert r.status_code == 200, r.text
        assert r.headers["content-type"].startswith("application/xml")
        assert r.headers["x-hookline-reply"] == "default"
        assert r.text == sorry
    assert first.headers["x-hookline-event-id"] == again.headers["x-hookline-event-id"]
    assert rows(db_url, "SELECT status, respond_sync FROM hookline.events") == [("skipped", False)]


@pytest.mark.parametrize(("content_type", "fallback"), [("application/xml", "<Response/>"), ("text/plain", "")])
async def test_a_respond_default_that_fails_to_render_keeps_the_content_type(
    db_url: str, content_type: str, fallback: str
) -> None:
    """A Twilio voice call has no Body: the default over fields.Body fails at run time. The sender still
    gets a reply it can parse (an empty TwiML document, an empty text), never JSON."""
    config = twilio_config(respond_content_type=content_type)
    settings = make_settings(db_url, public_url=PUBLIC)
    form = {"CallSid": "CA1", "From": "+15550001", "CallStatus": "ringing"}
    async with web_server(settings, config) as base, httpx.AsyncClient() as client:  # no worker: the deadline passes
        r = await twilio_post(client, base, form, "CA1")
    assert r.status_code == 200
    assert r.headers["content-type"].startswith(content_type)
    assert r.headers["x-hookline-reply"] == "default"
    assert r.text == fallback


async def test_a_reply_that_fails_to_render_logs_no_value_the_source_redacts(
    db_url: str, caplog: pytest.LogCaptureFixture
) -> None:
    """The render error quotes the value a lookup missed; its log line reads ``[redacted]`` for a value
    of the source's ``redact`` paths, as where the event is shown."""
    greeting = "<Response><Message>{{ {'+15550009': 'Hi Ada'}[fields.From] }}</Message></Response>"
    config = twilio_config({"redact": ["From"]}, fields=["Body", "From"], respond_default=greeting)
    settings = make_settings(db_url, public_url=PUBLIC)
    form = {"MessageSid": "SM7", "From": "+15550001", "Body": "hi", "SmsStatus": "received"}
    with caplog.at_level(logging.INFO):
        async with web_server(settings, config) as base, httpx.AsyncClient() as client:  # no worker
            r = await twilio_post(client, base, form, "SM7")
    assert r.status_code == 200 and r.text == "<Response/>"
    lines = [rec.getMessage() for rec in caplog.records if rec.name.startswith("hookline")]
    failed = [line for line in lines if "respond_default of pipeline sms-reply failed" in line]
    assert len(failed) == 1 and "'dict object' has no attribute '[redacted]'" in failed[0], lines
    assert not [line for line in lines if "5550001" in line]


async def test_a_retry_after_the_default_gets_the_default_again_and_the_answer_follows_once(
    db_url: str, fake: FakeMessagesAPI, receiver: Receiver
) -> None:
    config = make_config(timeout_ms=300)
    fake.enqueue(slow(1.0, then=reply({"answer": "42"})))
    settings = settings_for(db_url, fake)
    body = command_body(receiver.url)
    async with web_server(settings, config) as base, worker_task(settings, config), httpx.AsyncClient() as client:
        first = await slash(client, base, body)
        event = await wait_for_status(db_url, int(first.headers["x-hookline-event-id"]))
        again = await slash(client, base, body)  # the sender's retry, after the follow-up delivered the answer
    assert event["status"] == "succeeded"
    assert first.headers["x-hookline-reply"] == "default" and first.json() == DEFAULT
    assert again.headers["x-hookline-reply"] == "default" and again.json() == DEFAULT
    assert [r.json() for r in receiver.received] == [{"response_type": "ephemeral", "text": "Late: 42"}]
    assert len(fake.calls_to("/v1/messages")) == 1


async def test_a_replay_with_recompute_and_force_delivers_the_new_answer_as_a_follow_up(
    db_url: str, fake: FakeMessagesAPI, receiver: Receiver, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The first answer went out in the HTTP reply; a replay's run has no HTTP reply waiting, so its
    late_only follow-up delivers the recomputed answer."""
    monkeypatch.setattr(sync_reply, "CLAIM_AFTER_MARGIN_S", 3600.0)  # the claim is recorded before the reply
    config = make_config()
    fake.enqueue(reply({"answer": "first"}), reply({"answer": "second"}))
    settings = settings_for(db_url, fake)
    body = command_body(receiver.url)
    async with web_server(settings, config) as base, worker_task(settings, config), httpx.AsyncClient() as client:
        r = await slash(client, base, body)
        event_id = int(r.headers["x-hookline-event-id"])
        await wait_for_status(db_url, event_id)
        assert receiver.received == [], "the answer went out in the HTTP reply: no follow-up"
        rows(db_url, "SELECT hookline.replay(%s::bigint, p_recompute => true, p_force => true)", event_id)
        event = await wait_for_status(db_url, event_id)
        again = await slash(client, base, body)  # the sender's retry, after the follow-up posted "second"
    assert r.headers["x-hookline-reply"] == "answer"
    assert r.json() == {"response_type": "in_channel", "text": "first (for ada)"}
    assert event["status"] == "succeeded"
    assert [x.json() for x in receiver.received] == [{"response_type": "ephemeral", "text": "Late: second"}]
    assert again.headers["x-hookline-reply"] == "default" and again.json() == DEFAULT, "second went by follow-up"
    ((status, result),) = rows(db_url, "SELECT status, result FROM hookline.action_runs")
    assert status == "succeeded" and result["status"] == 200


async def test_a_sync_pipeline_whose_when_is_false_replies_without_waiting_for_the_others(
    db_url: str, fake: FakeMessagesAPI
) -> None:
    """The sync pipeline does not run for this event (its `when` is false) while a slow routine pipeline
    does: the sender gets respond_default as soon as the worker knows, not at respond_timeout_ms and not
    after the routine pipeline's model call."""
    config = twilio_config(
        respond_timeout_ms=30000,
        when="payload.Body != 'STOP'",
        others={
            "log-it": {
                "source": "sms",
                "events": ["*"],
                "fields": ["Body"],
                "instructions": "Summarise the message.",
                "output_schema": SCHEMA,
            }
        },
    )
    fake.enqueue(slow(20.0, then=reply({"answer": "logged"})))
    settings = make_settings(db_url, public_url=PUBLIC, anthropic_api_key="sk-test", anthropic_base_url=fake.base_url)
    form = {"MessageSid": "SM7", "From": "+15550001", "Body": "STOP"}
    async with web_server(settings, config) as base, worker_task(settings, config), httpx.AsyncClient() as client:
        r = await twilio_post(client, base, form, "SM7")
        ((status, sync_reply_state, calls),) = rows(
            db_url, "SELECT status, sync_reply, (SELECT count(*) FROM hookline.llm_calls) FROM hookline.events"
        )
    assert r.status_code == 200, r.text
    assert r.headers["x-hookline-reply"] == "default"
    assert r.text == "<Response><Message>Got STOP; more soon.</Message></Response>"
    assert (status, sync_reply_state, calls) == ("processing", "default", 0), "the reply did not wait for log-it"


@pytest.mark.parametrize("escalated", [False, True])
async def test_a_replay_that_reuses_the_answer_the_reply_carried_does_not_post_it_again(
    db_url: str, fake: FakeMessagesAPI, receiver: Receiver, monkeypatch: pytest.MonkeyPatch, escalated: bool
) -> None:
    """The HTTP reply carried the answer, then an action before the follow-up failed (the event is dead).
    A replay without recompute reuses that very answer: its follow-up must not post it a second time,
    also when the first run's escalation superseded a first answer (the reply carried the escalated one)."""
    monkeypatch.setattr(sync_reply, "CLAIM_AFTER_MARGIN_S", 3600.0)  # the claim is recorded before the reply
    crm = Receiver(statuses=[400])  # refuses the first post: a permanent failure, the event dies
    monkeypatch.setenv("HL_CRM_URL", crm.url)
    late = {"type": "slack_response", "allowed_hosts": ["127.0.0.1"], "text": "Late: {{ output.answer }}"}
    over: dict[str, Any] = {"actions": [{"type": "http", "url_env": "HL_CRM_URL"}, late]}
    if escalated:
        schema = {**SCHEMA, "properties": {**SCHEMA["properties"], "hard": {"type": "boolean"}}}  # type: ignore[dict-item]
        over.update(output_schema=schema, escalate={"model": "claude-sonnet-4-5", "when": "hard"})
        fake.enqueue(reply({"answer": "maybe", "hard": True}))
    fake.enqueue(reply({"answer": "42"}))
    config = make_config(**over)
    settings = settings_for(db_url, fake)
    try:
        async with web_server(settings, config) as base, worker_task(settings, config), httpx.AsyncClient() as client:
            r = await slash(client, base, command_body(receiver.url))
            event_id = int(r.headers["x-hookline-event-id"])
            first = await wait_for_status(db_url, event_id)
            rows(db_url, "SELECT hookline.replay(%s::bigint)", event_id)
            again = await wait_for_status(db_url, event_id)
    finally:
        crm.close()
    assert r.headers["x-hookline-reply"] == "answer", r.text
    assert (first["status"], again["status"]) == ("dead", "succeeded")
    assert r.json()["text"] == "42 (for ada)"
    assert len(crm.received) == 2 and len(fake.calls_to("/v1/messages")) == (2 if escalated else 1)
    assert receiver.received == [], "the sender had this answer in the HTTP reply: no follow-up repeats it"
    ((result,),) = rows(db_url, "SELECT result FROM hookline.action_runs WHERE action_type = 'slack_response'")
    assert result == {"skipped": "the answer went out in the HTTP reply"}


async def test_a_payload_that_is_not_an_object_is_fields_value_and_fields_payload(
    db_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A JSON array has no keys: a reply's template reads it whole as ``fields.value``, or as
    ``fields.payload``, the name actions gave it (tests/worker/test_pipeline.py). No worker runs, so the
    reply is the default."""
    monkeypatch.setenv("HL_HMAC", "generic-secret")
    source = {"provider": "hmac", "secrets_env": ["HL_HMAC"], "hmac": {"header": "X-Sig"}, "delivery_id": "header:X-Id"}
    pipeline = {
        "source": "batch",
        "events": ["*"],
        "instructions": "Summarise the items.",
        "output_schema": SCHEMA,
        "respond": "sync",
        "respond_timeout_ms": 300,
        "respond_default": {"first": "{{ fields.value[0] }}", "count": "{{ fields.payload | length }}"},
    }
    config = config_from({"sources": {"batch": source}, "pipelines": {"items": pipeline}})
    body = b'["a", "b"]'
    headers = {**sign("hmac", secret="generic-secret", body=body, options={"header": "X-Sig"}), "X-Id": "batch-1"}
    async with web_server(make_settings(db_url), config) as base, httpx.AsyncClient() as client:
        r = await client.post(f"{base}/webhooks/batch", content=body, headers=headers, timeout=30)
    assert r.status_code == 200, r.text
    assert r.headers["x-hookline-reply"] == "default" and r.json() == {"first": "a", "count": 2}
