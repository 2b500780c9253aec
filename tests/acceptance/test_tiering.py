"""Tiering and pipelines that talk to the model differently: loop guard, escalate, Message Batches API.
Real web, worker, Postgres and the anthropic SDK against the fake Messages API."""

from __future__ import annotations

import json
import os
from typing import Any

import httpx
import pytest

from app.signatures import sign
from tests.acceptance.test_limits import (
    SECRET,
    deliver,
    event_body,
    make_config,
    settings_for,
    statuses,
    wait_until,
)
from tests.fakes.messages_api import FakeMessagesAPI, refusal, reply
from tests.harness import Receiver, rows, wait_for_status, web_server, worker_task
from worker.pricing import cost_usd


@pytest.fixture(autouse=True)
def env(monkeypatch: pytest.MonkeyPatch, receiver: Receiver) -> None:
    monkeypatch.setenv("HL_STRIPE_SECRET", SECRET)
    monkeypatch.setenv("HL_CRM_URL", receiver.url)
    monkeypatch.setenv("HL_OPS_URL", receiver.url.replace("/hook", "/ops"))


# ------------------------------------------------------------------------------------------- loop guard
def loop_back(ctx: Any) -> dict[str, Any]:
    """A python action that re-triggers its own webhook: the case the loop guard exists for."""
    n = int(ctx.payload["data"]["object"]["n"]) + 1
    body = event_body(f"evt_loop{n}", customer="cus_loop", n=n)
    headers = {**sign("stripe", secret=SECRET, body=body), "content-type": "application/json"}
    resp = httpx.post(f"{os.environ['HL_LOOP_BASE']}/webhooks/stripe", content=body, headers=headers, timeout=10)
    return {"status": resp.status_code}


async def test_the_loop_guard_trips_on_a_self_triggering_action(
    db_url: str, fake: FakeMessagesAPI, receiver: Receiver, monkeypatch: pytest.MonkeyPatch
) -> None:
    config = make_config(
        source={"ordering_key": "json:data.object.customer"},
        pipelines={
            "triage": {
                "loop_guard": {"max_events": 3, "window_seconds": 600},
                "actions": [{"type": "python", "target": "tests.acceptance.test_tiering:loop_back"}],
            }
        },
        alerts=[{"type": "http", "url_env": "HL_OPS_URL"}],
    )
    settings = settings_for(db_url, fake)
    async with web_server(settings, config) as base, worker_task(settings, config), httpx.AsyncClient() as client:
        monkeypatch.setenv("HL_LOOP_BASE", base)
        await deliver(client, base, event_body("evt_loop0", customer="cus_loop", n=0))
        await wait_until(lambda: statuses(db_url).get("evt_loop3", ("",))[0] == "throttled", "the fourth event held")
        await wait_until(lambda: any(x.path == "/ops" for x in receiver.received), "the alert")
    got = statuses(db_url)
    assert [got[f"evt_loop{i}"][0] for i in range(3)] == ["succeeded"] * 3
    assert "loop guard of pipeline triage" in str(got["evt_loop3"][1]) and "cus_loop" in str(got["evt_loop3"][1])
    assert "evt_loop4" not in got  # the loop is broken: the held event ran no action
    alerts = [x.json()["output"] for x in receiver.received if x.path == "/ops"]
    assert len(alerts) == 1 and alerts[0]["alert"] == "loop_guard"


# ------------------------------------------------------------------------------------------- escalate
async def test_escalate_re_asks_a_stronger_model_when_the_answer_says_so(db_url: str, fake: FakeMessagesAPI) -> None:
    config = make_config(pipelines={"triage": {"escalate": {"model": "claude-sonnet-5-5", "when": "urgent"}}})
    fake.enqueue_for_model("claude-haiku-5-5", reply({"subject": "Chargeback!", "urgent": True}))
    fake.enqueue_for_model("claude-sonnet-5-5", reply({"subject": "Chargeback: act today", "urgent": True}))
    settings = settings_for(db_url, fake)
    async with web_server(settings, config) as base, worker_task(settings, config), httpx.AsyncClient() as client:
        done = await wait_for_status(db_url, await deliver(client, base, event_body("evt_esc")))
    assert done["status"] == "succeeded"
    calls = rows(db_url, "SELECT model, route, status, output->>'subject' FROM hookline.llm_calls ORDER BY id")
    assert calls == [
        ("claude-haiku-5-5", "primary", "superseded", "Chargeback!"),
        ("claude-sonnet-5-5", "escalate:urgent", "succeeded", "Chargeback: act today"),
    ]


