"""The public entry points: :func:`verify`, :func:`sign_request`, :func:`sign`, key helpers."""

from __future__ import annotations

import secrets as _random
import time
from collections.abc import Mapping, Sequence
from typing import Any

from ._base import Headers, HeadersInput, Scheme, SignatureError, SignedRequest, SignInput, VerifyRequest
from .options import HmacOptions, coerce_options
from .registry import get_provider

OptionsInput = HmacOptions | Mapping[str, Any] | None


def _scheme(provider: str) -> Scheme:
    return get_provider(provider).scheme  # ValueError for an unknown name


def _options(provider: str, options: OptionsInput) -> HmacOptions | None:
    if get_provider(provider).takes_options:
        return coerce_options(options)
    return None


def verify(
    provider: str,
    *,
    secrets: Sequence[str],
    headers: HeadersInput | Headers,
    body: bytes,
    url: str | None = None,
    method: str = "POST",
    now: float | None = None,
    tolerance: int | None = None,
    options: OptionsInput = None,
) -> None:
    """Verify one delivery on its raw ``body``; return None or raise :class:`SignatureError`.

    ``secrets`` are tried in order (rotation: any may match); for public-key providers they are
    public keys. ``tolerance`` (seconds) overrides the provider's default window and only matters
    where the timestamp is signed. ``url`` is the public URL the sender called (URL-bound schemes:
    twilio, square, hubspot_v3). Unknown provider → ``ValueError``.
    """
    spec = get_provider(provider)
    scheme = spec.scheme
    opts = _options(provider, options)
    if not isinstance(body, bytes | bytearray | memoryview):
        raise TypeError("body must be the raw request bytes")
    if tolerance is not None and tolerance < 0:
        raise ValueError("tolerance must be >= 0 seconds")
    usable = tuple(s for s in secrets if isinstance(s, str) and s.strip())
    if isinstance(secrets, str) or not usable:
        raise SignatureError("no_secret")
    if spec.url_bound and not url:
        raise SignatureError("url_required")
    window = tolerance if tolerance is not None else spec.default_tolerance
    if opts is not None and not opts.signs_timestamp:
        window = None
    req = VerifyRequest(
        headers=headers if isinstance(headers, Headers) else Headers(headers),  # read-only: no copy
        body=bytes(body),
        secrets=tuple(s.strip() for s in usable),
        url=url,
        method=method.upper(),
        now=time.time() if now is None else float(now),
        tolerance=window,
        options=opts,
    )
    scheme.verify(req)


def sign_request(
    provider: str,
    *,
    secret: str,
    body: bytes,
    url: str | None = None,
    method: str = "POST",
    now: float | None = None,
    delivery_id: str | None = None,
    event_type: str | None = None,
    options: OptionsInput = None,
) -> SignedRequest:
    """Headers (and body) the provider would send for ``body``; for ``hookline send`` and tests.

    For public-key providers ``secret`` is the private key: discord_interactions a hex 32-byte
    Ed25519 seed; standard_webhooks ``whsk_<base64>`` (``whsec_…`` signs ``v1`` HMAC instead);
    sendgrid_event_webhook a PEM or base64-DER PKCS#8 P-256 key. See :func:`generate_keypair`.
    Mailgun and Linear rewrite the body (their signature/timestamp lives inside it).
    """
    scheme = _scheme(provider)
    opts = _options(provider, options)
    if not secret:
        raise ValueError("secret is required")
    inp = SignInput(
        secret=secret,
        body=bytes(body),
        url=url,
        method=method.upper(),
        now=time.time() if now is None else float(now),
        delivery_id=delivery_id,
        event_type=event_type,
        options=opts,
    )
    return scheme.sign(inp)


def sign(
    provider: str,
    *,
    secret: str,
    body: bytes,
    url: str | None = None,
    method: str = "POST",
    now: float | None = None,
    delivery_id: str | None = None,
    event_type: str | None = None,
    options: OptionsInput = None,
) -> dict[str, str]:
    """Only the headers of :func:`sign_request` (Mailgun/Linear callers need the body too)."""
    return sign_request(
        provider,
        secret=secret,
        body=body,
        url=url,
        method=method,
        now=now,
        delivery_id=delivery_id,
        event_type=event_type,
        options=options,
    ).headers


def generate_keypair(provider: str) -> tuple[str, str]:
    """``(private, public)`` for public-key schemes, ``(secret, secret)`` for HMAC ones.

    discord_interactions: (hex seed, hex public key); sendgrid_event_webhook: (base64 DER PKCS#8,
    base64 DER SPKI); standard_webhooks: an Ed25519 (``whsk_…``, ``whpk_…``) pair for ``v1a``.
    """
    scheme = _scheme(provider)
    if scheme.keypair is not None:
        return scheme.keypair()
    token = _random.token_urlsafe(32)
    return token, token


def validate_secret(provider: str, secret: str) -> None:
    """Raise ``ValueError`` if ``secret`` can never work for ``provider`` (for config checks)."""
    scheme = _scheme(provider)
    if not secret or not secret.strip():
        raise ValueError("secret is empty")
    if scheme.check_secret is not None:
        scheme.check_secret(secret.strip())
