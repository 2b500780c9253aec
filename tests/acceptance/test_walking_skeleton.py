"""Signed HTTP request in → Postgres → procrastinate worker → real anthropic SDK → fake API → rows and
an HTTP action out. Every part is real except the Messages API, which is a local HTTP fake."""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import time
from typing import Any

import httpx
import psycopg
import pytest

from app.core.config import Config
from app.signatures import sign, verify
from tests.fakes.messages_api import FakeMessagesAPI, reply
from tests.harness import (
    Receiver,
    config_from,
    make_settings,
    rows,
    wait_for_status,
    web_server,
    worker_task,
)

SECRET = "whsec_" + base64.b64encode(b"hookline-test-secret-32-bytes!!!").decode()
OUT_SECRET = "whsec_" + base64.b64encode(b"receiver-verifies-hookline-sigs!").decode()
STRIPE_SECRET = "whsec_stripe_test_secret"


@pytest.fixture
def env(monkeypatch: pytest.MonkeyPatch, receiver: Receiver) -> None:
    monkeypatch.setenv("HL_TEST_SECRET", SECRET)
    monkeypatch.setenv("HL_STRIPE_SECRET", STRIPE_SECRET)
    monkeypatch.setenv("HL_CRM_URL", receiver.url)
    monkeypatch.setenv("HL_CRM_SECRET", OUT_SECRET)


def skeleton_config(**pipeline_over: Any) -> Config:
    pipeline: dict[str, Any] = {
        "source": "stripe",
        "events": ["invoice.payment_failed"],
        "fields": ["type", "data.object.customer_email", "data.object.amount_due"],
        "model": "claude-haiku-5-5",
        "instructions": "Draft a short, kind recovery email for this failed payment.",
        "output_schema": {
            "type": "object",
            "properties": {"subject": {"type": "string"}, "body": {"type": "string"}},
            "required": ["subject", "body"],
        },
        "actions": [{"type": "http", "url_env": "HL_CRM_URL", "secret_env": "HL_CRM_SECRET"}, {"type": "log"}],
    }
    pipeline.update(pipeline_over)
    return config_from(
        {
            "sources": {
                "stripe": {"provider": "stripe", "secrets_env": ["HL_STRIPE_SECRET"], "tolerance_seconds": 300},
                "hooks": {"provider": "standard_webhooks", "secrets_env": ["HL_TEST_SECRET"], "max_body_bytes": 2048},
            },
            "pipelines": {"payment-recovery": pipeline},
        }
    )


def stripe_event(evt_id: str = "evt_1", *, email: str = "ada@example.com", note: str = "x") -> bytes:
    return json.dumps(
        {
            "id": evt_id,
            "object": "event",
            "type": "invoice.payment_failed",
            "created": int(time.time()),
            "data": {
                "object": {
                    "id": "in_1",
                    "customer": "cus_42",
                    "customer_email": email,
                    "amount_due": 1999,
                    "internal_note": note,
                }
            },
        }
    ).encode()


def stripe_headers(body: bytes, secret: str = STRIPE_SECRET) -> dict[str, str]:
    return {**sign("stripe", secret=secret, body=body), "content-type": "application/json"}


