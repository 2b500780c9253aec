"""sign_request → verify round trips for every provider, the generic hmac options, and key helpers."""

from __future__ import annotations

import base64
import json
from typing import Any

import pytest

from app.signatures import (
    PROVIDERS,
    HmacOptions,
    SignatureError,
    extract_meta,
    generate_keypair,
    sign,
    sign_request,
    validate_secret,
    verify,
)
from tests.datafiles import SAMPLES

NOW = 1_715_678_467
URL = "https://hookline.example.com/webhooks/src"


def _secrets(provider: str) -> tuple[str, str]:
    if PROVIDERS[provider].public_key:
        return generate_keypair(provider)
    if provider == "standard_webhooks":
        return "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw", "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"
    return "rt-secret", "rt-secret"


def _sample(provider: str) -> bytes:
    spec = PROVIDERS[provider]
    return (SAMPLES / spec.sample).read_bytes() if spec.sample else b'{"id":"x1","type":"demo"}'


@pytest.mark.parametrize("provider", sorted(PROVIDERS))
def test_round_trip_with_sample(provider: str) -> None:
    private, public = _secrets(provider)
    opts = {"header": "X-Signature"} if provider == "hmac" else None
    req = sign_request(provider, secret=private, body=_sample(provider), url=URL, now=NOW, options=opts)
    assert req.headers["Content-Type"].startswith("application/")
    verify(provider, secrets=[public], headers=req.headers, body=req.body, url=URL, now=NOW, options=opts)
    verify(
        provider,
        secrets=[public],
        headers=list(req.headers.items()),
        body=req.body,
        url=URL,
        now=NOW + 1,
        options=opts,
    )
    if provider not in ("mailgun", "linear"):
        assert req.body == _sample(provider)
        assert (
            sign(
                provider,
                secret=private,
                body=req.body,
                url=URL,
                now=NOW,
                options=opts,
                delivery_id=req.headers.get("webhook-id"),
            ).keys()
            == req.headers.keys()
        )


@pytest.mark.parametrize("provider", sorted(PROVIDERS))
def test_round_trip_with_real_clock(provider: str) -> None:
    private, public = _secrets(provider)
    opts = {"header": "X-Signature"} if provider == "hmac" else None
    req = sign_request(provider, secret=private, body=_sample(provider), url=URL, options=opts)
    verify(provider, secrets=[public], headers=req.headers, body=req.body, url=URL, options=opts)


def test_standard_webhooks_ed25519_round_trip() -> None:
    private, public = generate_keypair("standard_webhooks")
    assert private.startswith("whsk_") and public.startswith("whpk_")
    req = sign_request("standard_webhooks", secret=private, body=b'{"a":1}', now=NOW, delivery_id="msg_1")
    assert req.headers["webhook-signature"].startswith("v1a,")
    assert req.headers["webhook-id"] == "msg_1"
    verify(
        "standard_webhooks",
        secrets=["whsec_" + base64.b64encode(b"k" * 24).decode(), public],
        headers=req.headers,
        body=req.body,
        now=NOW,
    )
    validate_secret("standard_webhooks", private)
    validate_secret("standard_webhooks", public)


def test_key_formats() -> None:
    seed, pub = generate_keypair("discord_interactions")
    assert len(bytes.fromhex(seed)) == 32 and len(bytes.fromhex(pub)) == 32
    der, spki = generate_keypair("sendgrid_event_webhook")
    base64.b64decode(der, validate=True)
    assert spki.startswith("MFkwEwYHKoZIzj0CAQYIKoZIzj0DAQcDQgAE")  # P-256 SPKI prefix, as SendGrid shows it
    validate_secret("discord_interactions", pub)
    validate_secret("sendgrid_event_webhook", spki)
    with pytest.raises(ValueError):
        validate_secret("discord_interactions", "abc")
    with pytest.raises(ValueError):
        validate_secret("standard_webhooks", "whsec_***")
    secret, same = generate_keypair("stripe")
    assert secret == same and len(secret) >= 32


def test_sendgrid_pem_private_key_is_accepted() -> None:
    from cryptography.hazmat.primitives import serialization

    der, spki = generate_keypair("sendgrid_event_webhook")
    key = serialization.load_der_private_key(base64.b64decode(der), password=None)
    pem = key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    ).decode()
    req = sign_request("sendgrid_event_webhook", secret=pem, body=b"[]\r\n", now=NOW)
    verify("sendgrid_event_webhook", secrets=[spki], headers=req.headers, body=req.body, now=NOW)


def test_mailgun_sign_rewrites_the_signature_object() -> None:
    body = _sample("mailgun")
    req = sign_request("mailgun", secret="key-1", body=body, now=NOW, delivery_id="evt-42")
    payload = json.loads(req.body)
    assert payload["signature"]["timestamp"] == str(NOW)
    assert len(payload["signature"]["token"]) == 50
    assert payload["event-data"]["id"] == "evt-42"
    assert "Content-Type" in sign("mailgun", secret="key-1", body=body, now=NOW)
    with pytest.raises(ValueError):
        sign_request("mailgun", secret="key-1", body=b"not json", now=NOW)


def test_url_bound_signing_needs_url() -> None:
    with pytest.raises(ValueError):
        sign_request("square", secret="s", body=b"{}")


