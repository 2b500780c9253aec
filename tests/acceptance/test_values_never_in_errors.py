"""Errors and details name the place, never the value: an SMTP password that holds '/' (AWS SES
passwords do) is not quoted by a parse error into stored rows, logs or the admin API, and a payload
that fails its source's schema is described by path, keyword and the schema's constant, in the 422
and in the stored ``detail`` that every dashboard user reads (a field named in ``redact`` included)."""

from __future__ import annotations

import io
import json
import logging
import re
import uuid
from collections.abc import Iterator
from typing import Any

import httpx
import pytest

from app.core.logs import JsonFormatter, TextFormatter
from app.signatures import sign_request
from tests.fakes.messages_api import FakeMessagesAPI, reply
from tests.harness import config_from, make_settings, rows, wait_for_status, web_server, worker_task

SECRET = "whsec_" + "dmFsdWVzLW5ldmVyLWluLWVycm9ycy1zZWNyZXQ="
TOKEN = "admin-token-values-never-in-errors-0123"
PASSWORD = "BHk3PwLEAK/d+tail"  # the shape of an AWS SES SMTP password
OUT = {"type": "object", "properties": {"s": {"type": "string"}}, "required": ["s"]}
AUTH = {"Authorization": f"Bearer {TOKEN}"}


@pytest.fixture
def captured() -> Iterator[io.StringIO]:
    out = io.StringIO()
    handlers = [logging.StreamHandler(out), logging.StreamHandler(out)]
    handlers[0].setFormatter(TextFormatter("%(levelname)s %(name)s: %(message)s"))
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


def _signed(payload: dict[str, Any]) -> tuple[bytes, dict[str, str]]:
    body = json.dumps(payload).encode()
    req = sign_request("standard_webhooks", secret=SECRET, body=body, delivery_id="msg_" + uuid.uuid4().hex)
    return req.body, dict(req.headers)


async def test_an_smtp_password_with_a_slash_is_never_stored_logged_or_shown(
    db_url: str, monkeypatch: pytest.MonkeyPatch, fake: FakeMessagesAPI, captured: io.StringIO
) -> None:
    monkeypatch.setenv("HL_SW_SECRET", SECRET)
    monkeypatch.setenv("HL_SMTP_URL", f"smtp://AKIAEXAMPLE:{PASSWORD}@email-smtp.us-east-1.amazonaws.com:587")
    action = {"type": "email", "smtp_url_env": "HL_SMTP_URL", "from": "ops@example.com", "to": "a@example.com",
              "subject": "s", "body": "b"}  # fmt: skip
    pipeline = {"source": "sw", "events": ["*"], "instructions": "x", "output_schema": OUT, "actions": [action]}
    config = config_from({"sources": {"sw": {"provider": "standard_webhooks", "secrets_env": ["HL_SW_SECRET"]}},
                          "pipelines": {"p": pipeline}})  # fmt: skip
    settings = make_settings(db_url, anthropic_api_key="sk-ant-x", anthropic_base_url=fake.base_url, admin_token=TOKEN)
    fake.enqueue(reply({"s": "ok"}))
    body, headers = _signed({"type": "t"})
    async with web_server(settings, config) as base, worker_task(settings, config), httpx.AsyncClient() as c:
        r = await c.post(f"{base}/webhooks/sw", content=body, headers=headers)
        eid = r.json()["event_id"]
        ev = await wait_for_status(db_url, eid)
        api = (await c.get(f"{base}/admin/api/events/{eid}", headers=AUTH)).text
    assert ev["status"] == "dead"
    ((error,),) = rows(db_url, "SELECT error FROM hookline.action_runs")
    assert error.startswith("email action ") and error.endswith(
        "HL_SMTP_URL is not a valid smtp://, smtp+starttls:// or smtps:// URL (smtp://[user:password@]host[:port]); "
        "percent-encode reserved characters in the user and password"
    )
    stored = json.dumps(
        [
            rows(db_url, "SELECT last_error, detail FROM hookline.events"),
            rows(db_url, "SELECT * FROM hookline.dead_letters"),
        ],
        default=str,
    )
    assert "HL_SMTP_URL is not a valid" in stored
    for where, text in (("stored", stored), ("admin API", api), ("logs", captured.getvalue())):
        assert "PwLEAK" not in text and "d+tail" not in text, f"part of the SMTP password is in the {where}"


