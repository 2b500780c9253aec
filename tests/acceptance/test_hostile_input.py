"""Correctly signed but hostile requests against the real server: a clear 4xx, never a 5xx, and
nothing stored unless the answer is 2xx (issue 12, findings 1, 3, 5 and 6, and the limits)."""

from __future__ import annotations

import asyncio
import gzip
import io
import json
import logging
import uuid
import zlib
from collections.abc import Iterator
from typing import Any
from urllib.parse import urlencode

import httpx
import pytest

from app.core.logs import TextFormatter
from app.signatures import sign_request
from tests.harness import config_from, make_settings, rows, web_server

SECRET = "whsec_" + "aG9zdGlsZS1pbnB1dC10ZXN0LXNlY3JldC0xMjM0NQ=="


@pytest.fixture
def env(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HL_SW_SECRET", SECRET)


def _config(**source: Any) -> Any:
    base = {"provider": "standard_webhooks", "secrets_env": ["HL_SW_SECRET"]}
    return config_from({"sources": {"sw": {**base, **source}}})


def signed(
    payload: Any = None, *, raw: bytes | None = None, content_type: str | None = None
) -> tuple[bytes, dict[str, str]]:
    body = raw if raw is not None else json.dumps(payload).encode()
    req = sign_request("standard_webhooks", secret=SECRET, body=body, delivery_id="msg_" + uuid.uuid4().hex)
    headers = dict(req.headers)
    if content_type:
        headers["Content-Type"] = content_type
    return req.body, headers


def deep(levels: int) -> str:
    return "[" * levels + "]" * levels


def _count(db_url: str) -> int:
    return int(rows(db_url, "SELECT count(*) FROM hookline.events")[0][0])


@pytest.fixture
def text_log() -> Iterator[io.StringIO]:
    """Every record of this test formatted as `hookline web` writes text logs."""
    out = io.StringIO()
    handler = logging.StreamHandler(out)
    handler.setFormatter(TextFormatter("%(levelname)s %(name)s: %(message)s"))
    root = logging.getLogger()
    root.addHandler(handler)
    old = root.level
    root.setLevel(logging.INFO)
    yield out
    root.removeHandler(handler)
    root.setLevel(old)


# --- finding 1: content that used to give 500 ------------------------------------------------------------


def _hostile_bodies() -> list[tuple[str, bytes, str | None]]:
    long = "x" * 3500
    return [
        ("long event type", json.dumps({"type": long}).encode(), None),
        ("long event type, multibyte", json.dumps({"type": "é" * 3000}).encode(), None),
        ("deep JSON", f'{{"type": "a", "d": {deep(5000)}}}'.encode(), None),
        ("JSON just over the depth limit", f'{{"type": "a", "d": {deep(128)}}}'.encode(), None),
        ("deep JSON in a form payload field", urlencode({"payload": '{"a": ' + deep(5000) + "}"}).encode(), "form"),
        (
            "deep JSON array in a form payload field",
            urlencode({"payload": "{" + '"a":' + deep(150) + "}"}).encode(),
            "form",
        ),
        ("NaN in a form payload field", urlencode({"payload": '{"a": NaN}'}).encode(), "form"),
        ("NUL in JSON", b'{"type": "a", "t": "\\u0000"}', None),
        ("lone surrogate", b'{"type": "a", "t": "\\ud800"}', None),
        ("huge integer", b'{"type": "a", "n": ' + b"9" * 5000 + b"}", None),
        ("huge float", b'{"type": "a", "n": 1e999}', None),
        ("not UTF-8", b'{"type": "\xff\xfe"}', None),
        ("form not UTF-8", b"a=\xff", "form"),
        ("empty", b"", None),
    ]


@pytest.mark.parametrize(("what", "body", "ctype"), _hostile_bodies(), ids=[b[0] for b in _hostile_bodies()])
async def test_signed_hostile_content_never_gets_a_5xx(
    what: str, body: bytes, ctype: str | None, db_url: str, env: None
) -> None:
    content_type = "application/x-www-form-urlencoded" if ctype == "form" else None
    raw, headers = signed(raw=body, content_type=content_type)
    async with web_server(make_settings(db_url), _config()) as base, httpx.AsyncClient() as client:
        resp = await client.post(f"{base}/webhooks/sw", content=raw, headers=headers)
    assert resp.status_code < 500, (what, resp.status_code, resp.text)
    if resp.status_code == 200:
        return  # stored, so whatever was stored must be readable back
    assert resp.status_code == 400, (what, resp.text)
    assert resp.json()["detail"]
    assert _count(db_url) == 0


async def test_a_number_beyond_postgres_numeric_range_is_a_400_that_says_so(db_url: str, env: None) -> None:
    """``1e1000000`` is JSON, but past the range of Postgres's numeric type (jsonb numbers): the 400 says
    it is a number, not the NUL-or-surrogate example of other values Postgres refuses; nothing is stored."""
    async with web_server(make_settings(db_url), _config()) as base, httpx.AsyncClient() as client:
        for number in (b"1e1000000", b"-1e200000"):
            raw, headers = signed(raw=b'{"type": "a", "n": ' + number + b"}")
            resp = await client.post(f"{base}/webhooks/sw", content=raw, headers=headers)
            assert resp.status_code == 400, resp.text
            assert resp.json() == {
                "error": "bad_request",
                "detail": "body has a number Postgres cannot store (beyond the range of its numeric type)",
            }
    assert _count(db_url) == 0


_COMPRESSED = [
    ("gzip", gzip.compress(b'{"type": "a"}'), None),
    ("deflate", zlib.compress(b'{"type": "a"}'), None),
    ("br", b"\x8b\x05\x80" + b'{"type": "a"}' + b"\x03", None),  # not JSON, whatever its coding
    ("gzip", gzip.compress(b"a=1"), "form"),
]


@pytest.mark.parametrize(
    ("coding", "body", "ctype"), _COMPRESSED, ids=[f"{c[0]}-{c[2] or 'json'}" for c in _COMPRESSED]
)
async def test_a_compressed_body_is_a_400_that_says_so(
    coding: str, body: bytes, ctype: str | None, db_url: str, env: None
) -> None:
    """hookline reads a body as sent and decodes no Content-Encoding (so no decompression bomb can reach
    it): a compressed body that does not parse is a 400 naming the coding, not a JSON or UTF-8 error at
    byte 1; nothing is stored. The same signed bytes without the header are the same 400 as before."""
    content_type = "application/x-www-form-urlencoded" if ctype == "form" else "application/json"
    raw, headers = signed(raw=body, content_type=content_type)
    async with web_server(make_settings(db_url), _config()) as base, httpx.AsyncClient() as client:
        resp = await client.post(f"{base}/webhooks/sw", content=raw, headers={**headers, "Content-Encoding": coding})
    assert resp.status_code == 400, resp.text
    assert resp.json()["error"] == "bad_request"
    assert f"Content-Encoding {coding}, which hookline does not decode" in resp.json()["detail"]
    assert _count(db_url) == 0


async def test_a_body_labelled_with_a_coding_that_parses_is_stored_as_sent(db_url: str, env: None) -> None:
    """Some senders label a plain body (``Content-Encoding: utf-8``): what parses is stored, as before."""
    raw, headers = signed({"type": "a"})
    async with web_server(make_settings(db_url), _config()) as base, httpx.AsyncClient() as client:
        resp = await client.post(f"{base}/webhooks/sw", content=raw, headers={**headers, "Content-Encoding": "utf-8"})
    assert resp.status_code == 200 and resp.json()["status"] == "accepted", resp.text
    assert _count(db_url) == 1


_LONG_SURROGATE_IDS = [
    ("escaped", b'{"type": "a", "id": "\\ud800' + b"a" * 600 + b'"}', None),
    ("CESU-8 bytes", b'{"type": "a", "id": "\xed\xa0\x80' + b"a" * 600 + b'"}', None),
    ("form payload field", urlencode({"payload": '{"type": "a", "id": "\\ud800' + "a" * 600 + '"}'}).encode(), "form"),
]


@pytest.mark.parametrize(("what", "body", "ctype"), _LONG_SURROGATE_IDS, ids=[b[0] for b in _LONG_SURROGATE_IDS])
async def test_a_long_delivery_id_with_a_lone_surrogate_is_a_400(
    what: str, body: bytes, ctype: str | None, db_url: str, env: None
) -> None:
    """A delivery id over 512 bytes is hashed; one holding an unpaired surrogate is refused as the short
    one is (Postgres cannot store the payload holding it), not a 500 from hashing it."""
    content_type = "application/x-www-form-urlencoded" if ctype == "form" else None
    raw, headers = signed(raw=body, content_type=content_type)
    async with web_server(make_settings(db_url), _config(delivery_id="json:id")) as base, httpx.AsyncClient() as client:
        resp = await client.post(f"{base}/webhooks/sw", content=raw, headers=headers)
    assert resp.status_code == 400, (what, resp.status_code, resp.text)
    assert resp.json()["error"] == "bad_request" and "cannot store" in resp.json()["detail"]
    assert _count(db_url) == 0


_SURROGATE_CHALLENGES = [
    ("twitch_eventsub", b'{"challenge": "\\ud800", "subscription": {"type": "x"}}', "challenge"),
    (
        "zoom",
        b'{"event": "endpoint.url_validation", "payload": {"plainToken": "\\ud800"}, "event_ts": 1}',
        "plainToken",
    ),
    ("slack", b'{"type": "url_verification", "challenge": "\\ud800"}', "challenge"),
]


@pytest.mark.parametrize(("provider", "body", "name"), _SURROGATE_CHALLENGES, ids=[c[0] for c in _SURROGATE_CHALLENGES])
async def test_a_handshake_challenge_that_is_not_text_is_a_400(
    provider: str, body: bytes, name: str, db_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A signed handshake whose challenge holds an unpaired surrogate has no UTF-8 form to echo: a 400
    naming the field, not a 500 (and, being a handshake, it is not stored either)."""
    monkeypatch.setenv("HL_HANDSHAKE", "handshake-secret-0123456789")
    config = config_from({"sources": {"h": {"provider": provider, "secrets_env": ["HL_HANDSHAKE"]}}})
    req = sign_request(provider, secret="handshake-secret-0123456789", body=body, delivery_id="m1")
    async with web_server(make_settings(db_url), config) as base, httpx.AsyncClient() as client:
        resp = await client.post(
            f"{base}/webhooks/h", content=req.body, headers={**req.headers, "Content-Type": "application/json"}
        )
    assert resp.status_code == 400, resp.text
    assert resp.json() == {
        "error": "bad_request",
        "detail": f"the handshake's {name} is not text (an unpaired surrogate)",
    }
    assert _count(db_url) == 0


async def test_every_indexed_value_is_bounded_and_distinct_values_stay_distinct(db_url: str, env: None) -> None:
    """Event type, tenant, ordering key and delivery id all feed indexes (and the job lock)."""
    config = _config(tenant="json:t", ordering_key="json:k")
    async with web_server(make_settings(db_url), config) as base, httpx.AsyncClient() as client:
        ids = []
        for suffix in ("a", "b"):
            payload = {"type": "x" * 4000 + suffix, "t": "ü" * 3000 + suffix, "k": "k" * 9000 + suffix}
            raw, headers = signed(payload)
            headers["webhook-id"] = "m" * 5000 + suffix  # re-signed below with this id
            req = sign_request("standard_webhooks", secret=SECRET, body=raw, delivery_id=headers["webhook-id"])
            resp = await client.post(f"{base}/webhooks/sw", content=raw, headers=req.headers)
            assert resp.status_code == 200, resp.text
            ids.append(resp.json()["event_id"])
    stored = rows(
        db_url,
        "SELECT event_type, tenant, ordering_key, delivery_id FROM hookline.events ORDER BY id",
    )
    assert len(stored) == 2 and stored[0] != stored[1]
    for row in stored:
        for value in row:
            assert len(value.encode()) <= 512
    assert stored[0][0].startswith("x" * 100) and "sha256:" in stored[0][0]


async def test_a_delivery_id_that_is_not_an_exact_number_is_refused(db_url: str, env: None) -> None:
    """Distinct JSON numbers can parse to one float (``1e400`` and ``2e500`` are both inf), so a float id
    would make a new delivery a "duplicate" of another: a 2xx for an event never stored. Such an id is a
    400 saying so; integer ids, however long, stay exact and distinct."""
    floats = [b"1e400", b"2e500", b"9007199254740993.0", b"9007199254740992.0", b"1.5"]
    integers = [b"9007199254740993", b"9007199254740992", b"1" + b"0" * 400, b"2" + b"0" * 400]
    async with web_server(make_settings(db_url), _config(delivery_id="json:id")) as base, httpx.AsyncClient() as client:
        for number in floats:
            raw, headers = signed(raw=b'{"type": "a", "id": ' + number + b"}")
            resp = await client.post(f"{base}/webhooks/sw", content=raw, headers=headers)
            assert resp.status_code == 400, (number, resp.text)
            assert resp.json()["error"] == "bad_request" and "(json:id)" in resp.json()["detail"]
            assert "not an exact value" in resp.json()["detail"]
        assert _count(db_url) == 0
        for number in integers:
            raw, headers = signed(raw=b'{"type": "a", "id": ' + number + b"}")
            resp = await client.post(f"{base}/webhooks/sw", content=raw, headers=headers)
            assert resp.status_code == 200 and resp.json()["status"] == "accepted", (number, resp.text)
    assert _count(db_url) == len(integers)


# --- finding 3: only POST (and GET handshakes) reach ingest ------------------------------------------------


@pytest.mark.parametrize("method", ["GET", "HEAD", "PUT", "PATCH", "DELETE", "OPTIONS", "TRACE", "PROPFIND"])
async def test_only_post_stores(method: str, db_url: str, env: None) -> None:
    """Every other method is a 405 with ``Allow`` (RFC 9110 requires one): the route's methods, as the
    OpenAPI description lists them, whichever method asked; the detail says this source takes POST only."""
    raw, headers = signed({"type": "a"})
    async with web_server(make_settings(db_url), _config()) as base, httpx.AsyncClient() as client:
        resp = await client.request(method, f"{base}/webhooks/sw", content=raw, headers=headers)
        assert resp.status_code == 405, resp.text
        assert resp.headers.get("allow") == "GET, POST", resp.headers
        if method != "HEAD":
            assert resp.json() == {"error": "method_not_allowed", "detail": "this source accepts POST only"}
        ok = await client.post(f"{base}/webhooks/sw", content=raw, headers=headers)
    assert ok.status_code == 200  # the same signed request is fine as a POST, and stored once
    assert _count(db_url) == 1


async def test_a_source_with_a_get_handshake_allows_get_and_post(db_url: str, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HL_META", "meta-app-secret")
    config = config_from({"sources": {"wa": {"provider": "meta_whatsapp", "secrets_env": ["HL_META"]}}})
    async with web_server(make_settings(db_url), config) as base, httpx.AsyncClient() as client:
        for method in ("HEAD", "PUT", "OPTIONS"):
            resp = await client.request(method, f"{base}/webhooks/wa")
            assert (resp.status_code, resp.headers.get("allow")) == (405, "GET, POST"), (method, resp.headers)
    assert _count(db_url) == 0


# --- finding 5: log injection, and no traceback for a client that goes away ----------------------------------


async def test_caller_values_cannot_forge_log_fields(db_url: str, env: None, text_log: io.StringIO) -> None:
    forged = "abc reason=ok source=admin remote_addr=10.0.0.1"
    async with web_server(make_settings(db_url), _config()) as base, httpx.AsyncClient() as client:
        raw, headers = signed({"type": "a"})
        headers["webhook-signature"] = "v1,AAAA"
        resp = await client.post(f"{base}/webhooks/sw", content=raw, headers={**headers, "X-Request-Id": forged})
        assert resp.status_code == 401
        resp = await client.post(
            f"{base}/webhooks/sw", content=raw, headers={**headers, "X-Request-Id": "ok-id\tINFO forged: line"}
        )
        assert resp.status_code == 401
    lines = [line for line in text_log.getvalue().splitlines() if "signature rejected" in line]
    assert len(lines) == 2
    for line in lines:
        assert "reason=ok" not in line and "source=admin" not in line and "remote_addr=10.0.0.1" not in line
        assert "reason=bad_signature" in line and "source=sw" in line
    assert "forged: line" not in text_log.getvalue()


def test_text_log_fields_are_quoted_and_one_line() -> None:
    fmt = TextFormatter("%(levelname)s %(message)s")
    rec = logging.makeLogRecord(
        {"msg": "got %s", "args": ("a\nb\r\x1b[31m",), "levelname": "WARNING", "source": 'x" reason=ok\nz'}
    )
    line = fmt.format(rec)
    assert "\n" not in line and "\x1b" not in line
    assert line.endswith('source="x\\" reason=ok\\nz"')


async def test_client_disconnect_mid_body_leaves_no_traceback(db_url: str, env: None, text_log: io.StringIO) -> None:
    raw, headers = signed({"type": "a", "pad": "p" * 1000})
    async with web_server(make_settings(db_url), _config()) as base:
        port = int(base.rsplit(":", 1)[1])
        for _ in range(5):
            _reader, writer = await asyncio.open_connection("127.0.0.1", port)
            head = "".join(f"{k}: {v}\r\n" for k, v in headers.items())
            writer.write(f"POST /webhooks/sw HTTP/1.1\r\nHost: x\r\nContent-Length: {len(raw)}\r\n{head}\r\n".encode())
            writer.write(raw[:100])
            await writer.drain()
            await asyncio.sleep(0.1)
            writer.close()
        await asyncio.sleep(0.3)
    assert "Traceback" not in text_log.getvalue()
    assert "ERROR" not in text_log.getvalue()
    assert _count(db_url) == 0


# --- finding 6 (storage part): stored headers -----------------------------------------------------------------


async def test_stored_headers_are_limited_and_capped(db_url: str, env: None) -> None:
    raw, headers = signed({"type": "a"})
    extra = {f"X-Junk-{i}": "j" * 100 for i in range(60)}
    extra["User-Agent"] = "u" * 5000
    extra["Authorization"] = "Bearer hunter2"
    async with web_server(make_settings(db_url), _config()) as base, httpx.AsyncClient() as client:
        resp = await client.post(f"{base}/webhooks/sw", content=raw, headers={**headers, **extra})
    assert resp.status_code == 200, resp.text
    (stored,) = rows(db_url, "SELECT headers FROM hookline.events")[0]
    assert set(stored) == {"webhook-id", "webhook-timestamp", "content-type", "user-agent"}
    assert len(stored["user-agent"].encode()) <= 1024 + len("…[cut]".encode())
    assert "hunter2" not in json.dumps(stored) and headers["webhook-signature"] not in json.dumps(stored)


# --- per-source IP allowlists and trusted proxies ----------------------------------------------------------------


async def test_ip_allowlist_and_forwarded_for_only_from_trusted_proxies(db_url: str, env: None) -> None:
    config = _config(allowed_ips=["203.0.113.0/24"])
    untrusted = make_settings(db_url)
    trusted = make_settings(db_url, trusted_proxies="127.0.0.1/32, 10.0.0.0/8")
    spoof = {"X-Forwarded-For": "203.0.113.9"}
    async with web_server(untrusted, config) as base, httpx.AsyncClient() as client:
        raw, headers = signed({"type": "a"})
        resp = await client.post(f"{base}/webhooks/sw", content=raw, headers={**headers, **spoof})
        assert resp.status_code == 403, resp.text  # a client cannot claim an address
    async with web_server(trusted, config) as base, httpx.AsyncClient() as client:
        raw, headers = signed({"type": "a"})
        resp = await client.post(f"{base}/webhooks/sw", content=raw, headers={**headers, **spoof})
        assert resp.status_code == 200, resp.text  # the trusted router (127.0.0.1) vouches for it
        # the client prepends a fake hop; the proxies append what they saw: the right-most untrusted hop wins
        raw, headers = signed({"type": "a"})
        chain = {"X-Forwarded-For": "203.0.113.9, 198.51.100.7, 10.1.2.3"}
        resp = await client.post(f"{base}/webhooks/sw", content=raw, headers={**headers, **chain})
        assert resp.status_code == 403, resp.text
    assert rows(db_url, "SELECT remote_addr FROM hookline.events") == [("203.0.113.9",)]


# --- payload validation per source and event type ------------------------------------------------------------------

LEAD = {"type": "object", "required": ["name", "email"], "properties": {"email": {"type": "string"}}}


async def test_payload_schema_rejects_with_422_and_stores_nothing(db_url: str, env: None) -> None:
    config = _config(schemas={"lead.created": LEAD})
    async with web_server(make_settings(db_url), config) as base, httpx.AsyncClient() as client:
        raw, headers = signed({"type": "lead.created", "name": "Ada"})
        bad = await client.post(f"{base}/webhooks/sw", content=raw, headers=headers)
        raw, headers = signed({"type": "lead.created", "name": "Ada", "email": "ada@example.com"})
        good = await client.post(f"{base}/webhooks/sw", content=raw, headers=headers)
        raw, headers = signed({"type": "other.thing"})
        other = await client.post(f"{base}/webhooks/sw", content=raw, headers=headers)
    assert bad.status_code == 422 and bad.json()["error"] == "invalid_payload"
    assert "'email' is a required property" in bad.json()["detail"]
    assert good.status_code == 200 and other.status_code == 200
    assert _count(db_url) == 2


async def test_a_known_delivery_id_does_not_skip_the_schema(db_url: str, env: None) -> None:
    """A re-send this web process saw committed is answered before its row is built, but only after its
    signature and payload checks: the same delivery id with a body that breaks the schema is a 422."""
    config = _config(schemas={"lead.created": LEAD})
    good = {"type": "lead.created", "name": "Ada", "email": "ada@example.com"}
    answers = []
    async with web_server(make_settings(db_url), config) as base, httpx.AsyncClient() as client:
        for payload in (good, {"type": "lead.created"}, good):
            body = json.dumps(payload).encode()
            req = sign_request("standard_webhooks", secret=SECRET, body=body, delivery_id="msg_known")
            answers.append(await client.post(f"{base}/webhooks/sw", content=req.body, headers=dict(req.headers)))
    first, bad, again = answers
    assert first.json()["status"] == "accepted"
    assert bad.status_code == 422 and bad.json()["error"] == "invalid_payload"
    assert again.json() == {"status": "duplicate", "event_id": first.json()["event_id"]}
    assert _count(db_url) == 1


async def test_payload_schema_with_on_invalid_store_keeps_it_as_skipped(db_url: str, env: None) -> None:
    config = _config(schemas={"*": LEAD}, on_invalid="store")
    async with web_server(make_settings(db_url), config) as base, httpx.AsyncClient() as client:
        raw, headers = signed({"type": "lead.created", "name": "Ada", "email": 7})
        resp = await client.post(f"{base}/webhooks/sw", content=raw, headers=headers)
        ids = rows(db_url, "SELECT last_value FROM hookline.events_id_seq")
        again = [await client.post(f"{base}/webhooks/sw", content=raw, headers=headers) for _ in range(3)]
    assert resp.status_code == 200 and resp.json()["status"] == "accepted"
    assert [(r.status_code, r.json()["status"], r.json()["event_id"]) for r in again] == [
        (200, "duplicate", resp.json()["event_id"])
    ] * 3
    # the re-sends wrote nothing: an insert that conflicts still takes the next id of the sequence
    assert rows(db_url, "SELECT last_value FROM hookline.events_id_seq") == ids
    ((status, detail, jobs),) = rows(
        db_url,
        "SELECT status, detail, (SELECT count(*) FROM procrastinate_jobs) FROM hookline.events",
    )
    assert status == "skipped" and jobs == 0
    assert detail == "payload does not match the schema: email: is not of type 'string'"


AMOUNT = {"type": "object", "properties": {"amount": {"type": "number", "multipleOf": 0.01}}}
_HUGE_AMOUNTS = [b"1e999", b"1" + b"0" * 400]


@pytest.mark.parametrize("number", _HUGE_AMOUNTS, ids=["1e999", "10**400"])
async def test_a_number_a_float_multiple_of_cannot_divide_is_a_violation(number: bytes, db_url: str, env: None) -> None:
    """jsonschema raises OverflowError for these under a float ``multipleOf``: a 422 naming the field
    (or, with on_invalid = "store", a skipped row with the reason), never a 500."""
    body = b'{"type": "a", "amount": ' + number + b"}"
    expected = "amount: number is too large to check against multipleOf 0.01"
    async with web_server(make_settings(db_url), _config(schemas={"*": AMOUNT})) as base, httpx.AsyncClient() as client:
        raw, headers = signed(raw=body)
        resp = await client.post(f"{base}/webhooks/sw", content=raw, headers=headers)
    assert resp.status_code == 422, resp.text
    assert resp.json()["error"] == "invalid_payload" and resp.json()["detail"].endswith(expected)
    assert _count(db_url) == 0
    config = _config(schemas={"*": AMOUNT}, on_invalid="store")
    async with web_server(make_settings(db_url), config) as base, httpx.AsyncClient() as client:
        raw, headers = signed(raw=body)
        resp = await client.post(f"{base}/webhooks/sw", content=raw, headers=headers)
    assert resp.status_code == 200 and resp.json()["status"] == "accepted", resp.text
    amount = "(payload->>'amount')::numeric = %s::numeric"  # stored as sent (the body's own JSON text)
    assert rows(db_url, f"SELECT status, detail, {amount} FROM hookline.events", number.decode()) == [
        ("skipped", f"payload does not match the schema: {expected}", True)
    ]


# --- finding 9: `hookline send twilio` with a JSON body posts to the URL it signed ---------------------------------


def test_send_twilio_json_posts_what_twilio_would(monkeypatch: pytest.MonkeyPatch, tmp_path: Any) -> None:
    import base64
    import hashlib
    import hmac
    import os
    from urllib.parse import parse_qs, urlsplit

    from app.cli.send import send
    from tests.harness import Receiver

    monkeypatch.setenv("HL_TWILIO_TOKEN", "twilio-auth-token")
    config = config_from({"sources": {"tw": {"provider": "twilio", "secrets_env": ["HL_TWILIO_TOKEN"]}}})
    file = tmp_path / "status.json"
    file.write_text(json.dumps({"MessageSid": "SM1", "MessageStatus": "delivered"}))
    receiver = Receiver()
    try:
        base = receiver.url.removesuffix("/hook")
        send(config, "tw", environ=os.environ, base_url=base, public_url=base, file=file)
    finally:
        receiver.close()
    (got,) = receiver.received
    url = base + got.path  # the URL Twilio's validator is given: the one that was called, query included
    query = parse_qs(urlsplit(url).query)
    assert query["bodySHA256"] == [hashlib.sha256(got.body).hexdigest()]
    expected = hmac.new(b"twilio-auth-token", url.encode(), hashlib.sha1).digest()
    assert base64.b64decode(got.headers["x-twilio-signature"]) == expected
