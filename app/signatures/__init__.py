"""Webhook signature verification, signing, event metadata and handshakes — pure functions.

Stdlib + ``cryptography`` only; nothing here imports the rest of ``app``.

Reason codes carried by :class:`SignatureError` (``exc.code``; the message never contains a
secret or a signature): ``missing_header``, ``malformed_header``, ``malformed_body``,
``bad_signature``, ``timestamp_expired``, ``timestamp_in_future``, ``no_secret``,
``invalid_secret``, ``unsupported_version``, ``url_required``.

Choices that apply to every provider:

- Raw bytes only; digests compared with :func:`hmac.compare_digest`; several secrets (any may
  match) and, where the scheme allows, several signatures in one header.
- A header the scheme reads for verification must appear once: repeated → ``malformed_header``
  (rotation lives inside one header; a repeated timestamp could sign one value and be
  window-checked with another). Absent or empty → ``missing_header``.
- Signed timestamps are checked in both directions (``now ± tolerance``), including Stripe and
  Paddle whose SDKs only check the past: a future-dated request would otherwise stay replayable
  for longer than the window. The window is checked after the signature.
"""

from ._base import REASON_CODES, Headers, SignatureError, SignedRequest
from .api import generate_keypair, sign, sign_request, validate_secret, verify
from .handshakes import HandshakeReply, accepts_get, handshake
from .locators import Locator, parse_locator
from .meta import EventMeta, MetaError, extract_meta, parse_overrides, parse_timestamp
from .options import HmacOptions
from .specs import PROVIDERS, ProviderSpec

__all__ = [
    "PROVIDERS",
    "REASON_CODES",
    "EventMeta",
    "HandshakeReply",
    "Headers",
    "HmacOptions",
    "Locator",
    "MetaError",
    "ProviderSpec",
    "SignatureError",
    "SignedRequest",
    "accepts_get",
    "extract_meta",
    "generate_keypair",
    "handshake",
    "parse_locator",
    "parse_overrides",
    "parse_timestamp",
    "sign",
    "sign_request",
    "validate_secret",
    "verify",
]
