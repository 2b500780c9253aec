"""Secrets never appear in logs, errors, metrics or stored rows (issue 12).

One whole run, failures included, at DEBUG: valid and forged deliveries for several providers,
expired and malformed ones, a model that fails transiently and permanently, an http action signed
with its own secret that the receiver first refuses. Every record is formatted both as text and as
JSON lines (tracebacks included), and every configured secret is searched for in all of it, in the
metrics page and in every table hookline writes.
"""

from __future__ import annotations

import io
import json
import logging
import time
from collections.abc import Iterator

import httpx
import pytest

from app.core.logs import JsonFormatter, TextFormatter
from app.signatures import sign_request
from tests.fakes.messages_api import FakeMessagesAPI, error, reply
from tests.harness import Receiver, config_from, make_settings, rows, wait_for_status, web_server, worker_task

PUBLIC = "https://hooks.example.com"
SECRETS = {
    "HL_SW_SECRET": "whsec_" + "bGVha3ktc3RhbmRhcmQtd2ViaG9va3Mtc2VjcmV0",
    "HL_STRIPE_SECRET": "whsec_stripe_leaky_secret_0123456789",
    "HL_GITHUB_SECRET": "github-leaky-secret-0123456789",
    "HL_TWILIO_SECRET": "twilio-leaky-auth-token-0123456789",
    "HL_SLACK_SECRET": "slack-leaky-signing-secret-0123456789",
    "HL_ACTION_SECRET": "whsec_" + "YWN0aW9uLWxlYWt5LXNpZ25pbmcta2V5LTAxMjM=",
}
API_KEY = "sk-ant-leaky-api-key-0123456789abcdef"
ADMIN = "admin-leaky-token-0123456789abcdef"
PROVIDERS = {"sw": "standard_webhooks", "stripe": "stripe", "github": "github", "twilio": "twilio", "slack": "slack"}
ENV = {"sw": "HL_SW_SECRET", "stripe": "HL_STRIPE_SECRET", "github": "HL_GITHUB_SECRET",
       "twilio": "HL_TWILIO_SECRET", "slack": "HL_SLACK_SECRET"}  # fmt: skip
OUT = {"type": "object", "properties": {"s": {"type": "string"}}, "required": ["s"]}


