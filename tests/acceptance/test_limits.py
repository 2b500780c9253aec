"""Safe to leave running: ingest limits, shared model rate limits, tenant budgets, priorities,
breaker and fallback, refusals, loop guard. Real web, worker(s), Postgres and the anthropic SDK
against the fake Messages API."""

from __future__ import annotations

import json
import time
from typing import Any

import httpx
import pytest

from app.core.config import Config
from app.signatures import sign
from tests.fakes.messages_api import FakeMessagesAPI
from tests.harness import (
    Receiver,
    config_from,
    make_settings,
    rows,
    web_server,
)

SECRET = "whsec_limits_tests"
GOOD = {"subject": "Hello", "urgent": False}
SCHEMA = {
    "type": "object",
    "properties": {"subject": {"type": "string"}, "urgent": {"type": "boolean"}},
    "required": ["subject", "urgent"],
    "additionalProperties": False,
}


@pytest.fixture(autouse=True)
def env(monkeypatch: pytest.MonkeyPatch, receiver: Receiver) -> None:
    monkeypatch.setenv("HL_STRIPE_SECRET", SECRET)
    monkeypatch.setenv("HL_CRM_URL", receiver.url)
    monkeypatch.setenv("HL_OPS_URL", receiver.url.replace("/hook", "/ops"))


def make_config(*, pipelines: dict[str, dict[str, Any]] | None = None, **top: Any) -> Config:
    def pipeline(**over: Any) -> dict[str, Any]:
        return {
            "source": "stripe",
            "events": ["invoice.*"],
            "fields": ["type", "data.object.note"],
            "instructions": "Triage.",
            "output_schema": SCHEMA,
            "retry": {"max_attempts": 3, "backoff_seconds": 0.05, "max_backoff_seconds": 1, "jitter": False},
            "actions": [{"type": "http", "url_env": "HL_CRM_URL"}],
            **over,
        }

    source: dict[str, Any] = {"provider": "stripe", "secrets_env": ["HL_STRIPE_SECRET"], "tenant": "json:tenant"}
    source.update(top.pop("source", {}))
    return config_from(
        {
            "sources": {"stripe": source},
            "pipelines": {name: pipeline(**p) for name, p in (pipelines or {"triage": {}}).items()},
            **top,
        }
    )


def event_body(evt: str, *, etype: str = "invoice.payment_failed", tenant: str | None = None, **obj: Any) -> bytes:
    doc: dict[str, Any] = {
        "id": evt,
        "type": etype,
        "created": int(time.time()),
        "data": {"object": {"note": evt, **obj}},
    }
    if tenant:
        doc["tenant"] = tenant
    return json.dumps(doc).encode()


async def send(client: httpx.AsyncClient, base: str, body: bytes) -> httpx.Response:
    headers = {**sign("stripe", secret=SECRET, body=body), "content-type": "application/json"}
    return await client.post(f"{base}/webhooks/stripe", content=body, headers=headers)


async def deliver(client: httpx.AsyncClient, base: str, body: bytes) -> int:
    resp = await send(client, base, body)
    assert resp.status_code == 200, resp.text
    return int(resp.json()["event_id"])


def settings_for(db_url: str, fake: FakeMessagesAPI, **over: Any) -> Any:
    return make_settings(db_url, anthropic_api_key="sk-test", anthropic_base_url=fake.base_url, **over)


# ------------------------------------------------------------------------------------------- ingest
async def test_the_ingest_limit_answers_429_with_retry_after_and_stores_nothing(db_url: str) -> None:
    config = make_config(source={"rate_limit": {"per_second": 0.01, "burst": 2}})
    settings = make_settings(db_url)
    async with web_server(settings, config) as base, httpx.AsyncClient() as client:
        answers = [await send(client, base, event_body(f"evt_rl_{i}")) for i in range(4)]
    assert [a.status_code for a in answers] == [200, 200, 429, 429]
    assert answers[2].json()["error"] == "rate_limited"
    assert int(answers[2].headers["retry-after"]) >= 1
    assert rows(db_url, "SELECT delivery_id FROM hookline.events ORDER BY id") == [("evt_rl_0",), ("evt_rl_1",)]
