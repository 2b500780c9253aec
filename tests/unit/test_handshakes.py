"""Provider handshakes as pure function calls."""

from __future__ import annotations

import hashlib
import hmac
import json
from typing import Any

import pytest

from app.signatures import PROVIDERS, HandshakeReply, accepts_get, handshake, sign_request, verify
from tests.datafiles import PAYLOADS


def call(
    provider: str,
    payload: Any,
    *,
    headers: Any = None,
    method: str = "POST",
    query: Any = None,
    secrets: tuple[str, ...] = ("s",),
    verify_token: str | None = None,
    body: bytes | None = None,
) -> HandshakeReply | None:
    raw = body if body is not None else json.dumps(payload).encode()
    return handshake(
        provider,
        method=method,
        headers=headers or {},
        body=raw,
        payload=payload,
        query=query or {},
        secrets=list(secrets),
        verify_token=verify_token,
    )


def test_slack_url_verification_echoes_the_challenge() -> None:
    raw = (PAYLOADS / "slack" / "url_verification.json").read_bytes()
    reply = call("slack", json.loads(raw), body=raw)
    assert reply == HandshakeReply(200, "application/json", b'{"challenge":"valid_challenge_token"}')


def test_slack_ordinary_event_is_not_a_handshake() -> None:
    raw = (PAYLOADS / "slack" / "event_callback.message.json").read_bytes()
    assert call("slack", json.loads(raw), body=raw) is None
    assert call("slack", {"type": "url_verification"}) is None  # no challenge → nothing to echo


def test_discord_ping() -> None:
    reply = call("discord_interactions", {"id": "1", "type": 1, "application_id": "2"})
    assert reply is not None and reply.status == 200
    assert json.loads(reply.body) == {"type": 1}
    assert reply.content_type == "application/json"
    assert call("discord_interactions", {"id": "1", "type": 2}) is None


def test_zoom_url_validation_uses_the_secret_that_signed_it() -> None:
    payload = {
        "payload": {"plainToken": "qgg8vlvZRS6UYooatFL8Aw"},
        "event_ts": 1654503849680,
        "event": "endpoint.url_validation",
    }
    body = json.dumps(payload).encode()
    req = sign_request("zoom", secret="new-token", body=body)
    verify("zoom", secrets=["old-token", "new-token"], headers=req.headers, body=body)
    reply = call("zoom", payload, headers=req.headers, body=body, secrets=("old-token", "new-token"))
    assert reply is not None and reply.status == 200
    data = json.loads(reply.body)
    expected = hmac.new(b"new-token", b"qgg8vlvZRS6UYooatFL8Aw", hashlib.sha256).hexdigest()
    assert data == {"plainToken": "qgg8vlvZRS6UYooatFL8Aw", "encryptedToken": expected}
    # unsigned (or signed by nobody we know): the first, current secret answers
    reply = call("zoom", payload, secrets=("old-token", "new-token"))
    assert reply is not None
    assert (
        json.loads(reply.body)["encryptedToken"]
        == hmac.new(b"old-token", b"qgg8vlvZRS6UYooatFL8Aw", hashlib.sha256).hexdigest()
    )
    assert call("zoom", {"event": "meeting.started", "payload": {}}) is None
    assert call("zoom", {"event": "endpoint.url_validation", "payload": {}}) is None


def test_twitch_callback_verification() -> None:
    payload = {"challenge": "pogchamp-kappa-360noscope-vohiyo", "subscription": {"type": "channel.follow"}}
    headers = [("Twitch-Eventsub-Message-Type", "webhook_callback_verification")]
    reply = call("twitch_eventsub", payload, headers=headers)
    assert reply == HandshakeReply(200, "text/plain; charset=utf-8", b"pogchamp-kappa-360noscope-vohiyo")
    notification = {"twitch-eventsub-message-type": "notification"}
    assert call("twitch_eventsub", payload, headers=notification) is None
    revocation = {"Twitch-Eventsub-Message-Type": "revocation"}
    assert call("twitch_eventsub", {"subscription": {"status": "authorization_revoked"}}, headers=revocation) is None


def test_twitch_sign_marks_a_challenge_body_as_verification() -> None:
    body = json.dumps({"challenge": "abc", "subscription": {"type": "stream.online"}}).encode()
    req = sign_request("twitch_eventsub", secret="0123456789", body=body)
    assert req.headers["Twitch-Eventsub-Message-Type"] == "webhook_callback_verification"
    assert req.headers["Twitch-Eventsub-Subscription-Type"] == "stream.online"
    reply = call("twitch_eventsub", json.loads(body), headers=req.headers, body=body)
    assert reply is not None and reply.body == b"abc"


MODE = "hub.mode"
TOKEN = "hub.verify_token"
CHALLENGE = "hub.challenge"


def test_meta_get_subscribe_with_matching_token() -> None:
    query = {MODE: "subscribe", TOKEN: "tok-123", CHALLENGE: "1158201444"}
    reply = call("meta_whatsapp", None, method="GET", query=query, verify_token="tok-123", body=b"")
    assert reply == HandshakeReply(200, "text/plain; charset=utf-8", b"1158201444")


@pytest.mark.parametrize(
    ("query", "verify_token"),
    [
        ({MODE: "subscribe", TOKEN: "wrong", CHALLENGE: "1"}, "tok-123"),
        ({MODE: "subscribe", CHALLENGE: "1"}, "tok-123"),
        ({MODE: "unsubscribe", TOKEN: "tok-123", CHALLENGE: "1"}, "tok-123"),
        ({MODE: "subscribe", TOKEN: "tok-123"}, "tok-123"),
        ({MODE: "subscribe", TOKEN: "", CHALLENGE: "1"}, ""),
        ({MODE: "subscribe", TOKEN: "tok-123", CHALLENGE: "1"}, None),
        ({}, "tok-123"),
    ],
)
def test_meta_get_mismatch_is_forbidden(query: dict[str, str], verify_token: str | None) -> None:
    reply = call("meta_whatsapp", None, method="GET", query=query, verify_token=verify_token, body=b"")
    assert reply is not None and reply.status == 403
    assert b"tok-123" not in reply.body
    assert reply.content_type == "application/json"  # hookline's error shape, the same for every mismatch
    assert json.loads(reply.body) == {
        "error": "forbidden",
        "detail": "the subscription check needs hub.mode=subscribe, "
        "the verify token configured for this source and a hub.challenge",
    }


def test_meta_post_is_an_ordinary_event() -> None:
    assert call("meta_whatsapp", {"object": "whatsapp_business_account", "entry": []}) is None


def test_only_meta_accepts_get() -> None:
    assert [p for p in PROVIDERS if accepts_get(p)] == ["meta_whatsapp"]
    with pytest.raises(ValueError):
        accepts_get("nope")


@pytest.mark.parametrize("provider", sorted(PROVIDERS))
def test_ordinary_posts_are_never_handshakes(provider: str) -> None:
    assert call(provider, {"id": "evt_1", "type": "thing.happened"}) is None
    assert call(provider, [1, 2, 3]) is None
    assert call(provider, None, body=b"not json") is None


def test_get_for_other_providers_is_not_a_handshake() -> None:
    assert call("slack", {"type": "url_verification", "challenge": "x"}, method="GET") is None


def test_oversized_challenges_are_not_echoed() -> None:
    assert call("slack", {"type": "url_verification", "challenge": "x" * 5000}) is None
    reply = call(
        "meta_whatsapp",
        None,
        method="GET",
        verify_token="t",
        query={MODE: "subscribe", TOKEN: "t", CHALLENGE: "x" * 5000},
    )
    assert reply is not None and reply.status == 403