async def test_signed_event_is_processed_end_to_end(
    db_url: str, env: None, fake: FakeMessagesAPI, receiver: Receiver
) -> None:
    config = skeleton_config()
    settings = make_settings(db_url, anthropic_api_key="sk-test", anthropic_base_url=fake.base_url)
    fake.enqueue(reply({"subject": "About your invoice", "body": "Your card was declined; here is a link."}))
    body = stripe_event(note="do-not-send-to-the-model")
    async with web_server(settings, config) as base, worker_task(settings, config, _strict_response_validation=True):
        async with httpx.AsyncClient() as client:
            resp = await client.post(f"{base}/webhooks/stripe", content=body, headers=stripe_headers(body))
        assert resp.status_code == 200, resp.text
        assert resp.json()["status"] == "accepted"
        event_id = resp.json()["event_id"]
        event = await wait_for_status(db_url, event_id)
    assert event["status"] == "succeeded", event
    assert event["attempts"] == 1

    stored = rows(
        db_url,
        "SELECT source, delivery_id, event_type, ordering_key, body, payload->>'id', headers "
        "FROM hookline.events WHERE id = %s",
        event_id,
    )[0]
    assert stored[:4] == ("stripe", "evt_1", "invoice.payment_failed", None)
    assert bytes(stored[4]) == body  # raw body byte for byte
    assert stored[5] == "evt_1"
    assert "stripe-signature" not in stored[6]  # only metadata headers and HOOKLINE_STORED_HEADERS are kept
    assert stored[6]["content-type"].startswith("application/json")

    # the model saw only the listed fields, through the real SDK, with structured output
    (call,) = fake.calls_to("/v1/messages")
    sent = call.body
    assert sent["output_config"]["format"]["type"] == "json_schema"
    assert "temperature" not in sent
    user = json.loads(sent["messages"][0]["content"])
    assert user["fields"] == {
        "type": "invoice.payment_failed",
        "data.object.customer_email": "ada@example.com",
        "data.object.amount_due": 1999,
    }
    assert "do-not-send-to-the-model" not in json.dumps(sent)

    (llm,) = rows(
        db_url,
        "SELECT status, model, output, input_tokens, output_tokens, cost_usd, request_id, "
        "latency_ms FROM hookline.llm_calls WHERE event_id = %s",
        event_id,
    )
    assert llm[0:3] == (
        "succeeded",
        "claude-haiku-5-5",
        {"subject": "About your invoice", "body": "Your card was declined; here is a link."},
    )
    assert llm[3] > 0 and llm[4] > 0 and llm[5] is not None and llm[6].startswith("req_") and llm[7] >= 0

    # the http action arrived, signed so the receiver can verify us (Standard Webhooks)
    (got,) = receiver.received
    verify("standard_webhooks", secrets=[OUT_SECRET], headers=got.headers, body=got.body)
    assert got.json()["output"]["subject"] == "About your invoice"
    assert got.headers["idempotency-key"] == got.headers["webhook-id"]
    actions = rows(
        db_url, "SELECT action, action_type, status FROM hookline.action_runs WHERE event_id = %s ORDER BY id", event_id
    )
    assert actions == [("http#0", "http", "succeeded"), ("log#1", "log", "succeeded")]


async def test_same_delivery_twice_is_one_row_one_job_one_model_call(
    db_url: str, env: None, fake: FakeMessagesAPI, receiver: Receiver
) -> None:
    config = skeleton_config()
    settings = make_settings(db_url, anthropic_api_key="sk-test", anthropic_base_url=fake.base_url)
    body = stripe_event("evt_dup")
    async with web_server(settings, config) as base, worker_task(settings, config):
        async with httpx.AsyncClient() as client:
            first = await client.post(f"{base}/webhooks/stripe", content=body, headers=stripe_headers(body))
            second = await client.post(f"{base}/webhooks/stripe", content=body, headers=stripe_headers(body))
        assert first.json()["status"] == "accepted"
        assert second.status_code == 200
        assert second.json() == {"status": "duplicate", "event_id": first.json()["event_id"]}
        await wait_for_status(db_url, first.json()["event_id"])
    assert rows(db_url, "SELECT count(*) FROM hookline.events") == [(1,)]
    assert rows(db_url, "SELECT count(*) FROM procrastinate_jobs WHERE task_name = 'hookline:process_event'") == [(1,)]
    assert len(fake.calls_to("/v1/messages")) == 1
    assert len(receiver.received) == 1