# ------------------------------------------------------------------------------------------- Message Batches API
async def test_the_batches_api_path_runs_end_to_end(db_url: str, fake: FakeMessagesAPI, receiver: Receiver) -> None:
    config = make_config(pipelines={"triage": {"mode": "batch_api"}})
    fake.enqueue_for("evt_bx1", refusal())
    settings = settings_for(db_url, fake, batch_poll_seconds=1)
    async with web_server(settings, config) as base, worker_task(settings, config), httpx.AsyncClient() as client:
        ids = [await deliver(client, base, event_body(f"evt_bx{i}")) for i in range(3)]
        waiting = await wait_for_status(db_url, ids[0], ("throttled", "succeeded"))
        done = [await wait_for_status(db_url, eid, timeout=60) for eid in ids]
    assert "Message Batches" in str(waiting["detail"]) or waiting["status"] == "succeeded"
    assert [d["status"] for d in done] == ["succeeded", "dead", "succeeded"]
    assert fake.calls_to("/v1/messages") == []  # nothing went through the Messages API
    created = fake.calls_to("/v1/messages/batches")
    assert sum(len(c.body["requests"]) for c in created if c.method == "POST") == 3
    calls = rows(
        db_url,
        "SELECT e.delivery_id, c.route, c.status, c.response->'usage'->>'service_tier', c.cost_usd > 0 "
        "FROM hookline.llm_calls c JOIN hookline.events e ON e.id = c.event_id ORDER BY e.id",
    )
    assert calls == [
        ("evt_bx0", "batch_api", "succeeded", "batch", True),
        ("evt_bx1", "batch_api", "invalid_output", "batch", True),
        ("evt_bx2", "batch_api", "succeeded", "batch", True),
    ]
    assert len([r for r in receiver.received if r.path == "/hook"]) == 2  # each answered event ran its action


# ------------------------------------------------------------------------------------------- micro-batching
async def test_a_burst_is_answered_by_one_call_and_an_invalid_part_dies_alone(
    db_url: str, fake: FakeMessagesAPI, receiver: Receiver
) -> None:
    config = make_config(
        pipelines={
            "triage": {
                "batch": {"max_events": 20, "max_wait_ms": 60000},
                "retry": {"max_attempts": 1},
            }
        }
    )
    settings = settings_for(db_url, fake)
    async with web_server(settings, config) as base, httpx.AsyncClient() as client:
        ids = [await deliver(client, base, event_body(f"evt_mb{i}")) for i in range(20)]
    parts = [{"event_id": eid, "output": {"subject": f"s{eid}", "urgent": False}} for eid in ids]
    parts[7]["output"] = {"subject": "no urgent field"}  # one invalid part
    fake.enqueue(reply({"results": parts}, usage={"input_tokens": 2000, "output_tokens": 400}))
    async with worker_task(settings, config):
        done = [await wait_for_status(db_url, eid, timeout=60) for eid in ids]
    assert [d["status"] for d in done].count("succeeded") == 19
    assert done[7]["status"] == "dead" and "urgent" in str(done[7]["last_error"])
    calls = fake.calls_to("/v1/messages")
    assert len(calls) == 1 and len(json.loads(calls[0].body["messages"][0]["content"])["events"]) == 20
    stored = rows(
        db_url,
        "SELECT event_id, status, route, input_tokens, cost_usd FROM hookline.llm_calls ORDER BY event_id",
    )
    assert [s[1] for s in stored].count("succeeded") == 19 and stored[7][1] == "invalid_output"
    assert {s[2] for s in stored} == {"micro_batch:20"} and {s[3] for s in stored} == {100}  # tokens split
    shares = sorted(s[4] for s in stored)  # the cost split evenly, the leader's row with the remainder
    assert len(set(shares[:-1])) == 1 and shares[-1] >= shares[0]
    ((model, usage),) = rows(db_url, "SELECT DISTINCT model, response->'usage' FROM hookline.llm_calls")
    assert sum(shares) == cost_usd(model, usage)  # the rows add up to what the call cost
    posted = sorted(r.json()["event_id"] for r in receiver.received if r.path == "/hook")
    assert posted == sorted(eid for i, eid in enumerate(ids) if i != 7)  # each event its own action
