"""Synchronous replies claim the answer only once ``respond_body`` has rendered over it, so the sender
sees the answer exactly once: in the HTTP reply, or as the follow-up. Real uvicorn, the real worker,
the fake Messages API, a fake Slack ``response_url`` (the Receiver)."""

from __future__ import annotations

from typing import Any

import httpx
import pytest

from app.web import sync_reply
from tests.acceptance.test_sync_replies import DEFAULT, command_body, make_config, settings_for, slash
from tests.fakes.messages_api import FakeMessagesAPI, reply
from tests.harness import Receiver, rows, wait_for_status, web_server, worker_task

#: ``note`` is optional: a respond_body that uses it fails to render on an answer without it.
SCHEMA: dict[str, Any] = {
    "type": "object",
    "properties": {"answer": {"type": "string"}, "note": {"type": "string"}},
    "required": ["answer"],
    "additionalProperties": False,
}
BODY = {"response_type": "in_channel", "text": "{{ output.answer }} ({{ output.note }})"}


@pytest.fixture(autouse=True)
def env(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HL_SLACK_SECRET", "slack-signing-secret-for-sync-tests")


async def test_a_respond_body_that_fails_on_the_answer_gives_the_default_and_the_follow_up_delivers(
    db_url: str, fake: FakeMessagesAPI, receiver: Receiver
) -> None:
    config = make_config(output_schema=SCHEMA, respond_body=BODY)
    fake.enqueue(reply({"answer": "42"}))  # a valid answer without the optional note
    settings = settings_for(db_url, fake)
    async with web_server(settings, config) as base, worker_task(settings, config), httpx.AsyncClient() as client:
        r = await slash(client, base, command_body(receiver.url))
        event = await wait_for_status(db_url, int(r.headers["x-hookline-event-id"]))
    assert r.status_code == 200 and r.json() == DEFAULT
    assert r.headers["x-hookline-reply"] == "default"
    assert event["status"] == "succeeded"
    assert rows(db_url, "SELECT sync_reply FROM hookline.events") == [("default",)]
    assert len(receiver.received) == 1, "the sender got the default: the answer must follow on response_url"
    assert receiver.received[0].json() == {"response_type": "ephemeral", "text": "Late: 42"}


async def test_close_to_the_deadline_the_reply_waits_for_its_claim(
    db_url: str, fake: FakeMessagesAPI, receiver: Receiver, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(sync_reply, "CLAIM_AFTER_MARGIN_S", 3600.0)  # every answer is close to its deadline
    config = make_config(output_schema=SCHEMA, respond_body=BODY)
    fake.enqueue(reply({"answer": "42", "note": "six times seven"}))
    settings = settings_for(db_url, fake)
    async with web_server(settings, config) as base, worker_task(settings, config), httpx.AsyncClient() as client:
        r = await slash(client, base, command_body(receiver.url))
        claimed = rows(db_url, "SELECT sync_reply FROM hookline.events")  # recorded before the reply went out
        event = await wait_for_status(db_url, int(r.headers["x-hookline-event-id"]))
    assert r.json() == {"response_type": "in_channel", "text": "42 (six times seven)"}
    assert r.headers["x-hookline-reply"] == "answer"
    assert claimed == [("answer",)]
    assert event["status"] == "succeeded"
    assert receiver.received == [], "the answer went out in the HTTP reply: no follow-up"
    ((result,),) = rows(db_url, "SELECT result FROM hookline.action_runs")
    assert result == {"skipped": "the answer went out in the HTTP reply"}
