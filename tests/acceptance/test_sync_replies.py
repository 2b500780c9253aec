"""Synchronous replies end to end: real uvicorn, the real worker, the fake Messages API, a fake
Slack ``response_url`` (the Receiver), real Postgres NOTIFYs on the one LISTEN connection."""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import json
import re
import time
from typing import Any
from urllib.parse import urlencode

import httpx
import pytest

from app.core.config import Config
from app.core.jobs import PROCESS_EVENT, SYNC_PRIORITY, SYNC_QUEUE
from app.signatures import sign
from tests.fakes.messages_api import FakeMessagesAPI, reply, slow
from tests.harness import Receiver, config_from, make_settings, rows, wait_for_status, web_server, worker_task

SECRET = "slack-signing-secret-for-sync-tests"
DEFAULT = {"response_type": "ephemeral", "text": "Working on it, the answer follows."}
_ids = itertools.count(1)
JOBS = f"SELECT queue_name, priority FROM procrastinate_jobs WHERE task_name = '{PROCESS_EVENT}'"


@pytest.fixture(autouse=True)
def env(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HL_SLACK_SECRET", SECRET)


def make_config(timeout_ms: int = 15000, **over: Any) -> Config:
    pipeline: dict[str, Any] = {
        "source": "slack-commands",
        "events": ["/ask"],
        "fields": ["text", "user_name"],
        "instructions": "Answer the question in one short sentence.",
        "output_schema": {
            "type": "object",
            "properties": {"answer": {"type": "string"}},
            "required": ["answer"],
            "additionalProperties": False,
        },
        "respond": "sync",
        "respond_timeout_ms": timeout_ms,
        "respond_default": DEFAULT,
        "respond_body": {"response_type": "in_channel", "text": "{{ output.answer }} (for {{ fields.user_name }})"},
        "actions": [
            {"type": "slack_response", "allowed_hosts": ["127.0.0.1"], "text": "Late: {{ output.answer }}"},
        ],
        "retry": {"max_attempts": 2, "backoff_seconds": 0.05, "jitter": False},
    }
    pipeline.update(over)
    return config_from(
        {
            "sources": {
                "slack-commands": {
                    "provider": "slack",
                    "secrets_env": ["HL_SLACK_SECRET"],
                    "delivery_id": "json:trigger_id",
                    "event_type": "json:command",
                }
            },
            "pipelines": {"slash-answer": pipeline},
        }
    )


def command_body(response_url: str, text: str = "what is 6 x 7?", trigger: str | None = None) -> bytes:
    """A Slack slash command, form-encoded as Slack sends it."""
    return urlencode(
        {
            "command": "/ask",
            "text": text,
            "user_name": "ada",
            "team_id": "T1",
            "trigger_id": trigger or f"trig.{time.time_ns()}.{next(_ids)}",
            "response_url": response_url,
        }
    ).encode()


async def slash(client: httpx.AsyncClient, base: str, body: bytes, timeout: float = 30) -> httpx.Response:
    headers = {**sign("slack", secret=SECRET, body=body), "content-type": "application/x-www-form-urlencoded"}
    return await client.post(f"{base}/webhooks/slack-commands", content=body, headers=headers, timeout=timeout)


def settings_for(db_url: str, fake: FakeMessagesAPI, **over: Any) -> Any:
    return make_settings(db_url, anthropic_api_key="sk-test", anthropic_base_url=fake.base_url, **over)


async def metrics_text(client: httpx.AsyncClient, base: str) -> str:
    return (await client.get(f"{base}/metrics")).text


async def metric(client: httpx.AsyncClient, base: str, name: str) -> float:
    text = await metrics_text(client, base)
    found = re.search(rf"^{re.escape(name)} (\S+)$", text, re.M)
    return float(found.group(1)) if found else 0.0


async def test_answer_in_time_comes_back_in_the_http_body_and_a_duplicate_gets_it_again(
    db_url: str, fake: FakeMessagesAPI, receiver: Receiver
) -> None:
    config = make_config()
    fake.enqueue(reply({"answer": "42"}))
    settings = settings_for(db_url, fake)
    body = command_body(receiver.url)
    async with web_server(settings, config) as base, worker_task(settings, config), httpx.AsyncClient() as client:
        first = await slash(client, base, body)
        assert first.status_code == 200, first.text
        assert first.headers["content-type"].startswith("application/json")
        assert first.json() == {"response_type": "in_channel", "text": "42 (for ada)"}
        assert first.headers["x-hookline-reply"] == "answer"
        event_id = int(first.headers["x-hookline-event-id"])
        event = await wait_for_status(db_url, event_id)
        again = await slash(client, base, body)  # the sender's retry of the same delivery
    assert event["status"] == "succeeded"
    assert again.status_code == 200 and again.json() == first.json()
    assert again.headers["x-hookline-event-id"] == str(event_id)
    assert len(fake.calls_to("/v1/messages")) == 1, "a duplicate must never cause a second model call"
    ((queue, priority),) = rows(db_url, JOBS)
    assert (queue, priority) == (SYNC_QUEUE, SYNC_PRIORITY)
    ((respond_sync, sync_reply),) = rows(db_url, "SELECT respond_sync, sync_reply FROM hookline.events")
    assert respond_sync is True and sync_reply == "answer"
    ((status, result),) = rows(db_url, "SELECT status, result FROM hookline.action_runs")
    assert status == "succeeded" and result == {"skipped": "the answer went out in the HTTP reply"}
    assert receiver.received == [], "the answer went out in time: no follow-up"


async def test_slow_model_gives_the_default_and_the_late_answer_follows_on_response_url(
    db_url: str, fake: FakeMessagesAPI, receiver: Receiver
) -> None:
    config = make_config(timeout_ms=300)
    fake.enqueue(slow(1.5, then=reply({"answer": "42, eventually"})))
    settings = settings_for(db_url, fake)
    body = command_body(receiver.url)
    async with web_server(settings, config) as base, worker_task(settings, config), httpx.AsyncClient() as client:
        early = await slash(client, base, body)
        assert early.status_code == 200 and early.json() == DEFAULT
        assert early.headers["x-hookline-reply"] == "default"
        event_id = int(early.headers["x-hookline-event-id"])
        duplicate_before = await slash(client, base, body)
        event = await wait_for_status(db_url, event_id)
        duplicate_after = await slash(client, base, body)
    assert duplicate_before.json() == DEFAULT  # no stored answer yet: the default, at once
    assert duplicate_after.json() == DEFAULT  # the answer went as the follow-up: the sender sees it once
    assert duplicate_after.headers["x-hookline-reply"] == "default"
    assert event["status"] == "succeeded"
    assert len(fake.calls_to("/v1/messages")) == 1
    assert len(receiver.received) == 1, "the late answer goes to Slack's response_url once"
    assert receiver.received[0].json() == {"response_type": "ephemeral", "text": "Late: 42, eventually"}
    assert rows(db_url, "SELECT sync_reply FROM hookline.events") == [("default",)]


async def test_two_hundred_waiting_requests_share_one_listen_connection(
    db_url: str, fake: FakeMessagesAPI, receiver: Receiver
) -> None:
    config = make_config(timeout_ms=60000)
    settings = settings_for(db_url, fake, db_timeout=30.0, worker_concurrency=10)
    limits = httpx.Limits(max_connections=250, max_keepalive_connections=250)
    async with web_server(settings, config) as base, httpx.AsyncClient(limits=limits, timeout=90) as client:
        tasks = [asyncio.create_task(slash(client, base, command_body(receiver.url, f"q{i}"), 90)) for i in range(200)]
        deadline = time.monotonic() + 60
        while await metric(client, base, "hookline_sync_waiting") < 200:
            assert time.monotonic() < deadline, "200 requests never all waited"
            await asyncio.sleep(0.1)
        listen = rows(
            db_url,
            "SELECT count(*) FROM pg_stat_activity WHERE application_name = 'hookline-web-listen' "
            "AND datname = current_database()",
        )
        pool = rows(
            db_url,
            "SELECT count(*) FROM pg_stat_activity WHERE application_name = 'hookline-web' "
            "AND datname = current_database()",
        )
        async with worker_task(settings, config):
            answers = await asyncio.gather(*tasks)
    assert listen == [(1,)], "every waiting request shares the process's one LISTEN connection"
    assert pool[0][0] <= settings.db_pool_max, "waiting requests hold no pool connection"
    assert [a.status_code for a in answers] == [200] * 200
    assert {a.headers["x-hookline-reply"] for a in answers} == {"answer"}
    assert len({a.headers["x-hookline-event-id"] for a in answers}) == 200
    assert len(fake.calls_to("/v1/messages")) == 200


async def test_a_client_that_disconnects_cancels_its_wait(
    db_url: str, fake: FakeMessagesAPI, receiver: Receiver
) -> None:
    config = make_config(timeout_ms=60000)
    settings = settings_for(db_url, fake)
    async with web_server(settings, config) as base, httpx.AsyncClient() as client:
        request = asyncio.create_task(slash(client, base, command_body(receiver.url), 90))
        deadline = time.monotonic() + 20
        while await metric(client, base, "hookline_sync_waiting") != 1:
            assert time.monotonic() < deadline and not request.done(), "the request never waited"
            await asyncio.sleep(0.05)
        request.cancel()  # the client goes away: httpx closes the connection
        with contextlib.suppress(asyncio.CancelledError):
            await request
        gone = 'hookline_sync_replies_total{outcome="disconnected",pipeline="slash-answer",source="slack-commands"} 1'
        while await metric(client, base, "hookline_sync_waiting") != 0 or gone not in await metrics_text(client, base):
            assert time.monotonic() < deadline, "the wait outlived its client"
            await asyncio.sleep(0.05)
        while rows(db_url, "SELECT sync_reply FROM hookline.events") != [("default",)]:
            assert time.monotonic() < deadline, "the default was not recorded"
            await asyncio.sleep(0.05)
    # the event is stored and will be processed; the follow-up will carry its answer
    assert rows(db_url, "SELECT status FROM hookline.events") == [("queued",)]


async def test_handshake_and_async_pipelines_are_unchanged(db_url: str, fake: FakeMessagesAPI) -> None:
    config = make_config()
    settings = settings_for(db_url, fake)
    challenge = json.dumps({"type": "url_verification", "challenge": "c-123", "token": "t"}).encode()
    async with web_server(settings, config) as base, httpx.AsyncClient() as client:
        resp = await client.post(
            f"{base}/webhooks/slack-commands",
            content=challenge,
            headers={**sign("slack", secret=SECRET, body=challenge), "content-type": "application/json"},
        )
        other = command_body("https://hooks.slack.com/x").replace(b"%2Fask", b"%2Fother")
        plain = await slash(client, base, other)
    assert resp.status_code == 200 and "c-123" in resp.text
    assert plain.status_code == 200 and plain.json()["status"] == "accepted"  # no sync pipeline matches
    assert rows(db_url, JOBS) == [("hookline", 0)]


async def test_simulated_model_answer_comes_back_in_the_http_body_marked_simulated(
    db_url: str, receiver: Receiver
) -> None:
    """``hookline dev --simulate-model``: the simulated answer (stored ``simulated``, never ``succeeded``)
    is the one the synchronous reply carries, well before the deadline, marked as simulated; no
    follow-up repeats it."""
    config = make_config(timeout_ms=8000)
    settings = make_settings(db_url)
    body = command_body(receiver.url)
    async with (
        web_server(settings, config) as base,
        worker_task(settings, config, simulate_model=True),
        httpx.AsyncClient() as client,
    ):
        started = time.monotonic()
        first = await slash(client, base, body)
        waited = time.monotonic() - started
        assert first.status_code == 200, first.text
        event_id = int(first.headers["x-hookline-event-id"])
        event = await wait_for_status(db_url, event_id)
        again = await slash(client, base, body)  # the sender's retry: the same answer, at once
    assert event["status"] == "succeeded"
    ((status, output),) = rows(db_url, "SELECT status, output FROM hookline.llm_calls")
    assert status == "simulated"
    assert first.headers["x-hookline-reply"] == "answer", (first.headers, first.text)
    assert first.headers["x-hookline-simulated"] == "true"
    assert first.json() == {"response_type": "in_channel", "text": f"{output['answer']} (for ada)"}
    assert waited < 6, "the simulated answer is stored at once: the reply must not wait for its deadline"
    assert again.headers["x-hookline-reply"] == "answer" and again.json() == first.json()
    assert again.headers["x-hookline-simulated"] == "true"
    assert rows(db_url, "SELECT sync_reply FROM hookline.events") == [("answer",)]
    ((run_status, result),) = rows(db_url, "SELECT status, result FROM hookline.action_runs")
    assert run_status == "succeeded" and result == {"skipped": "the answer went out in the HTTP reply"}
    assert receiver.received == [], "the answer went out in the HTTP reply: no follow-up"


async def test_a_slack_reply_escapes_the_values_it_inserts(
    db_url: str, fake: FakeMessagesAPI, receiver: Receiver
) -> None:
    """A slash command's reply is a Slack message: a value (the answer, the command's text) can never
    notify the channel, mention someone or disguise a link; the template's own markup stays."""
    config = make_config(
        respond_body={
            "response_type": "in_channel",
            "text": "<@{{ fields.user_name }}> asked: {{ fields.text }} -> {{ output.answer }}",
            "blocks": [{"type": "section", "text": {"type": "mrkdwn", "text": "*{{ output.answer }}*"}}],
        }
    )
    fake.enqueue(reply({"answer": "<!channel> log in at <https://evil.example|https://slack.com> & now"}))
    settings = settings_for(db_url, fake)
    body = command_body(receiver.url, text="<!here> help")
    async with web_server(settings, config) as base, worker_task(settings, config), httpx.AsyncClient() as client:
        resp = await slash(client, base, body)
    assert resp.status_code == 200 and resp.headers["x-hookline-reply"] == "answer", resp.text
    answer = "&lt;!channel&gt; log in at &lt;https://evil.example|https://slack.com&gt; &amp; now"
    assert resp.json() == {
        "response_type": "in_channel",
        "text": f"<@ada> asked: &lt;!here&gt; help -> {answer}",
        "blocks": [{"type": "section", "text": {"type": "mrkdwn", "text": f"*{answer}*"}}],
    }


async def test_a_retry_whose_values_cannot_be_sent_as_utf8_is_still_answered(
    db_url: str, fake: FakeMessagesAPI, receiver: Receiver
) -> None:
    """The sender's retry of a delivery is a duplicate whatever its body holds, and it is answered without
    a database write, so an unpaired surrogate in its values (Slack interactivity's JSON ``payload`` field,
    ``\\ud800``) is never refused by Postgres: the reply over it is still a 200, never a 500 from encoding
    it (JSON and plain text alike)."""
    config = make_config()
    fake.enqueue(reply({"answer": "42"}))
    settings = settings_for(db_url, fake)
    trigger = f"trig.surrogate.{next(_ids)}"
    body = command_body(receiver.url, trigger=trigger)
    retry = {"command": "/ask", "text": "q", "user_name": "\ud800", "trigger_id": trigger, "response_url": receiver.url}
    odd = urlencode({"payload": json.dumps(retry)}).encode()  # json.dumps writes the surrogate as \ud800
    async with web_server(settings, config) as base, worker_task(settings, config), httpx.AsyncClient() as client:
        first = await slash(client, base, body)
        assert first.status_code == 200 and first.headers["x-hookline-reply"] == "answer", first.text
        again = await slash(client, base, odd)
    assert again.status_code == 200, again.text
    assert again.headers["x-hookline-event-id"] == first.headers["x-hookline-event-id"]
    assert again.json()["response_type"] == "in_channel"  # valid JSON, as UTF-8
    assert len(fake.calls_to("/v1/messages")) == 1
    assert rows(db_url, "SELECT count(*) FROM hookline.events") == [(1,)]


async def test_a_retry_with_other_values_gets_the_reply_of_the_stored_event(
    db_url: str, fake: FakeMessagesAPI, receiver: Receiver
) -> None:
    """A retry is the stored delivery, whatever its body says now: its reply is rendered over the stored
    event's payload (the fields the model saw), never the answer mixed with the retry's own values."""
    config = make_config()
    fake.enqueue(reply({"answer": "42"}))
    settings = settings_for(db_url, fake)
    trigger = f"trig.other.{next(_ids)}"
    body = command_body(receiver.url, trigger=trigger)
    other = body.replace(b"user_name=ada", b"user_name=eve")
    async with web_server(settings, config) as base, worker_task(settings, config), httpx.AsyncClient() as client:
        first = await slash(client, base, body)
        assert first.json() == {"response_type": "in_channel", "text": "42 (for ada)"}, first.text
        again = await slash(client, base, other)
    assert again.headers["x-hookline-event-id"] == first.headers["x-hookline-event-id"]
    assert again.json() == {"response_type": "in_channel", "text": "42 (for ada)"}
    assert len(fake.calls_to("/v1/messages")) == 1


async def test_a_default_given_over_an_answer_does_not_show_that_answer(
    db_url: str, fake: FakeMessagesAPI, receiver: Receiver
) -> None:
    """``respond_body`` fails to render on this answer, so the sender gets ``respond_default``, which sees
    ``output`` as null, as documented: a default that reads ``output`` shows its fallback, not the answer
    the follow-up action then delivers (the sender would get it twice)."""
    config = make_config(
        respond_body={"response_type": "in_channel", "text": "{{ 1 // (output.answer | length - 2) }}"},
        respond_default={"response_type": "ephemeral", "text": "{{ output.answer | default('Working on it') }}"},
    )
    fake.enqueue(reply({"answer": "42"}))  # two characters: the body divides by zero
    settings = settings_for(db_url, fake)
    async with web_server(settings, config) as base, worker_task(settings, config), httpx.AsyncClient() as client:
        resp = await slash(client, base, command_body(receiver.url))
        assert resp.status_code == 200, resp.text
        await wait_for_status(db_url, int(resp.headers["x-hookline-event-id"]))
    assert resp.headers["x-hookline-reply"] == "default"
    assert resp.json() == {"response_type": "ephemeral", "text": "Working on it"}
    assert [json.loads(r.body)["text"] for r in receiver.received] == ["Late: 42"]  # the answer, once
