"""Provider handshakes that must be answered instead of stored as events.

Call :func:`handshake` after :func:`~app.signatures.verify` succeeded for a POST; for Meta's GET
subscription check call it *instead of* verify (that GET carries no signature). A ``None`` reply
means "an ordinary event: store it"; :class:`HandshakeError` a handshake whose challenge cannot be
answered (the caller answers 400). Which provider answers what is in its registry record
(:mod:`app.signatures.handshake_replies` has the answers).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from ._base import Headers, HeadersInput
from .handshake_replies import HandshakeError
from .provider import HandshakeReply, HandshakeRequest
from .registry import get_provider

__all__ = ["HandshakeError", "HandshakeReply", "accepts_get", "handshake"]


def accepts_get(provider: str) -> bool:
    """Whether GET requests to this provider's endpoint are meaningful (Meta's subscribe check)."""
    return get_provider(provider).get_handshake is not None


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
    record = get_provider(provider)
    method = method.upper()
    if method == "GET" and record.get_handshake is not None:
        return record.get_handshake(query, verify_token)
    if method != "POST" or record.handshake is None:
        return None
    hdrs = headers if isinstance(headers, Headers) else Headers(headers)
    data = payload if isinstance(payload, dict) else {}
    return record.handshake(HandshakeRequest(headers=hdrs, body=body, payload=data, secrets=secrets))
