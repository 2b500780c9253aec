"""Signature-layer findings of issue 12, each tested as a class (no database, no network)."""

from __future__ import annotations

import base64
import contextlib
import hashlib
import hmac
import json
from typing import Any
from urllib.parse import parse_qs, urlsplit

import pytest

from app.signatures import PROVIDERS, Headers, SignatureError, extract_meta, generate_keypair, sign_request, verify
from app.signatures._time import parse_iso, parse_signed_iso
from app.signatures.meta import parse_timestamp

SW = "whsec_" + "aG9zdGlsZS1pbnB1dC10ZXN0LXNlY3JldC0xMjM0NQ=="
URL = "https://hooks.example.com/webhooks/x"
HMAC_OPTIONS = {"header": "X-Acme-Signature", "algorithm": "sha256", "encoding": "hex"}

# --- finding 1b: timestamps at the limits of the calendar --------------------------------------------------

EXTREMES = [
    "9999-12-31T23:59:59-01:00",
    "0001-01-01T00:00:00+01:00",
    "9999-12-31T23:59:59.999999-23:59",
    "0001-01-01T00:00:00+23:59",
    "9999-12-31",
    "0001-01-01",
    "99999999999999999999",
    "-62135596800",
    "1e400",
    "253402300800",
]


@pytest.mark.parametrize("value", EXTREMES)
def test_calendar_limits_parse_to_none_or_a_time(value: str) -> None:
    parse_iso(value)  # never raises
    parse_timestamp(value)
    parse_timestamp(float("inf") if value == "1e400" else value)
    try:
        parse_signed_iso(value, "t")
    except SignatureError as e:
        assert e.code == "malformed_header"


def _timestamp_headers(provider: str, headers: dict[str, str]) -> list[str]:
    return [k for k in headers if "timestamp" in k.lower() or k.lower() in ("x-zm-request-timestamp",)]


@pytest.mark.parametrize("provider", sorted(PROVIDERS))
@pytest.mark.parametrize("value", [*EXTREMES[:4], "99999999999999999999"])
def test_verify_with_extreme_timestamps_raises_only_signature_error(provider: str, value: str) -> None:
    """Every header a scheme reads as a time, replaced by a calendar-limit value: a SignatureError
    (401), never OverflowError (500)."""
    private, public = generate_keypair(provider) if PROVIDERS[provider].public_key else ("s3cret-" * 4,) * 2
    if provider == "standard_webhooks":
        private = public = SW
    options = HMAC_OPTIONS if provider == "hmac" else None
    body = json.dumps({"id": "evt_1", "type": "a", "created_at": value, "timestamp": value}).encode()
    signed = sign_request(provider, secret=private, body=body, url=URL, options=options)
    headers = dict(signed.headers)
    for name in _timestamp_headers(provider, headers):
        headers[name] = value
    with contextlib.suppress(SignatureError):
        verify(provider, secrets=[public], headers=headers, body=signed.body, url=URL, options=options)
    meta = extract_meta(provider, headers=headers, payload=json.loads(signed.body) if signed.body[:1] == b"{" else {})
    assert meta.occurred_at is None or meta.occurred_at.year >= 1


# --- finding 2: the delivery id comes only from what was verified --------------------------------------------------


@pytest.mark.parametrize("provider", sorted(PROVIDERS))
def test_an_added_unsigned_id_header_never_changes_the_delivery_id(provider: str) -> None:
    spec = PROVIDERS[provider]
    private, public = generate_keypair(provider) if spec.public_key else ("s3cret-" * 4,) * 2
    if provider == "standard_webhooks":
        private = public = SW
    options = HMAC_OPTIONS if provider == "hmac" else None
    body = json.dumps({"id": "evt_1", "type": "a", "event_id": "e1", "event": {"id": "e1"}}).encode()
    signed = sign_request(provider, secret=private, body=body, url=URL, delivery_id="d_1", options=options)
    try:
        payload: Any = json.loads(signed.body)
    except ValueError:
        payload = {}
    before = extract_meta(provider, headers=signed.headers, payload=payload).delivery_id
    present = {k.lower() for k in signed.headers}
    id_headers = [loc.split(":", 1)[1] for loc in spec.delivery_id if loc.startswith("header:")]
    if provider == "standard_webhooks":  # the Svix-branded family: sign as svix-*, add webhook-id
        svix = {k.replace("webhook-", "svix-"): v for k, v in signed.headers.items()}
        verify(provider, secrets=[public], headers=svix, body=signed.body, url=URL)
        with pytest.raises(SignatureError):
            verify(provider, secrets=[public], headers={**svix, "webhook-id": "evil"}, body=signed.body, url=URL)
        verify(provider, secrets=[public], headers={**svix, "webhook-id": "d_1"}, body=signed.body, url=URL)
    for name in id_headers:
        if name.lower() in present:
            continue
        forged = {**signed.headers, name: "forged-id"}
        try:
            verify(provider, secrets=[public], headers=forged, body=signed.body, url=URL, options=options)
        except SignatureError:
            continue
        after = extract_meta(provider, headers=forged, payload=payload).delivery_id
        assert after == before, f"{provider}: adding {name} changed the delivery id"


