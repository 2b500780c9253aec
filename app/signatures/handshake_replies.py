"""The handshakes providers expect answered (see each record's ``handshake`` in the registry).

- slack: ``{"type": "url_verification", "challenge": c}`` → 200 ``{"challenge": c}``.
- discord_interactions: PING (``type`` 1) → 200 ``{"type": 1}``.
- zoom: ``endpoint.url_validation`` → 200 ``{"plainToken": p, "encryptedToken": hex
  HMAC-SHA256(secret, p)}``, with the secret that signed the request (rotation), else the first.
- twitch_eventsub: ``Twitch-Eventsub-Message-Type: webhook_callback_verification`` → 200
  text/plain ``challenge``.
- meta_whatsapp (GET): ``hub.mode=subscribe`` with ``hub.verify_token`` equal (constant time) to
  ``verify_token`` → 200 text/plain ``hub.challenge``; anything else → 403 ``{"error","detail"}``.

A challenge that is not text (a string with an unpaired surrogate, which has no UTF-8 form to echo)
raises :class:`HandshakeError`: the request is a handshake that cannot be answered (a 400), not an
event to store.
"""

from __future__ import annotations

import hmac
import json
import time
from collections.abc import Mapping, Sequence
from typing import Any

from ._base import Headers, SignatureError, VerifyRequest, digest
from .provider import HandshakeReply, HandshakeRequest
from .timestamped import ZOOM

_MAX_CHALLENGE = 1024
#: hookline's error shape, as every other refusal; one answer whichever part was wrong (the token is a secret).
_FORBIDDEN = HandshakeReply(
    403,
    "application/json",
    b'{"error":"forbidden","detail":"the subscription check needs hub.mode=subscribe, '
    b'the verify token configured for this source and a hub.challenge"}',
)


class HandshakeError(ValueError):
    """A provider's handshake whose challenge cannot be answered; the message is safe to show."""


def _json(data: Mapping[str, Any]) -> HandshakeReply:
    return HandshakeReply(200, "application/json", json.dumps(data, separators=(",", ":")).encode())


def _text(value: str, status: int = 200) -> HandshakeReply:
    return HandshakeReply(status, "text/plain; charset=utf-8", value.encode())


def _challenge(value: Any, name: str) -> str | None:
    if isinstance(value, str) and 0 < len(value) <= _MAX_CHALLENGE:
        try:
            value.encode()
        except UnicodeEncodeError:
            raise HandshakeError(f"the handshake's {name} is not text (an unpaired surrogate)") from None
        return value
    return None


def slack(req: HandshakeRequest) -> HandshakeReply | None:
    if req.payload.get("type") != "url_verification":
        return None
    challenge = _challenge(req.payload.get("challenge"), "challenge")
    return _json({"challenge": challenge}) if challenge else None


def discord_ping(req: HandshakeRequest) -> HandshakeReply | None:
    return _json({"type": 1}) if req.payload.get("type") == 1 else None


def twitch_verification(req: HandshakeRequest) -> HandshakeReply | None:
    if req.headers.get("Twitch-Eventsub-Message-Type") != "webhook_callback_verification":
        return None
    challenge = _challenge(req.payload.get("challenge"), "challenge")
    return _text(challenge) if challenge else None


def zoom_url_validation(req: HandshakeRequest) -> HandshakeReply | None:
    if req.payload.get("event") != "endpoint.url_validation":
        return None
    inner = req.payload.get("payload")
    plain = _challenge(inner.get("plainToken"), "plainToken") if isinstance(inner, dict) else None
    secret = _zoom_signing_secret(req.headers, req.body, req.secrets)
    if plain is None or secret is None:
        return None
    encrypted = digest(secret.encode(), plain.encode()).hex()
    return _json({"plainToken": plain, "encryptedToken": encrypted})


def _zoom_signing_secret(headers: Headers, body: bytes, secrets: Sequence[str]) -> str | None:
    """The secret that signed this Zoom request (rotation), else the first configured one."""
    usable = [s.strip() for s in secrets if s and s.strip()]
    for secret in usable:
        check = VerifyRequest(
            headers=headers,
            body=body,
            secrets=(secret,),
            url=None,
            method="POST",
            now=time.time(),
            tolerance=10**9,
        )
        try:
            ZOOM.verify(check)
        except SignatureError:
            continue
        return secret
    return usable[0] if usable else None


def meta_subscribe(query: Mapping[str, str], verify_token: str | None) -> HandshakeReply:
    mode = query.get("hub.mode")
    token = query.get("hub.verify_token")
    challenge = _challenge(query.get("hub.challenge"), "hub.challenge")
    if mode != "subscribe" or not verify_token or token is None or challenge is None:
        return _FORBIDDEN
    if not hmac.compare_digest(token.encode(), verify_token.encode()):
        return _FORBIDDEN
    return _text(challenge)
