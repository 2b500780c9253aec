"""Fuzz ``/webhooks/{source}`` over real HTTP: random methods, headers (duplicates included),
content types, encodings, sizes and nesting, half of them correctly signed. Never a 5xx; a row is
stored exactly when the answer is 200 accepted."""

from __future__ import annotations

import asyncio
import json
import threading
import uuid
from collections.abc import Iterator
from typing import Any

import httpx
import psycopg
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from app.signatures import sign_request
from tests.fuzz import EXAMPLES
from tests.harness import config_from, make_settings, web_server

SECRET = "whsec_" + "aHR0cC1mdXp6LXNlY3JldC0wMTIzNDU2Nzg5YWI="
RAN = {"cases": 0, "signed": 0, "accepted": 0}


@pytest.fixture
def server(db_url: str, monkeypatch: pytest.MonkeyPatch) -> Iterator[str]:
    """The real app under uvicorn in a thread (hypothesis drives it synchronously)."""
    monkeypatch.setenv("HL_FUZZ_SECRET", SECRET)
    config = config_from(
        {
            "sources": {
                "sw": {"provider": "standard_webhooks", "secrets_env": ["HL_FUZZ_SECRET"], "max_body_bytes": 20000},
                "strict": {
                    "provider": "standard_webhooks",
                    "secrets_env": ["HL_FUZZ_SECRET"],
                    "schemas": {"*": {"type": "object", "required": ["type"]}},
                },
            }
        }
    )
    started, stop = threading.Event(), threading.Event()
    box: dict[str, str] = {}

    async def serve() -> None:
        async with web_server(make_settings(db_url), config) as base:
            box["base"] = base
            started.set()
            await asyncio.to_thread(stop.wait)

    thread = threading.Thread(target=asyncio.run, args=(serve(),), daemon=True)
    thread.start()
    assert started.wait(30)
    yield box["base"]
    stop.set()
    thread.join(30)


json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=30),
    lambda c: st.lists(c, max_size=4) | st.dictionaries(st.text(max_size=10), c, max_size=4),
    max_leaves=30,
)
header_names = st.sampled_from(
    ["content-type", "content-encoding", "webhook-id", "webhook-timestamp", "webhook-signature", "svix-id",
     "x-request-id", "x-forwarded-for", "transfer-encoding-x", "user-agent", "x-junk"]
)  # fmt: skip
header_values = st.text(st.characters(min_codepoint=0x21, max_codepoint=0x7E), max_size=60)


def _body(kind: str, payload: Any, raw: bytes, depth: int) -> bytes:
    if kind == "json":
        return json.dumps({"type": "fuzz", "data": payload}).encode()
    if kind == "deep":
        return b'{"type": "d", "x": ' + b"[" * depth + b"]" * depth + b"}"
    if kind == "form":
        return b"payload=" + json.dumps({"type": "f", "data": payload}).encode().replace(b"&", b"%26")
    if kind == "utf16":
        return json.dumps({"type": "u", "data": payload}).encode("utf-16")
    if kind == "big":
        return json.dumps({"type": "big", "pad": "x" * 30000}).encode()
    return raw


@given(
    method=st.sampled_from(["POST", "POST", "POST", "GET", "HEAD", "PUT", "DELETE", "OPTIONS", "PATCH"]),
    source=st.sampled_from(["sw", "sw", "strict", "nope"]),
    kind=st.sampled_from(["json", "json", "json", "json", "deep", "form", "utf16", "big", "raw"]),
    payload=json_values,
    raw=st.binary(max_size=200),
    depth=st.integers(1, 3000),
    sign_it=st.sampled_from([True, True, False]),
    extra=st.lists(st.tuples(header_names, header_values), max_size=3),
    content_type=st.sampled_from(
        ["application/json", "application/x-www-form-urlencoded", "text/plain", "", "application/json; charset=utf-16"]
    ),
)
@settings(max_examples=EXAMPLES or 120, deadline=None, suppress_health_check=list(HealthCheck), database=None)
def _property(
    base: str,
    client: httpx.Client,
    conn: psycopg.Connection,
    method: str,
    source: str,
    kind: str,
    payload: Any,
    raw: bytes,
    depth: int,
    sign_it: bool,
    extra: list[tuple[str, str]],
    content_type: str,
) -> None:
    RAN["cases"] += 1
    body = _body(kind, payload, raw, depth)
    headers: list[tuple[str, str]] = []
    if sign_it:
        RAN["signed"] += 1
        signed = sign_request("standard_webhooks", secret=SECRET, body=body, delivery_id="f_" + uuid.uuid4().hex)
        headers = [(k, v) for k, v in signed.headers.items() if k.lower() != "content-type"]
    if content_type:
        headers.append(("content-type", content_type))
    headers.extend(extra)
    before = conn.execute("SELECT count(*) FROM hookline.events").fetchone()
    resp = client.request(method, f"{base}/webhooks/{source}", content=body, headers=headers)
    after = conn.execute("SELECT count(*) FROM hookline.events").fetchone()
    assert resp.status_code < 500, (resp.status_code, resp.text[:300])
    stored = after != before
    if resp.status_code == 200 and method == "POST":
        RAN["accepted"] += 1
        assert resp.json()["status"] in ("accepted", "duplicate")
        assert stored == (resp.json()["status"] == "accepted")
    else:
        assert not stored, (method, resp.status_code)


def test_fuzz_ingest_over_http(server: str, db_url: str, record_property: Any) -> None:
    with httpx.Client(timeout=30) as client, psycopg.connect(db_url, autocommit=True) as conn:
        _property(server, client, conn)
    record_property("http_fuzz_cases", RAN["cases"])
    print(f"\nHTTP fuzz: {RAN['cases']} cases, {RAN['signed']} signed, {RAN['accepted']} accepted")
    assert RAN["cases"] > 0 and RAN["accepted"] > 0