HMAC_COMBOS: list[dict[str, Any]] = [
    {"header": "X-Signature"},
    {"header": "X-Hub-Signature", "algorithm": "sha1", "prefix": "sha1="},
    {"header": "X-Sig", "algorithm": "sha512", "encoding": "base64"},
    {"header": "X-Sig", "signed": "{timestamp}.{body}", "timestamp_header": "X-Timestamp", "prefix": "v1="},
    {
        "header": "X-Sig",
        "signed": "{id}:{timestamp}:{method}:{url}:{body}",
        "timestamp_header": "X-Ts",
        "id_header": "X-Id",
        "encoding": "base64",
    },
]


@pytest.mark.parametrize("options", HMAC_COMBOS, ids=lambda o: ",".join(f"{k}={v}" for k, v in o.items()))
def test_generic_hmac_option_combos(options: dict[str, Any]) -> None:
    for opts in (options, HmacOptions(**options)):
        req = sign_request("hmac", secret="shh", body=b'{"id":1}', url=URL, now=NOW, options=opts)
        assert req.headers[options["header"]].startswith(options.get("prefix", ""))
        verify(
            "hmac",
            secrets=["nope", "shh"],
            headers=req.headers,
            body=req.body,
            url=URL,
            now=NOW,
            options=opts,
        )
        with pytest.raises(SignatureError) as info:
            verify(
                "hmac",
                secrets=["shh"],
                headers=req.headers,
                body=req.body + b" ",
                url=URL,
                now=NOW,
                options=opts,
            )
        assert info.value.code == "bad_signature"
        stale = NOW + 301
        if "{timestamp}" in options.get("signed", ""):
            with pytest.raises(SignatureError) as info:
                verify(
                    "hmac",
                    secrets=["shh"],
                    headers=req.headers,
                    body=req.body,
                    url=URL,
                    now=stale,
                    options=opts,
                )
            assert info.value.code == "timestamp_expired"
        else:
            verify("hmac", secrets=["shh"], headers=req.headers, body=req.body, url=URL, now=stale, options=opts)


def test_hmac_options_from_mapping() -> None:
    opts = HmacOptions.from_mapping({"header": "X-Sig", "algorithm": "sha1"})
    assert opts == HmacOptions(header="X-Sig", algorithm="sha1")
    assert HmacOptions.from_mapping(opts) is opts
    with pytest.raises(ValueError, match="encoding"):
        HmacOptions.from_mapping({"header": "X", "encoding": "z85"})


def test_generic_hmac_millisecond_timestamps_and_url_requirement() -> None:
    opts = {"header": "X-Sig", "signed": "{timestamp}{body}", "timestamp_header": "X-Ts"}
    ts_ms = str(NOW * 1000)
    import hashlib
    import hmac

    sig = hmac.new(b"k", ts_ms.encode() + b"{}", hashlib.sha256).hexdigest()
    verify("hmac", secrets=["k"], headers={"X-Sig": sig, "X-Ts": ts_ms}, body=b"{}", now=NOW + 5, options=opts)
    url_opts = {"header": "X-Sig", "signed": "{url}{body}"}
    with pytest.raises(SignatureError) as info:
        verify("hmac", secrets=["k"], headers={"X-Sig": sig}, body=b"{}", options=url_opts)
    assert info.value.code == "url_required"


@pytest.mark.parametrize(
    ("options", "bad_key"),
    [
        (None, "header"),
        ({}, "header"),
        ({"header": ""}, "header"),
        ({"header": "X", "algorithm": "md5"}, "algorithm"),
        ({"header": "X", "encoding": "base32"}, "encoding"),
        ({"header": "X", "signed": "{timestamp}.{body}"}, "timestamp_header"),
        ({"header": "X", "signed": "{id}{body}"}, "id_header"),
        ({"header": "X", "signed": "{nonce}{body}"}, "signed"),
        ({"header": "X", "signed": "{timestamp}", "timestamp_header": "T"}, "signed"),
        ({"header": "X", "signed": "{body"}, "signed"),
        ({"header": "X", "colour": "red"}, "colour"),
        ({"header": "X", "prefix": 3}, "prefix"),
    ],
)
def test_generic_hmac_option_errors_name_the_key(options: Any, bad_key: str) -> None:
    with pytest.raises(ValueError, match=bad_key):
        verify("hmac", secrets=["k"], headers={}, body=b"", options=options)


HEADER_IDS = sorted(p for p, s in PROVIDERS.items() if s.delivery_id[0].startswith("header:"))


@pytest.mark.parametrize("provider", HEADER_IDS)
def test_signed_delivery_id_is_what_extract_meta_reads(provider: str) -> None:
    """Where the provider carries the delivery id in a header, sign() puts the given id there."""
    private, _ = _secrets(provider)
    opts = {"header": "X-Signature"} if provider == "hmac" else None
    req = sign_request(
        provider, secret=private, body=_sample(provider), url=URL, now=NOW, delivery_id="dlv-7", options=opts
    )
    meta = extract_meta(provider, headers=req.headers, payload=json.loads(req.body))
    assert meta.delivery_id == "dlv-7"


def test_github_sign_splits_a_combined_event_type() -> None:
    req = sign_request("github", secret="s", body=_sample("github"), event_type="issues.opened")
    assert req.headers["X-GitHub-Event"] == "issues"
    meta = extract_meta("github", headers=req.headers, payload=json.loads(req.body))
    assert meta.event_type == "issues.opened"
