"""hookline_ingest_requests_total counts each answer under /webhooks/ once, with outcome = accepted,
duplicate, handshake or the error code of the answer; hookline_handshakes_total counts the handshakes
answered, not the ones refused."""

from __future__ import annotations

import time

import httpx
import psycopg
import pytest
from prometheus_client.parser import text_string_to_metric_families
from psycopg import sql

from app.signatures import sign
from tests.acceptance.test_hostile_input import _config, signed
from tests.harness import config_from, make_settings, rows, web_server

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


async def test_a_trailing_slash_is_the_same_endpoint_not_a_redirect(db_url: str, env: None) -> None:
    """Senders do not follow a redirect of a POST (Stripe, GitHub and Slack report it as a failed
    delivery), so ``/webhooks/sw/`` is answered as ``/webhooks/sw`` is, and counted under its source."""
    settings = make_settings(db_url, metrics_token="mt")
    async with web_server(settings, _config()) as base, httpx.AsyncClient() as c:
        raw, headers = signed({"type": "a"})
        first = await c.post(f"{base}/webhooks/sw/", content=raw, headers=headers)
        again = await c.post(f"{base}/webhooks/sw", content=raw, headers=headers)
        wrong = await c.post(f"{base}/webhooks/sw/", content=raw + b" ", headers=headers)
        other = await c.post(f"{base}/webhooks/sw/x/", content=raw, headers=headers)
        text = await scrape(c, base)
    assert first.status_code == 200 and first.json()["status"] == "accepted", first.text
    assert again.status_code == 200 and again.json()["status"] == "duplicate", again.text
    assert wrong.status_code == 401 and wrong.json()["error"] == "invalid_signature", wrong.text
    assert other.status_code == 404 and other.json()["error"] == "not_found", other.text
    got = counters(text, "hookline_ingest_requests_total")
    assert got[(("outcome", "accepted"), ("source", "sw"))] == 1.0
    assert got[(("outcome", "duplicate"), ("source", "sw"))] == 1.0


async def test_a_url_signed_with_its_trailing_slash_verifies_on_that_path(
    db_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Twilio signs the URL it was given: with HOOKLINE_PUBLIC_URL, the URL hookline checks ends in a
    slash exactly when the request's path does."""
    monkeypatch.setenv("HL_TWILIO", "twilio-token")
    config = config_from({"sources": {"sms": {"provider": "twilio", "secrets_env": ["HL_TWILIO"]}}})
    settings = make_settings(db_url, public_url="https://hooks.example.com")
    body = b"MessageSid=SM1&Body=hi"
    form = {"content-type": "application/x-www-form-urlencoded"}

    def signed_for(url: str, delivery: str) -> dict[str, str]:
        return {**sign("twilio", secret="twilio-token", body=body, url=url, delivery_id=delivery), **form}

    with_slash = signed_for("https://hooks.example.com/webhooks/sms/", "tw-1")
    without = signed_for("https://hooks.example.com/webhooks/sms", "tw-2")
    async with web_server(settings, config) as base, httpx.AsyncClient() as c:
        ok_slash = await c.post(f"{base}/webhooks/sms/", content=body, headers=with_slash)
        ok_plain = await c.post(f"{base}/webhooks/sms", content=body, headers=without)
        crossed = await c.post(f"{base}/webhooks/sms/", content=body, headers=without)
    assert ok_slash.status_code == 200, ok_slash.text
    assert ok_plain.status_code == 200, ok_plain.text
    assert crossed.status_code == 401, crossed.text


def _set_standby(db_url: str, names: str | None) -> None:
    """``synchronous_standby_names`` for the whole test server (None: back to its default), in effect for
    new statements once this returns."""
    with psycopg.connect(db_url, autocommit=True) as conn:
        if names is None:
            conn.execute("ALTER SYSTEM RESET synchronous_standby_names")
        else:
            conn.execute(sql.SQL("ALTER SYSTEM SET synchronous_standby_names = {}").format(sql.Literal(names)))
        conn.execute("SELECT pg_reload_conf()")
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        with psycopg.connect(db_url, autocommit=True) as conn:
            got = conn.execute("SHOW synchronous_standby_names").fetchone()
        if got is not None and got[0] == (names or ""):
            return
        time.sleep(0.05)
    raise AssertionError(f"synchronous_standby_names did not become {names!r}")


async def test_a_batch_committed_but_unanswered_in_time_is_acknowledged_not_a_503(db_url: str, env: None) -> None:
    """The batch's commit waits for a synchronous standby that never confirms: the web process's timeout
    (``HOOKLINE_DB_TIMEOUT``) fires and its cancel ends the wait, and Postgres keeps the commit ("the
    transaction has already committed locally"). The rows are looked up: the request is acknowledged
    with its event id, not answered 503 "nothing was stored" for an event that was stored."""
    settings = make_settings(db_url, db_timeout=1.0)
    async with web_server(settings, _config()) as base, httpx.AsyncClient(timeout=30) as client:
        body, headers = signed({"type": "invoice.paid", "id": "unanswered"})
        _set_standby(db_url, "hookline_test_no_such_standby")
        try:
            resp = await client.post(f"{base}/webhooks/sw", content=body, headers=headers)
        finally:
            _set_standby(db_url, None)
    stored = rows(db_url, "SELECT id FROM hookline.events")
    assert len(stored) == 1, "the commit was not kept: this test proved nothing"
    assert resp.status_code == 200, resp.text
    assert resp.json()["event_id"] == stored[0][0]