@pytest.mark.parametrize("cache_size", [20_000, 0])
async def test_a_resend_is_answered_from_the_web_processs_memory_of_stored_keys(
    db_url: str, env: None, cache_size: int
) -> None:
    """A key this web process saw committed is answered without asking Postgres (HOOKLINE_DUPLICATE_CACHE_SIZE):
    a row deleted by hand behind its back is still called a duplicate; with the cache off, Postgres decides."""
    body = b'{"type": "ping"}'
    headers = sign("standard_webhooks", secret=SECRET, body=body, delivery_id="msg_cached")
    settings = make_settings(db_url, duplicate_cache_size=cache_size)
    async with web_server(settings, skeleton_config()) as base, httpx.AsyncClient() as client:
        first = await client.post(f"{base}/webhooks/hooks", content=body, headers=headers)
        assert first.json()["status"] == "accepted"
        with psycopg.connect(db_url, autocommit=True) as conn:  # a DBA, by hand
            conn.execute("DELETE FROM procrastinate_jobs")
            conn.execute("DELETE FROM hookline.events WHERE delivery_id = 'msg_cached'")
        again = await client.post(f"{base}/webhooks/hooks", content=body, headers=headers)
    assert again.status_code == 200
    if cache_size:
        assert again.json() == {"status": "duplicate", "event_id": first.json()["event_id"]}
        assert rows(db_url, "SELECT count(*) FROM hookline.events") == [(0,)]
    else:
        assert again.json()["status"] == "accepted" and again.json()["event_id"] != first.json()["event_id"]
        assert rows(db_url, "SELECT count(*) FROM hookline.events") == [(1,)]


@pytest.mark.parametrize("case", ["tampered", "wrong_secret", "missing_header", "stale"])
async def test_bad_signatures_get_401_and_store_nothing(
    db_url: str, env: None, case: str, caplog: pytest.LogCaptureFixture
) -> None:
    config = skeleton_config()
    settings = make_settings(db_url)
    body = stripe_event("evt_bad")
    headers = stripe_headers(body)
    if case == "tampered":
        body = body.replace(b"1999", b"1")
    elif case == "wrong_secret":
        headers = stripe_headers(body, secret="whsec_not_the_secret")
    elif case == "missing_header":
        headers.pop("Stripe-Signature", None)
        headers.pop("stripe-signature", None)
    elif case == "stale":
        old = time.time() - 3600
        headers = {**sign("stripe", secret=STRIPE_SECRET, body=body, now=old), "content-type": "application/json"}
    async with web_server(settings, config) as base, httpx.AsyncClient() as client:
        resp = await client.post(f"{base}/webhooks/stripe", content=body, headers=headers)
    assert resp.status_code == 401
    assert resp.json() == {"error": "invalid_signature", "detail": "signature verification failed"}
    assert rows(db_url, "SELECT count(*) FROM hookline.events") == [(0,)]
    assert rows(db_url, "SELECT count(*) FROM procrastinate_jobs") == [(0,)]
    assert STRIPE_SECRET not in caplog.text and STRIPE_SECRET not in resp.text
    assert any(getattr(r, "reason", None) for r in caplog.records), "the rejection is logged with a reason code"


async def test_client_errors_are_clear_and_store_nothing(db_url: str, env: None) -> None:
    config = skeleton_config()
    settings = make_settings(db_url)
    async with web_server(settings, config) as base, httpx.AsyncClient() as client:
        unknown = await client.post(f"{base}/webhooks/nope", content=b"{}")
        big = b'{"pad": "' + b"x" * 4096 + b'"}'
        too_big = await client.post(
            f"{base}/webhooks/hooks",
            content=big,
            headers=sign("standard_webhooks", secret=SECRET, body=big, delivery_id="msg_big"),
        )
        not_json = b"this is not json"
        bad_json = await client.post(
            f"{base}/webhooks/hooks",
            content=not_json,
            headers=sign("standard_webhooks", secret=SECRET, body=not_json, delivery_id="m1"),
        )
        wrong_method = await client.put(f"{base}/webhooks/hooks", content=b"{}")
        unstorable = []
        for i, raw in enumerate((b'{"a": "nul \\u0000 here"}', b'{"a": "\\ud800"}')):
            unstorable.append(
                await client.post(
                    f"{base}/webhooks/hooks",
                    content=raw,
                    headers=sign("standard_webhooks", secret=SECRET, body=raw, delivery_id=f"msg_bad_{i}"),
                )
            )
    assert unknown.status_code == 404 and unknown.json()["error"] == "unknown_source"
    assert too_big.status_code == 413 and too_big.json()["error"] == "payload_too_large"
    assert bad_json.status_code == 400 and "not valid JSON" in bad_json.json()["detail"]
    assert wrong_method.status_code == 405
    assert [r.status_code for r in unstorable] == [400, 400], [r.text for r in unstorable]
    assert all("cannot store" in r.json()["detail"] for r in unstorable)
    assert rows(db_url, "SELECT count(*) FROM hookline.events") == [(0,)]