CARD = "4111111111111111"
#: one schema, one violation per keyword; the payload's values are all marked so a leak is found
SCHEMA: dict[str, Any] = {
    "type": "object",
    "properties": {
        "card": {"type": "string", "pattern": "^tok_"},
        "amount": {"type": "integer"},
        "items": {"type": "array", "maxItems": 1},
        "plan": {"enum": ["free", "pro"]},
        "note": {"maxLength": 3},
        "code": {"anyOf": [{"type": "integer"}, {"type": "boolean"}]},
    },
    "additionalProperties": False,
}
CASES: list[tuple[dict[str, Any], str]] = [
    ({"card": CARD}, "card: does not match pattern '^tok_'"),
    ({"amount": "SECRET-amount"}, "amount: is not of type 'integer'"),
    ({"items": ["SECRET-1", "SECRET-2"]}, "items: has more items than the maxItems of 1"),
    ({"plan": "SECRET-plan"}, "plan: is not one of ['free', 'pro']"),
    ({"note": "SECRET-note"}, "note: is longer than the maxLength of 3"),
    ({"code": "SECRET-code"}, "code: is not valid under any of the anyOf schemas"),
    ({"extra": "SECRET-extra"}, "(root): has 1 property the schema does not allow"),
]


async def test_a_schema_violation_names_path_and_constraint_never_the_value(
    db_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The 422 (on_invalid = "reject") and the stored detail (on_invalid = "store") say the same thing;
    neither carries the payload's value, a ``redact`` field's included, for any keyword."""
    monkeypatch.setenv("HL_SW_SECRET", SECRET)
    source: dict[str, Any] = {"provider": "standard_webhooks", "secrets_env": ["HL_SW_SECRET"], "redact": ["card"]}
    schema = {**SCHEMA, "properties": {**SCHEMA["properties"], "type": {"type": "string"}}}
    rejecting = config_from({"sources": {"sw": {**source, "schemas": {"*": schema}}}})
    storing = config_from({"sources": {"sw": {**source, "schemas": {"*": schema}, "on_invalid": "store"}}})
    settings = make_settings(db_url, admin_token=TOKEN)
    async with web_server(settings, rejecting) as base, httpx.AsyncClient() as client:
        answers = [
            (await client.post(f"{base}/webhooks/sw", content=b, headers=h))
            for b, h in (_signed({"type": "payment", **payload}) for payload, _ in CASES)
        ]
    assert [a.status_code for a in answers] == [422] * len(CASES)
    assert [a.json() for a in answers] == [
        {"error": "invalid_payload", "detail": f"payload does not match the schema for this event type: {expected}"}
        for _, expected in CASES
    ]
    async with web_server(settings, storing) as base, httpx.AsyncClient() as client:
        ids = []
        for payload, _ in CASES:
            body, headers = _signed({"type": "payment", **payload})
            r = await client.post(f"{base}/webhooks/sw", content=body, headers=headers)
            assert r.status_code == 200, r.text
            ids.append(r.json()["event_id"])
        api = [(await client.get(f"{base}/admin/api/events/{i}", headers=AUTH)).json()["event"] for i in ids]
        listing = (await client.get(f"{base}/admin/api/events", headers=AUTH)).text
        page = await client.get(f"{base}/admin/login")
        csrf = re.search(r'name="csrf_token" value="([^"]+)"', page.text)
        assert csrf is not None
        await client.post(
            f"{base}/admin/login",
            content=f"csrf_token={csrf.group(1)}&token={TOKEN}",
            headers={"content-type": "application/x-www-form-urlencoded"},
        )
        html = (await client.get(f"{base}/admin/events/{ids[0]}")).text
    assert [e["detail"] for e in api] == [f"payload does not match the schema: {expected}" for _, expected in CASES]
    assert api[0]["payload"]["card"] == "[redacted]"
    for where, text in (("admin API", json.dumps(api)), ("event list", listing), ("dashboard", html)):
        assert CARD not in text, f"the redacted card number is shown by the {where}"
    stored = rows(db_url, "SELECT detail FROM hookline.events ORDER BY id")
    assert not [d for (d,) in stored if CARD in d or "SECRET" in d], "a payload value is in a stored detail"
