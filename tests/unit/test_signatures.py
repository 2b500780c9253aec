"""Official vectors (tests/data/vectors/signatures.json) and the verify() contract."""

from __future__ import annotations

import hashlib
import hmac
import json
from typing import Any

import pytest

from app.signatures import PROVIDERS, REASON_CODES, SignatureError, sign_request, verify
from tests.datafiles import PAYLOADS, SAMPLES, VECTORS_FILE

VECTORS: list[dict[str, Any]] = json.loads(VECTORS_FILE.read_text())


def _vector_id(v: dict[str, Any]) -> str:
    return f"{v['provider']}: {v['name']}"


@pytest.mark.parametrize("vector", VECTORS, ids=[_vector_id(v) for v in VECTORS])
def test_official_vector(vector: dict[str, Any]) -> None:
    key = vector.get("public_key") or vector["secret"]
    kwargs: dict[str, Any] = {
        "secrets": [key],
        "headers": vector["headers"],
        "body": vector["body"].encode("utf-8"),
        "url": vector.get("url"),
        "method": vector.get("method") or "POST",
        "now": vector.get("now"),
        "tolerance": vector.get("tolerance_seconds"),
    }
    if vector["expected_valid"]:
        verify(vector["provider"], **kwargs)
    else:
        with pytest.raises(SignatureError) as info:
            verify(vector["provider"], **kwargs)
        assert info.value.code == "bad_signature"
        assert key not in str(info.value)


def test_vectors_cover_the_expected_providers() -> None:
    assert len(VECTORS) == 31
    assert {v["provider"] for v in VECTORS} <= set(PROVIDERS)
    assert sum(v["expected_valid"] for v in VECTORS) == 21


def test_vector_without_frozen_clock_fails_on_time() -> None:
    """The vectors are years old: with the real clock the signed timestamp is expired."""
    vector = VECTORS[0]
    with pytest.raises(SignatureError) as info:
        verify(
            "standard_webhooks",
            secrets=[vector["secret"]],
            headers=vector["headers"],
            body=vector["body"].encode(),
        )
    assert info.value.code == "timestamp_expired"


def test_stripe_dotnet_fixture_signature() -> None:
    """tests/data/payloads/SOURCES.md: stripe-dotnet EventUtilityTest over the exact file bytes."""
    body = (PAYLOADS / "stripe" / "customer.created.json").read_bytes()
    header = "t=1533204620,v1=2220f87ef101a04665f11cdf770523143f875572008577fa0f20882ddb9cc3c7"
    verify("stripe", secrets=["webhook_secret"], headers={"Stripe-Signature": header}, body=body, now=1533204620)
    with pytest.raises(SignatureError):
        verify(
            "stripe",
            secrets=["webhook_secret"],
            headers={"Stripe-Signature": header},
            body=body.rstrip(b"\n") + b" \n",
            now=1533204620,
        )


@pytest.mark.parametrize(
    ("name", "ts", "sig"),
    [
        (
            "customer.created.json",
            1710498758,
            "558bf93944dbeb4790c7a8af6cb2ea435c8ca9c8396aafc1a4e37424ac132744",
        ),
        (
            "customer.created.special_chars.json",
            1710498288,
            "38219b3ba1578184e625c29d201a27cd25bd69e2ec9c3ab87dcb90d87ff73a41",
        ),
    ],
)
def test_paddle_fixture_needs_the_final_newline_stripped(name: str, ts: int, sig: str) -> None:
    secret = "pdl_ntfset_01hs0t3tw21j988db1pam5xg8m_GrOWLNef+vmtjJYq4mSnHNzvc8uWoJ1I"
    raw = (PAYLOADS / "paddle" / name).read_bytes()
    headers = {"Paddle-Signature": f"ts={ts};h1={sig}"}
    verify("paddle_billing", secrets=[secret], headers=headers, body=raw.rstrip(b"\n"), now=ts + 1)
    with pytest.raises(SignatureError) as info:
        verify("paddle_billing", secrets=[secret], headers=headers, body=raw, now=ts + 1)
    assert info.value.code == "bad_signature"


# --- the verify() contract -----------------------------------------------------------------------

SECRET = "It's a Secret to Everybody"
GH_HEADERS = {"X-Hub-Signature-256": "sha256=757107ea0eb2509fc211221cce984b8a37570b6d7586c22c46f4379c8b043e17"}


def test_unknown_provider_is_a_value_error() -> None:
    with pytest.raises(ValueError, match="unknown provider"):
        verify("nope", secrets=["x"], headers={}, body=b"")