async def test_health_and_readiness(db_url: str, env: None) -> None:
    config = skeleton_config()
    async with web_server(make_settings(db_url), config) as base, httpx.AsyncClient() as client:
        assert (await client.get(f"{base}/healthz")).json() == {"status": "ok"}
        ready = await client.get(f"{base}/readyz")
        assert ready.status_code == 200 and ready.json()["status"] == "ready"
        metrics = await client.get(f"{base}/metrics")
        assert "\nhookline_database_up 1.0\n" in metrics.text  # the sample, not the HELP line
    with psycopg.connect(db_url, autocommit=True) as conn:
        conn.execute(
            "DELETE FROM hookline.schema_migrations "
            "WHERE version = (SELECT max(version) FROM hookline.schema_migrations)"
        )
    async with web_server(make_settings(db_url), config) as base, httpx.AsyncClient() as client:
        stale = await client.get(f"{base}/readyz")
    assert stale.status_code == 503 and stale.json()["database"] == "schema not current"
    assert "retry-after" in stale.headers  # as every 503 of /readyz: the load balancer asks again


async def test_unreachable_database_is_503_with_retry_after(env: None, tmp_path: Any) -> None:
    config = skeleton_config()
    settings = make_settings(f"postgresql://nobody@/nowhere?host={tmp_path}", retry_after_seconds=7)
    body = b'{"hello": "world"}'
    async with web_server(settings, config) as base, httpx.AsyncClient() as client:
        resp = await client.post(
            f"{base}/webhooks/hooks",
            content=body,
            headers=sign("standard_webhooks", secret=SECRET, body=body, delivery_id="msg_503"),
        )
        health = await client.get(f"{base}/healthz")
        ready = await client.get(f"{base}/readyz")
    assert resp.status_code == 503 and resp.headers["retry-after"] == "7"
    assert resp.json()["error"] == "database_unavailable"
    assert health.status_code == 200 and ready.status_code == 503


async def test_worker_run_twice_on_one_event_does_nothing_the_second_time(
    db_url: str, env: None, fake: FakeMessagesAPI, receiver: Receiver
) -> None:
    from worker.runtime import Runtime
    from worker.tasks import handle_event

    config = skeleton_config()
    settings = make_settings(db_url, anthropic_api_key="sk-test", anthropic_base_url=fake.base_url)
    body = stripe_event("evt_twice")
    async with web_server(settings, config) as base, httpx.AsyncClient() as client:
        resp = await client.post(f"{base}/webhooks/stripe", content=body, headers=stripe_headers(body))
        event_id = resp.json()["event_id"]
    rt = Runtime.build(settings, config)
    await rt.open()
    try:
        assert await handle_event(rt, event_id) == "succeeded"
        assert await handle_event(rt, event_id) == "noop"
    finally:
        await rt.close()
    assert len(fake.calls_to("/v1/messages")) == 1
    assert len(receiver.received) == 1
    assert rows(db_url, "SELECT attempts FROM hookline.events WHERE id = %s", event_id) == [(1,)]