# --- finding 8: non-ASCII webhook-id ----------------------------------------------------------------------------------


@pytest.mark.parametrize("delivery_id", ["msg_é", "msg_✓_日本", "msg_\U0001f600"])
def test_non_ascii_webhook_id_verifies_from_raw_header_bytes(delivery_id: str) -> None:
    signed = sign_request("standard_webhooks", secret=SW, body=b'{"type":"a"}', delivery_id=delivery_id)
    raw = [(k.encode(), v.encode("utf-8")) for k, v in signed.headers.items()]  # as the ASGI server hands them over
    verify("standard_webhooks", secrets=[SW], headers=Headers(raw), body=signed.body)
    assert extract_meta("standard_webhooks", headers=Headers(raw), payload={}).delivery_id == delivery_id


def test_header_bytes_that_are_not_utf8_still_parse() -> None:
    headers = Headers([(b"webhook-id", b"msg_\xff\xfe")])
    assert headers.get("webhook-id") == "msg_ÿþ"


# --- finding 9: a Twilio JSON delivery goes to the URL it was signed for ----------------------------------------------


def _twilio_sdk_validate(token: str, url: str, body: bytes, signature: str, algorithm: Any = hashlib.sha1) -> bool:
    """What twilio's RequestValidator.validate does for a JSON body (bodySHA256 in the URL)."""
    query = parse_qs(urlsplit(url).query)
    if "bodySHA256" not in query or query["bodySHA256"][0] != hashlib.sha256(body).hexdigest():
        return False
    expected = base64.b64encode(hmac.new(token.encode(), url.encode(), algorithm).digest()).decode()
    return hmac.compare_digest(expected, signature)


def test_twilio_json_signed_request_carries_the_signed_url() -> None:
    body = b'{"MessageSid": "SM1", "EventType": "delivered"}'
    signed = sign_request("twilio", secret="tok", body=body, url=URL)
    assert signed.url is not None and "bodySHA256=" in signed.url
    assert _twilio_sdk_validate("tok", signed.url, body, signed.headers["X-Twilio-Signature"])
    # and hookline itself accepts it at the URL it is posted to
    verify("twilio", secrets=["tok"], headers=signed.headers, body=body, url=signed.url)


# --- finding 10: Twilio HMAC-SHA256 (Webhooks Rules with a SharedKey) ----------------------------------------------


def _twilio_sha256(key: str, url: str, params: dict[str, str]) -> str:
    data = url + "".join(k + params[k] for k in sorted(params))
    return base64.b64encode(hmac.new(key.encode(), data.encode(), hashlib.sha256).digest()).decode()


def test_twilio_hmac_sha256_is_accepted_beside_sha1() -> None:
    params = {"MessageSid": "SM1", "MessageStatus": "delivered", "Body": "héllo"}
    body = "&".join(f"{k}={v}" for k, v in params.items()).encode()
    headers = {
        "X-Twilio-Signature": _twilio_sha256("shared-key", URL, params),
        "X-Twilio-Webhooks-Signature-Settings": "key=KS123,algorithm=HMAC_SHA256",
        "Content-Type": "application/x-www-form-urlencoded",
    }
    secrets = ["auth-token", "shared-key"]  # rotation list: the auth token and the Setting's SharedKey
    verify("twilio", secrets=secrets, headers=headers, body=body, url=URL)
    with pytest.raises(SignatureError) as e:  # the SHA-256 signature is not a SHA-1 one
        verify(
            "twilio",
            secrets=secrets,
            headers={**headers, "X-Twilio-Webhooks-Signature-Settings": "key=KS123,algorithm=HMAC_SHA1"},
            body=body,
            url=URL,
        )
    assert e.value.code == "bad_signature"
    with pytest.raises(SignatureError) as e:
        verify(
            "twilio",
            secrets=secrets,
            headers={**headers, "X-Twilio-Webhooks-Signature-Settings": "algorithm=HMAC_MD5"},
            body=body,
            url=URL,
        )
    assert e.value.code == "unsupported_version"
    with pytest.raises(SignatureError) as e:
        verify("twilio", secrets=["auth-token"], headers=headers, body=body, url=URL)
    assert e.value.code == "bad_signature"
    sha1 = sign_request("twilio", secret="auth-token", body=body, url=URL)
    verify("twilio", secrets=secrets, headers=sha1.headers, body=body, url=URL)  # SHA-1 still works
