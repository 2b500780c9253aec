"""Provider handshakes that must be answered instead of stored as events.

Call :func:`handshake` after :func:`~app.signatures.verify` succeeded for a POST; for Meta's GET
subscription check call it *instead of* verify (that GET carries no signature). A ``None`` reply
means "an ordinary event: store it".

- slack: ``{"type": "url_verification", "challenge": c}`` → 200 ``{"challenge": c}``.
- discord_interactions: PING (``type`` 1) → 200 ``{"type": 1}``.
- zoom: ``endpoint.url_validation`` → 200 ``{"plainToken": p, "encryptedToken": hex
  HMAC-SHA256(first secret, p)}`` (the first secret is the current one).
- twitch_eventsub: ``Twitch-Eventsub-Message-Type: webhook_callback_verification`` → 200
  text/plain ``challenge``.
- meta_whatsapp: GET ``hub.mode=subscribe`` with ``hub.verify_token`` equal (constant time) to
  ``verify_token`` → 200 text/plain ``hub.challenge``; anything else on GET → 403.
"""

from __future__ import annotations

import hmac
import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from ._base import Headers, HeadersInput, SignatureError, digest
from .api import verify
from .specs import get_spec

_MAX_CHALLENGE = 1024


@dataclass(frozen=True)
class HandshakeReply:
    status: int
    content_type: str
    body: bytes


def _json(data: Mapping[str, Any]) -> HandshakeReply:
    return HandshakeReply(200, "application/json", json.dumps(data, separators=(",", ":")).encode())


def _text(value: str, status: int = 200) -> HandshakeReply:
    return HandshakeReply(status, "text/plain; charset=utf-8", value.encode())


_FORBIDDEN = HandshakeReply(403, "text/plain; charset=utf-8", b"forbidden")


def _challenge(value: Any) -> str | None:
    if isinstance(value, str) and 0 < len(value) <= _MAX_CHALLENGE:
        return value
    return None


def accepts_get(provider: str) -> bool:
    """Whether GET requests to this provider's endpoint are meaningful (Meta's subscribe check)."""
    get_spec(provider)
    return provider == "meta_whatsapp"


def handshake(
    provider: str,
    *,
    method: str,
    headers: HeadersInput | Headers,
    body: bytes,
    payload: Any,
    query: Mapping[str, str],
    secrets: Sequence[str],
    verify_token: str | None = None,
) -> HandshakeReply | None:
    get_spec(provider)
    method = method.upper()
    if provider == "meta_whatsapp" and method == "GET":
        return _meta_subscribe(query, verify_token)
    if method != "POST":
        return None
    hdrs = headers if isinstance(headers, Headers) else Headers(headers)
    data = payload if isinstance(payload, dict) else {}
    if provider == "slack" and data.get("type") == "url_verification":
        challenge = _challenge(data.get("challenge"))
        return _json({"challenge": challenge}) if challenge else None
    if provider == "discord_interactions" and data.get("type") == 1:
        return _json({"type": 1})
    if provider == "zoom" and data.get("event") == "endpoint.url_validation":
        return _zoom(data, _signing_secret(hdrs, body, secrets))
    if provider == "twitch_eventsub":
        kind = hdrs.get("Twitch-Eventsub-Message-Type")
        if kind == "webhook_callback_verification":
            challenge = _challenge(data.get("challenge"))
            return _text(challenge) if challenge else None
    return None


def _meta_subscribe(query: Mapping[str, str], verify_token: str | None) -> HandshakeReply:
    mode = query.get("hub.mode")
    token = query.get("hub.verify_token")
    challenge = _challenge(query.get("hub.challenge"))
    if mode != "subscribe" or not verify_token or token is None or challenge is None:
        return _FORBIDDEN
    if not hmac.compare_digest(token.encode(), verify_token.encode()):
        return _FORBIDDEN
    return _text(challenge)


def _signing_secret(headers: Headers, body: bytes, secrets: Sequence[str]) -> str | None:
    """The secret that signed this Zoom request (rotation), else the first configured one."""
    usable = [s.strip() for s in secrets if s and s.strip()]
    for secret in usable:
        try:
            verify("zoom", secrets=[secret], headers=headers.pairs(), body=body, tolerance=10**9)
        except SignatureError:
            continue
        return secret
    return usable[0] if usable else None


def _zoom(data: Mapping[str, Any], secret: str | None) -> HandshakeReply | None:
    inner = data.get("payload")
    plain = _challenge(inner.get("plainToken")) if isinstance(inner, dict) else None
    if plain is None or secret is None:
        return None
    encrypted = digest(secret.encode(), plain.encode()).hex()
    return _json({"plainToken": plain, "encryptedToken": encrypted})