async def test_without_api_key_the_request_is_stored_and_no_action_fires(
    db_url: str, env: None, fake: FakeMessagesAPI, receiver: Receiver
) -> None:
    config = skeleton_config()
    settings = make_settings(db_url)  # no ANTHROPIC_API_KEY
    body = stripe_event("evt_dry")
    async with web_server(settings, config) as base, worker_task(settings, config):
        async with httpx.AsyncClient() as client:
            event_id = (
                await client.post(f"{base}/webhooks/stripe", content=body, headers=stripe_headers(body))
            ).json()["event_id"]
        event = await wait_for_status(db_url, event_id)
    assert event["status"] == "succeeded" and event["dry_run"] is True
    assert "dry run" in event["detail"]
    ((status, request),) = rows(db_url, "SELECT status, request FROM hookline.llm_calls WHERE event_id = %s", event_id)
    assert status == "dry_run"
    assert request["model"] == "claude-haiku-5-5" and request["output_config"]["format"]["type"] == "json_schema"
    assert fake.calls_to("/v1/messages") == [] and receiver.received == []
    assert rows(db_url, "SELECT count(*) FROM hookline.action_runs") == [(0,)]


async def test_event_without_a_matching_pipeline_is_skipped(db_url: str, env: None) -> None:
    config = skeleton_config()
    settings = make_settings(db_url)
    body = json.dumps(
        {"id": "evt_other", "type": "customer.created", "created": int(time.time()), "data": {"object": {}}}
    ).encode()
    async with web_server(settings, config) as base, worker_task(settings, config):
        async with httpx.AsyncClient() as client:
            event_id = (
                await client.post(f"{base}/webhooks/stripe", content=body, headers=stripe_headers(body))
            ).json()["event_id"]
        event = await wait_for_status(db_url, event_id)
    assert event["status"] == "skipped" and "no pipeline matches" in event["detail"]


def test_outbound_signature_is_standard_webhooks() -> None:
    """What the receiver-side check in the end-to-end test relies on, computed by hand."""
    body = b'{"a":1}'
    headers = sign("standard_webhooks", secret=OUT_SECRET, body=body, delivery_id="msg_1", now=1700000000)
    key = base64.b64decode(OUT_SECRET.removeprefix("whsec_"))
    expected = base64.b64encode(hmac.new(key, b"msg_1.1700000000." + body, hashlib.sha256).digest()).decode()
    assert f"v1,{expected}" in headers["webhook-signature"].split(" ")


async def test_output_model_and_python_action(db_url: str, env: None, fake: FakeMessagesAPI) -> None:
    """A pydantic model named by import path validates the answer (constraints included) and a python
    action receives it; an answer breaking the model's bounds gets the repair turn."""
    from tests import pipeline_models

    pipeline_models.RECEIVED.clear()
    config = skeleton_config(
        output_schema=None,
        output_model="tests.pipeline_models:Triage",
        actions=[{"type": "python", "target": "tests.pipeline_models:record", "name": "record"}],
    )
    settings = make_settings(db_url, anthropic_api_key="sk-test", anthropic_base_url=fake.base_url)
    fake.enqueue(
        reply({"category": "billing", "urgency": 9, "summary": "card declined"}),
        reply({"category": "billing", "urgency": 4, "summary": "card declined"}),
    )
    body = stripe_event("evt_model")
    async with web_server(settings, config) as base, worker_task(settings, config, _strict_response_validation=True):
        async with httpx.AsyncClient() as client:
            resp = await client.post(f"{base}/webhooks/stripe", content=body, headers=stripe_headers(body))
        event = await wait_for_status(db_url, resp.json()["event_id"])
    assert event["status"] == "succeeded", event
    first = fake.calls_to("/v1/messages")[0].body
    schema = first["output_config"]["format"]["schema"]
    assert schema["additionalProperties"] is False and set(schema["required"]) == {"category", "urgency", "summary"}
    assert "less than or equal to 5" in fake.calls_to("/v1/messages")[1].body["messages"][-1]["content"]
    (ctx,) = pipeline_models.RECEIVED
    assert ctx.output == {"category": "billing", "urgency": 4, "summary": "card declined"}
    assert ctx.idempotency_key == f"hookline-{event['id']}-payment-recovery-record"
    assert rows(db_url, "SELECT result FROM hookline.action_runs") == [({"returned": {"seen": "billing"}},)]
