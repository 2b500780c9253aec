"""Synchronous replies for other senders: Twilio (TwiML, XML-escaped) and Discord (deferred reply,
then the follow-up message endpoint, faked locally by the Receiver)."""

from __future__ import annotations

import json
from typing import Any
from urllib.parse import urlencode

import httpx
import pytest

from app.signatures import generate_keypair, sign
from tests.fakes.messages_api import FakeMessagesAPI, reply, slow
from tests.harness import Receiver, config_from, make_settings, rows, wait_for_status, web_server, worker_task

PUBLIC = "https://hooks.example.com"
TWILIO_SECRET = "twilio-auth-token-for-sync-tests"
SCHEMA = {
    "type": "object",
    "properties": {"answer": {"type": "string"}},
    "required": ["answer"],
    "additionalProperties": False,
}


async def test_twilio_sms_gets_twiml_with_the_answer_escaped(
    db_url: str, fake: FakeMessagesAPI, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("HL_TWILIO", TWILIO_SECRET)
    config = config_from(
        {
            "sources": {"sms": {"provider": "twilio", "secrets_env": ["HL_TWILIO"]}},
            "pipelines": {
                "sms-reply": {
                    "source": "sms",
                    "events": ["received"],
                    "fields": ["Body"],
                    "instructions": "Answer the text message.",
                    "output_schema": SCHEMA,
                    "respond": "sync",
                    "respond_timeout_ms": 15000,
                    "respond_content_type": "application/xml",
                    "respond_body": "<Response><Message>{{ output.answer }}</Message></Response>",
                    "respond_default": "<Response><Message>Got {{ fields.Body }}; more soon.</Message></Response>",
                }
            },
        }
    )
    fake.enqueue(reply({"answer": "Fish & <chips>"}))
    settings = make_settings(db_url, anthropic_api_key="sk-test", anthropic_base_url=fake.base_url, public_url=PUBLIC)
    body = urlencode({"MessageSid": "SM1", "From": "+15550001", "Body": "menu?", "SmsStatus": "received"}).encode()
    headers = {
        **sign("twilio", secret=TWILIO_SECRET, body=body, url=f"{PUBLIC}/webhooks/sms", delivery_id="tw-1"),
        "content-type": "application/x-www-form-urlencoded",
    }
    async with web_server(settings, config) as base, worker_task(settings, config), httpx.AsyncClient() as client:
        resp = await client.post(f"{base}/webhooks/sms", content=body, headers=headers, timeout=30)
    assert resp.status_code == 200, resp.text
    assert resp.headers["content-type"].startswith("application/xml")
    assert resp.text == "<Response><Message>Fish &amp; &lt;chips&gt;</Message></Response>"


async def test_discord_gets_a_deferred_reply_then_the_follow_up_message(
    db_url: str, fake: FakeMessagesAPI, receiver: Receiver, monkeypatch: pytest.MonkeyPatch
) -> None:
    private, public = generate_keypair("discord_interactions")
    monkeypatch.setenv("HL_DISCORD", public)
    config = config_from(
        {
            "sources": {"discord": {"provider": "discord_interactions", "secrets_env": ["HL_DISCORD"]}},
            "pipelines": {
                "ask": {
                    "source": "discord",
                    "events": ["2"],
                    "fields": ["data.options.0.value"],
                    "instructions": "Answer the question.",
                    "output_schema": SCHEMA,
                    "respond": "sync",
                    "respond_timeout_ms": 300,
                    "respond_body": {"type": 4, "data": {"content": "{{ output.answer }}"}},
                    "respond_default": {"type": 5},
                    "actions": [
                        {"type": "discord_followup", "api_base": receiver.url, "content": "{{ output.answer }}"}
                    ],
                }
            },
        }
    )
    fake.enqueue(slow(1.5, then=reply({"answer": "Because."})))
    settings = make_settings(db_url, anthropic_api_key="sk-test", anthropic_base_url=fake.base_url)
    interaction: dict[str, Any] = {
        "id": "1100000000000000001",
        "type": 2,
        "application_id": "987654321",
        "token": "aW50ZXJhY3Rpb24tdG9rZW4",
        "data": {"name": "ask", "options": [{"name": "q", "value": "why?"}]},
    }
    body = json.dumps(interaction).encode()
    headers = {**sign("discord_interactions", secret=private, body=body), "content-type": "application/json"}
    async with web_server(settings, config) as base, worker_task(settings, config), httpx.AsyncClient() as client:
        ping = json.dumps({"id": "1", "type": 1, "application_id": "987654321"}).encode()
        pong = await client.post(
            f"{base}/webhooks/discord",
            content=ping,
            headers={**sign("discord_interactions", secret=private, body=ping), "content-type": "application/json"},
        )
        resp = await client.post(f"{base}/webhooks/discord", content=body, headers=headers, timeout=30)
        event_id = int(resp.headers["x-hookline-event-id"])
        event = await wait_for_status(db_url, event_id)
    assert pong.status_code == 200 and pong.json() == {"type": 1}  # the PING handshake is unchanged
    assert resp.status_code == 200 and resp.json() == {"type": 5}
    assert event["status"] == "succeeded"
    assert [r.path for r in receiver.received] == ["/hook/webhooks/987654321/aW50ZXJhY3Rpb24tdG9rZW4"]
    assert receiver.received[0].json() == {"content": "Because."}
    assert rows(db_url, "SELECT action_type, status FROM hookline.action_runs") == [("discord_followup", "succeeded")]


async def test_a_one_expression_leaf_keeps_its_json_type_in_the_reply_and_the_embeds(
    db_url: str, fake: FakeMessagesAPI, receiver: Receiver, monkeypatch: pytest.MonkeyPatch
) -> None:
    """``flags = "{{ output.flags }}"`` must reach Discord as 64, not "64"; ``"True"``, ``"None"`` and
    ``"['a']"`` are no JSON a receiver takes. A leaf with other text around stays a string."""
    private, public = generate_keypair("discord_interactions")
    monkeypatch.setenv("HL_DISCORD", public)
    schema = {
        "type": "object",
        "properties": {
            "answer": {"type": "string"},
            "flag": {"type": "boolean"},
            "count": {"type": "integer"},
            "tags": {"type": "array", "items": {"type": "string"}},
            "note": {"anyOf": [{"type": "string"}, {"type": "null"}]},
            "color": {"type": "integer"},
        },
        "required": ["answer", "flag", "count", "tags", "note", "color"],
        "additionalProperties": False,
    }
    body_template = {
        "type": 4,
        "data": {"content": "{{ output.answer }}", "flags": "{{ 64 if output.flag else 0 }}"},
        "ok": "{{ output.flag }}",
        "n": "{{ output.count }}",
        "tags": "{{ output.tags }}",
        "none": "{{ output.note }}",
        "mixed": "n={{ output.count }}",
    }
    embeds = [
        {"title": "{{ output.answer }}", "color": "{{ output.color }}", "footer": {"text": "#{{ output.count }}"}}
    ]
    config = config_from(
        {
            "sources": {"discord": {"provider": "discord_interactions", "secrets_env": ["HL_DISCORD"]}},
            "pipelines": {
                "ask": {
                    "source": "discord",
                    "events": ["2"],
                    "instructions": "Answer the question.",
                    "output_schema": schema,
                    "respond": "sync",
                    "respond_timeout_ms": 15000,
                    "respond_body": body_template,
                    "respond_default": {"type": 5},
                    "actions": [
                        {"type": "discord_followup", "api_base": receiver.url, "late_only": False, "embeds": embeds}
                    ],
                }
            },
        }
    )
    answer = {"answer": "Because.", "flag": True, "count": 3, "tags": ["a"], "note": None, "color": 5814783}
    fake.enqueue(reply(answer))
    settings = make_settings(db_url, anthropic_api_key="sk-test", anthropic_base_url=fake.base_url)
    interaction = {"id": "1100000000000000002", "type": 2, "application_id": "987654321", "token": "dG9rZW4"}
    body = json.dumps(interaction).encode()
    headers = {**sign("discord_interactions", secret=private, body=body), "content-type": "application/json"}
    async with web_server(settings, config) as base, worker_task(settings, config), httpx.AsyncClient() as client:
        resp = await client.post(f"{base}/webhooks/discord", content=body, headers=headers, timeout=30)
        event = await wait_for_status(db_url, int(resp.headers["x-hookline-event-id"]))
    assert resp.status_code == 200 and resp.headers["x-hookline-reply"] == "answer", resp.text
    assert resp.json() == {
        "type": 4,
        "data": {"content": "Because.", "flags": 64},
        "ok": True,
        "n": 3,
        "tags": ["a"],
        "none": None,
        "mixed": "n=3",
    }
    assert event["status"] == "succeeded"
    assert [r.json() for r in receiver.received] == [
        {"embeds": [{"title": "Because.", "color": 5814783, "footer": {"text": "#3"}}]}
    ]