@pytest.fixture
def captured() -> Iterator[io.StringIO]:
    out = io.StringIO()
    handlers = [logging.StreamHandler(out), logging.StreamHandler(out)]
    handlers[0].setFormatter(TextFormatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    handlers[1].setFormatter(JsonFormatter())
    root = logging.getLogger()
    old = root.level
    root.setLevel(logging.DEBUG)
    for h in handlers:
        root.addHandler(h)
    yield out
    for h in handlers:
        root.removeHandler(h)
    root.setLevel(old)


def _forms(secret: str) -> list[str]:
    """The secret and the forms it is used in (the base64 key body of whsec_ secrets)."""
    forms = [secret]
    if secret.startswith("whsec_"):
        forms.append(secret.removeprefix("whsec_"))
    return forms


async def test_no_secret_in_logs_metrics_or_rows_after_a_run_with_failures(
    db_url: str,
    monkeypatch: pytest.MonkeyPatch,
    fake: FakeMessagesAPI,
    receiver: Receiver,
    captured: io.StringIO,
) -> None:
    for name, value in SECRETS.items():
        monkeypatch.setenv(name, value)
    monkeypatch.setenv("HL_CRM_URL", receiver.url)
    sources = {s: {"provider": p, "secrets_env": [ENV[s]]} for s, p in PROVIDERS.items()}
    pipeline = {
        "source": "sw",
        "events": ["*"],
        "instructions": "Summarize.",
        "output_schema": OUT,
        "retry": {"max_attempts": 3, "backoff_seconds": 0.05, "max_backoff_seconds": 0.1, "jitter": False},
        "actions": [{"type": "http", "url_env": "HL_CRM_URL", "secret_env": "HL_ACTION_SECRET"}],
    }
    config = config_from({"sources": sources, "pipelines": {"p": pipeline}})
    settings = make_settings(
        db_url,
        anthropic_api_key=API_KEY,
        anthropic_base_url=fake.base_url,
        public_url=PUBLIC,
        log_level="DEBUG",
        admin_token=ADMIN,
    )
    fake.enqueue(error(500, "api_error"), reply({"s": "ok"}), error(400, "invalid_request_error", "bad"))
    receiver.statuses.extend([500])
    async with web_server(settings, config) as base, worker_task(settings, config), httpx.AsyncClient() as client:
        statuses = []
        event_ids = []
        for source, provider in PROVIDERS.items():
            body = json.dumps({"id": f"evt_{source}", "type": "thing.happened", "event_id": f"E{source}"}).encode()
            if provider == "twilio":
                body = b"MessageSid=SM1&MessageStatus=delivered"
            signed = sign_request(
                provider,
                secret=SECRETS[ENV[source]],
                body=body,
                url=f"{PUBLIC}/webhooks/{source}",
                delivery_id=f"d-{source}",
            )
            url = f"{base}/webhooks/{source}"
            ok = await client.post(url, content=signed.body, headers=signed.headers)
            statuses.append(ok.status_code)
            if source == "sw":
                event_ids.append(ok.json()["event_id"])
            forged = {k: (v[:-4] + "AAA=" if "signature" in k.lower() else v) for k, v in signed.headers.items()}
            statuses.append((await client.post(url, content=signed.body + b" ", headers=forged)).status_code)
            old = sign_request(
                provider,
                secret=SECRETS[ENV[source]],
                body=body,
                url=f"{PUBLIC}/webhooks/{source}",
                now=time.time() - 9999,
            )
            statuses.append((await client.post(url, content=old.body, headers=old.headers)).status_code)
            statuses.append((await client.post(url, content=b"{not json", headers=signed.headers)).status_code)
        body = json.dumps({"type": "second.thing"}).encode()
        second = sign_request("standard_webhooks", secret=SECRETS["HL_SW_SECRET"], body=body, delivery_id="d-2")
        resp = await client.post(f"{base}/webhooks/sw", content=body, headers=second.headers)
        event_ids.append(resp.json()["event_id"])
        finished = [await wait_for_status(db_url, e) for e in event_ids]
        metrics = (await client.get(f"{base}/metrics")).text
        admin = await client.get(f"{base}/admin/api/events", headers={"Authorization": f"Bearer {ADMIN}"})
        assert admin.status_code == 200, admin.text
        metrics += admin.text  # the admin API answers are checked like /metrics
        wrong = await client.get(f"{base}/admin/api/events", headers={"Authorization": f"Bearer {ADMIN}x"})
        assert wrong.status_code == 401
    assert 200 in statuses and 401 in statuses and all(s < 500 for s in statuses)
    assert {e["status"] for e in finished} == {"succeeded", "dead"}, finished
    assert receiver.received, "the signed action was sent"

    log_text = captured.getvalue()
    assert "Traceback" in log_text or "retry" in log_text.lower()  # failures were logged
    stored = json.dumps(
        [
            rows(db_url, "SELECT headers, detail, last_error FROM hookline.events"),
            rows(db_url, "SELECT request, response, error FROM hookline.llm_calls"),
            rows(db_url, "SELECT result, error FROM hookline.action_runs"),
            rows(db_url, "SELECT * FROM hookline.dead_letters"),
        ],
        default=str,
    )
    for secret in [*SECRETS.values(), API_KEY, ADMIN]:
        for form in _forms(secret):
            assert form not in log_text, f"a secret ({form[:6]}…) is in the logs"
            assert form not in metrics, f"a secret ({form[:6]}…) is in /metrics"
            assert form not in stored, f"a secret ({form[:6]}…) is stored"
