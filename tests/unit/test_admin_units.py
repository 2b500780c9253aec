"""Pure parts of the admin surface: payload masking, session cookies, the chart, the OpenAPI document."""

from __future__ import annotations

import time
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from pydantic import SecretStr
from starlette.requests import Request

from app.core.config import parse_config
from app.core.redaction import MASK, redact
from app.core.settings import Settings
from app.web.admin.auth import SESSION_COOKIE, SESSION_SECONDS, Sessions, token_matches
from app.web.admin.chart import render
from app.web.openapi import document


def test_redact_masks_paths_through_objects_and_lists_and_leaves_the_input_alone() -> None:
    payload: dict[str, Any] = {
        "data": {"object": {"customer_email": "a@b.c", "n": 1}, "items": [{"card": "1"}, {"card": "2"}, "x"]},
        "top": "secret",
    }
    out = redact(payload, ["data.object.customer_email", "data.items.card", "top", "missing.path", "data.object.n.x"])
    assert out == {
        "data": {"object": {"customer_email": MASK, "n": 1}, "items": [{"card": MASK}, {"card": MASK}, "x"]},
        "top": MASK,
    }
    assert payload["data"]["object"]["customer_email"] == "a@b.c"
    assert redact(None, ["a"]) is None and redact([{"a": 1}], ["a"]) == [{"a": MASK}]


def test_redact_paths_are_checked_at_config_time() -> None:
    with pytest.raises(Exception, match="dotted payload path"):
        parse_config({"sources": {"s": {"provider": "github", "secrets_env": ["X"], "redact": ["a..b"]}}})


def _request(cookie: str = "", **headers: str) -> Request:
    raw = [(k.replace("_", "-").encode(), v.encode()) for k, v in headers.items()]
    if cookie:
        raw.append((b"cookie", f"{SESSION_COOKIE}={cookie}".encode()))
    return Request({"type": "http", "method": "GET", "path": "/admin", "headers": raw, "scheme": "http"})


def test_session_cookies_are_signed_bound_to_the_token_and_expire() -> None:
    settings = Settings(admin_token=SecretStr("t" * 32))
    sessions = Sessions("t" * 32, settings)
    cookie, session = sessions.issue()
    read = sessions.read(_request(cookie))
    assert read is not None and read.csrf == session.csrf and read.nonce == session.nonce
    assert Sessions("u" * 32, settings).read(_request(cookie)) is None, "another token's key must not accept it"
    old, _ = sessions.issue(now=time.time() - SESSION_SECONDS - 1)
    assert sessions.read(_request(old)) is None
    for bad in ("", "v1", cookie + "x", cookie.replace("v1.", "v2."), "v1.x.y.z", "v1.1.ñ.z"):
        assert sessions.read(_request(bad)) is None, bad
    _, other = sessions.issue()
    assert other.csrf != session.csrf


def test_token_comparison() -> None:
    assert token_matches("abc", "abc") and not token_matches("abd", "abc") and not token_matches("", "abc")
    assert not token_matches("\udcff", "abc")


def test_chart_draws_bars_and_the_latency_line() -> None:
    now = datetime(2026, 1, 1, 12, 30, tzinfo=UTC)
    rows = [
        {"minute": now - timedelta(minutes=2), "received": 4, "p50_seconds": 0.2, "p95_seconds": 0.4},
        {"minute": now, "received": 10, "p50_seconds": None, "p95_seconds": None},
        {"minute": now - timedelta(minutes=1), "received": 1, "p50_seconds": 1.0, "p95_seconds": 1.5},
    ]
    svg = render(rows, 60, now=now)
    assert svg.startswith("<svg") and svg.endswith("</svg>")
    assert svg.count('class="bar"') == 3 and "<polyline" in svg and "10 event(s)" in svg
    assert ">2.0 s<" in svg  # the latency axis rounds 1.5 s up to 2 s
    assert 'class="bar"' not in render([], 60, now=now)


CONFIG = parse_config(
    {
        "sources": {
            "stripe": {"provider": "stripe", "secrets_env": ["S"]},
            "meta": {"provider": "meta_whatsapp", "secrets_env": ["M"], "verify_token_env": "MV"},
        }
    }
)


def test_openapi_lists_admin_routes_only_when_admin_is_on() -> None:
    off = document(Settings(), CONFIG)
    assert not [p for p in off["paths"] if p.startswith("/admin")] and "securitySchemes" not in off["components"]
    on = document(Settings(admin_token=SecretStr("x" * 32)), CONFIG)
    refs: list[str] = []

    def walk(node: Any) -> None:
        if isinstance(node, dict):
            refs.extend(v for k, v in node.items() if k == "$ref")
            for v in node.values():
                walk(v)
        elif isinstance(node, list):
            for v in node:
                walk(v)

    webhooks = on["paths"]["/webhooks/{source}"]
    assert webhooks["post"]["parameters"][0]["schema"]["enum"] == ["meta", "stripe"]
    assert webhooks["get"]["parameters"][0]["schema"]["enum"] == ["meta"]
    no_get = document(Settings(), parse_config({"sources": {"s": {"provider": "stripe", "secrets_env": ["S"]}}}))
    assert no_get["paths"]["/webhooks/{source}"]["get"]["parameters"][0]["schema"] == {
        "type": "string",
        "not": {"enum": ["s"]},
    }
    walk(on)
    schemas = on["components"]["schemas"]
    assert refs and all(r.removeprefix("#/components/schemas/") in schemas for r in refs)
    for path, item in on["paths"].items():
        for method, op in item.items():
            assert op["responses"], (path, method)
            for name in (p["name"] for p in op.get("parameters", []) if p["in"] == "path"):
                assert "{" + name + "}" in path
