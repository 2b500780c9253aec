"""Webhook signature verification, signing, event metadata and handshakes — pure functions.

Stdlib + ``cryptography`` only; nothing here imports the rest of ``app``. Everything hookline knows
about one provider (scheme, metadata locators and rules, handshake, sample) is its record in
:mod:`app.signatures.registry`; :mod:`app.signatures.provider` defines the record.

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

Per provider (default window in seconds, ``-`` = no signed timestamp):

==========================  ======  ==========================================================
standard_webhooks           300     ``webhook-*`` or ``svix-*``; whsec_ base64-decoded; whpk_ v1a
stripe / calendly           300/180 ``t=,v1=``; every v1 tried; v0/other versions ignored
paddle_billing              5       ``ts=;h1=``; every h1 tried; the SDK's 5 s (widen per source)
slack / zoom                300     ``v0=`` over ``v0:{ts}:{body}``
zendesk                     300     none documented by Zendesk; ISO timestamp, base64, verbatim key
twitch_eventsub             600     RFC 3339 ns timestamp; ``sha256=`` over id+ts+body
hubspot_v3                  300     ms timestamp; method+URL+body+ts; URL-bound
linear                      60      ``webhookTimestamp`` (ms) read from the signed body
discord_interactions        300     Ed25519, hex public key (Discord documents no window)
sendgrid_event_webhook      300     ECDSA P-256, base64 DER SPKI key (the SDK enforces none)
mailgun                     900     signature object inside the body (the SDK's max age)
github                      -       ``X-Hub-Signature-256`` only (legacy sha1 header not accepted)
twilio / square             -       URL-bound; Twilio tries the URL with/without the default port
gitlab                      -       plain ``X-Gitlab-Token``, constant-time; the body is not bound
others                      -       body HMAC (shopify, intercom, meta_whatsapp, pagerduty_v3, …)
hmac                        300     only when the template signs ``{timestamp}``
==========================  ======  ==========================================================
"""

from ._base import REASON_CODES, Headers, SignatureError, SignedRequest
from .api import generate_keypair, sign, sign_request, validate_secret, verify
from .handshakes import HandshakeError, HandshakeReply, accepts_get, handshake
from .locators import Locator, parse_locator
from .meta import EventMeta, MetaError, extract_meta, parse_overrides, parse_timestamp
from .options import HmacOptions
from .provider import Provider, ProviderSpec
from .registry import PROVIDERS

__all__ = [
    "PROVIDERS",
    "REASON_CODES",
    "EventMeta",
    "HandshakeError",
    "HandshakeReply",
    "Headers",
    "HmacOptions",
    "Locator",
    "MetaError",
    "Provider",
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