def test_headers_are_case_insensitive_and_may_be_pairs() -> None:
    lower = {k.lower(): v for k, v in GH_HEADERS.items()}
    verify("github", secrets=[SECRET], headers=lower, body=b"Hello, World!")
    verify(
        "github",
        secrets=[SECRET],
        headers=[("X-HUB-SIGNATURE-256", GH_HEADERS["X-Hub-Signature-256"]), ("Content-Type", "text/plain")],
        body=b"Hello, World!",
    )


def test_uppercase_hex_signature_is_accepted() -> None:
    value = GH_HEADERS["X-Hub-Signature-256"]
    verify(
        "github",
        secrets=[SECRET],
        headers={"X-Hub-Signature-256": "sha256=" + value[7:].upper()},
        body=b"Hello, World!",
    )


def test_legacy_sha1_header_alone_is_not_accepted() -> None:
    sha1 = hmac.new(SECRET.encode(), b"Hello, World!", hashlib.sha1).hexdigest()
    with pytest.raises(SignatureError) as info:
        verify("github", secrets=[SECRET], headers={"X-Hub-Signature": "sha1=" + sha1}, body=b"Hello, World!")
    assert info.value.code == "missing_header"
    with pytest.raises(SignatureError) as info:
        verify("github", secrets=[SECRET], headers={"X-Hub-Signature-256": "sha1=" + sha1}, body=b"Hello, World!")
    assert info.value.code == "unsupported_version"


@pytest.mark.parametrize("secrets", [[], [""], ["  "]])
def test_no_usable_secret(secrets: list[str]) -> None:
    with pytest.raises(SignatureError) as info:
        verify("github", secrets=secrets, headers=GH_HEADERS, body=b"Hello, World!")
    assert info.value.code == "no_secret"


def test_a_bare_string_is_not_a_secret_list() -> None:
    with pytest.raises(SignatureError) as info:
        verify("github", secrets=SECRET, headers=GH_HEADERS, body=b"Hello, World!")
    assert info.value.code == "no_secret"


@pytest.mark.parametrize("provider", sorted(p for p, s in PROVIDERS.items() if s.url_bound))
def test_url_bound_providers_require_url(provider: str) -> None:
    with pytest.raises(SignatureError) as info:
        verify(provider, secrets=["s"], headers={}, body=b"{}", url=None)
    assert info.value.code == "url_required"


def test_standard_webhooks_secret_that_is_not_base64_is_invalid_secret() -> None:
    signed = sign_request("standard_webhooks", secret="whsec_" + "A" * 32, body=b"{}", now=1)
    with pytest.raises(SignatureError) as info:
        verify("standard_webhooks", secrets=["whsec_not base64!"], headers=signed.headers, body=b"{}", now=1)
    assert info.value.code == "invalid_secret"


def test_negative_tolerance_is_rejected() -> None:
    with pytest.raises(ValueError):
        verify("github", secrets=[SECRET], headers=GH_HEADERS, body=b"Hello, World!", tolerance=-1)


def test_reason_codes_are_closed() -> None:
    assert {
        "missing_header",
        "malformed_header",
        "bad_signature",
        "timestamp_expired",
        "timestamp_in_future",
        "no_secret",
        "unsupported_version",
        "url_required",
    } <= REASON_CODES
    with pytest.raises(ValueError):
        SignatureError("made_up")


def test_every_provider_has_a_spec_with_consistent_flags() -> None:
    expected = {
        "standard_webhooks",
        "stripe",
        "github",
        "shopify",
        "slack",
        "twilio",
        "linear",
        "zendesk",
        "intercom",
        "hubspot_v3",
        "meta_whatsapp",
        "discord_interactions",
        "gitlab",
        "paddle_billing",
        "square",
        "pagerduty_v3",
        "sentry",
        "mailgun",
        "sendgrid_event_webhook",
        "calendly",
        "typeform",
        "jira_cloud",
        "twitch_eventsub",
        "zoom",
        "hmac",
    }
    assert set(PROVIDERS) == expected
    assert {p for p, s in PROVIDERS.items() if s.public_key} == {
        "discord_interactions",
        "sendgrid_event_webhook",
    }
    assert {p for p, s in PROVIDERS.items() if s.url_bound} == {"twilio", "square", "hubspot_v3"}
    assert PROVIDERS["stripe"].default_tolerance == 300
    assert PROVIDERS["paddle_billing"].default_tolerance == 5
    assert PROVIDERS["github"].default_tolerance is None


def test_every_sample_exists_and_is_json() -> None:
    for spec in PROVIDERS.values():  # hmac included: it ships hmac.json
        path = SAMPLES / spec.sample
        assert path.is_file(), path
        json.loads(path.read_bytes())
