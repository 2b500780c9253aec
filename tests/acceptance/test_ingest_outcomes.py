"""hookline_ingest_requests_total counts each answer under /webhooks/ once, with outcome = accepted,
duplicate, handshake or the error code of the answer; hookline_handshakes_total counts the handshakes
answered, not the ones refused."""

from __future__ import annotations

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families

from tests.acceptance.test_hostile_input import _config, signed
from tests.harness import config_from, make_settings, web_server

SECRET = "whsec_" + "aG9zdGlsZS1pbnB1dC10ZXN0LXNlY3JldC0xMjM0NQ=="


@pytest.fixture
def env(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HL_SW_SECRET", SECRET)
    monkeypatch.setenv("HL_META_SECRET", "meta-app-secret")
    monkeypatch.setenv("HL_META_VERIFY", "right-token")


def counters(text: str, name: str) -> dict[tuple[tuple[str, str], ...], float]:
    return {
        tuple(sorted(s.labels.items())): s.value
        for family in text_string_to_metric_families(text)
        for s in family.samples
        if s.name == name
    }


async def scrape(client: httpx.AsyncClient, base: str) -> str:
    return (await client.get(f"{base}/metrics", headers={"Authorization": "Bearer mt"})).text


async def test_a_refused_address_is_one_forbidden_answer(db_url: str, env: None) -> None:
    settings = make_settings(db_url, metrics_token="mt")
    async with web_server(settings, _config(allowed_ips=["203.0.113.0/24"])) as base, httpx.AsyncClient() as c:
        raw, headers = signed({"type": "a"})
        resp = await c.post(f"{base}/webhooks/sw", content=raw, headers=headers)
        text = await scrape(c, base)
    assert resp.status_code == 403 and resp.json()["error"] == "forbidden"
    assert counters(text, "hookline_ingest_requests_total") == {(("outcome", "forbidden"), ("source", "sw")): 1.0}


async def test_a_refused_meta_handshake_is_a_forbidden_answer_not_a_handshake(db_url: str, env: None) -> None:
    config = config_from(
        {
            "sources": {
                "meta": {
                    "provider": "meta_whatsapp",
                    "secrets_env": ["HL_META_SECRET"],
                    "verify_token_env": "HL_META_VERIFY",
                }
            }
        }
    )
    settings = make_settings(db_url, metrics_token="mt")
    query = {"hub.mode": "subscribe", "hub.challenge": "abc"}
    async with web_server(settings, config) as base, httpx.AsyncClient() as c:
        refused = await c.get(f"{base}/webhooks/meta", params={**query, "hub.verify_token": "wrong"})
        answered = await c.get(f"{base}/webhooks/meta", params={**query, "hub.verify_token": "right-token"})
        text = await scrape(c, base)
    assert refused.status_code == 403 and refused.json()["error"] == "forbidden"
    assert answered.status_code == 200 and answered.text == "abc"
    assert counters(text, "hookline_ingest_requests_total") == {
        (("outcome", "forbidden"), ("source", "meta")): 1.0,
        (("outcome", "handshake"), ("source", "meta")): 1.0,
    }
    assert counters(text, "hookline_handshakes_total") == {(("source", "meta"),): 1.0}
