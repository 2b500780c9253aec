"""HMAC schemes that sign a timestamp with the body (the window is checked after the signature).

Stripe and Calendly (``t=…,v1=…``), Slack and Zoom (``v0:{ts}:{body}``), Paddle Billing
(``ts=…;h1=…``), Zendesk (``{ts}{body}``, base64) and Twitch EventSub (``{id}{ts}{body}``).
Keys are the secret string as UTF-8, never decoded (Stripe ``whsec_…``, Paddle ``pdl_ntfset_…``,
Zendesk's base64-looking secret).
"""

from __future__ import annotations

import json
import uuid
from datetime import UTC, datetime

from ._base import (
    Scheme,
    SignatureError,
    SignedRequest,
    SignInput,
    VerifyRequest,
    any_secret_matches,
    b64,
    b64_matches,
    content_type_for,
    digest,
    hex_matches,
    parse_pairs,
    single,
)
from ._time import check_window, parse_signed_iso, parse_unix


def _t_v1_scheme(header: str, pair_sep: str, ts_key: str, sig_key: str, joiner: str) -> Scheme:
    """Stripe-like: ``<ts_key>=<unix><sep><sig_key>=<hex>[<sep><sig_key>=<hex>…]``.

    Every ``sig_key`` value may match (rotation); other keys (``v0``, future versions) are
    ignored, so a header with none of ``sig_key`` is ``unsupported_version`` (no downgrade).
    """

    def verify(req: VerifyRequest) -> None:
        pairs = parse_pairs(req.headers.one(header), pair_sep, header)
        ts_text = single(pairs, ts_key, header)
        ts = parse_unix(ts_text, f"{header} {ts_key}")
        sigs = [v for k, v in pairs if k == sig_key and v]
        if not sigs:
            raise SignatureError("unsupported_version", f"{header} has no {sig_key} signature")
        signed = f"{ts_text}{joiner}".encode() + req.body
        any_secret_matches(
            req.secrets,
            lambda s: any(hex_matches(digest(s.encode(), signed), sig) for sig in sigs),
        )
        check_window(ts, req.now, req.tolerance)

    def sign(inp: SignInput) -> SignedRequest:
        ts = str(int(inp.now))
        sig = digest(inp.secret.encode(), f"{ts}{joiner}".encode() + inp.body).hex()
        value = f"{ts_key}={ts}{pair_sep}{sig_key}={sig}"
        return SignedRequest(headers={header: value, "Content-Type": "application/json"}, body=inp.body)

    return Scheme(verify=verify, sign=sign)


STRIPE = _t_v1_scheme("Stripe-Signature", ",", "t", "v1", ".")
CALENDLY = _t_v1_scheme("Calendly-Webhook-Signature", ",", "t", "v1", ".")
PADDLE_BILLING = _t_v1_scheme("Paddle-Signature", ";", "ts", "h1", ":")


def _v0_scheme(sig_header: str, ts_header: str, id_header: str | None = None) -> Scheme:
    """Slack / Zoom: ``<sig_header>: v0=<hex HMAC(secret, "v0:{ts}:{body}")>``."""

    def verify(req: VerifyRequest) -> None:
        ts_text = req.headers.one(ts_header)
        value = req.headers.one(sig_header)
        ts = parse_unix(ts_text, ts_header)
        version, eq, sig = value.partition("=")
        if not eq:
            raise SignatureError("malformed_header", f"{sig_header} is not version=signature")
        if version != "v0":
            raise SignatureError("unsupported_version")
        signed = f"v0:{ts_text}:".encode() + req.body
        any_secret_matches(req.secrets, lambda s: hex_matches(digest(s.encode(), signed), sig))
        check_window(ts, req.now, req.tolerance)

    def sign(inp: SignInput) -> SignedRequest:
        ts = str(int(inp.now))
        sig = digest(inp.secret.encode(), f"v0:{ts}:".encode() + inp.body).hex()
        headers = {ts_header: ts, sig_header: "v0=" + sig, "Content-Type": content_type_for(inp.body)}
        if id_header:
            headers[id_header] = inp.delivery_id or uuid.uuid4().hex
        return SignedRequest(headers=headers, body=inp.body)

    return Scheme(verify=verify, sign=sign)


SLACK = _v0_scheme("X-Slack-Signature", "X-Slack-Request-Timestamp")
ZOOM = _v0_scheme("x-zm-signature", "x-zm-request-timestamp", "x-zm-trackingid")


# --- Zendesk: base64 HMAC over "{iso timestamp}{body}" ----------------------------------------------

_ZD_SIG = "X-Zendesk-Webhook-Signature"
_ZD_TS = "X-Zendesk-Webhook-Signature-Timestamp"


def _zendesk_verify(req: VerifyRequest) -> None:
    ts_text = req.headers.one(_ZD_TS)
    value = req.headers.one(_ZD_SIG)
    ts = parse_signed_iso(ts_text, _ZD_TS)
    signed = ts_text.encode() + req.body
    any_secret_matches(req.secrets, lambda s: b64_matches(digest(s.encode(), signed), value))
    check_window(ts, req.now, req.tolerance)


def _iso(now: float, digits: int = 0) -> str:
    dt = datetime.fromtimestamp(now, UTC)
    text = dt.strftime("%Y-%m-%dT%H:%M:%S")
    if digits:
        text += "." + f"{dt.microsecond:06d}{'0' * max(0, digits - 6)}"[:digits]
    return text + "Z"


def _zendesk_sign(inp: SignInput) -> SignedRequest:
    ts = _iso(inp.now)
    sig = b64(digest(inp.secret.encode(), ts.encode() + inp.body))
    headers = {
        _ZD_SIG: sig,
        _ZD_TS: ts,
        "X-Zendesk-Webhook-Invocation-Id": inp.delivery_id or str(uuid.uuid4().int)[:12],
        "Content-Type": "application/json",
    }
    return SignedRequest(headers=headers, body=inp.body)


ZENDESK = Scheme(verify=_zendesk_verify, sign=_zendesk_sign)


# --- Twitch EventSub: sha256=hex HMAC over "{message id}{timestamp}{body}" ---------------------------

_TW = "Twitch-Eventsub-Message-"


def _twitch_verify(req: VerifyRequest) -> None:
    msg_id = req.headers.one(_TW + "Id")
    ts_text = req.headers.one(_TW + "Timestamp")
    value = req.headers.one(_TW + "Signature")
    ts = parse_signed_iso(ts_text, _TW + "Timestamp")
    algo, eq, sig = value.partition("=")
    if not eq:
        raise SignatureError("malformed_header", f"{_TW}Signature is not sha256=<hex>")
    if algo != "sha256":
        raise SignatureError("unsupported_version")
    signed = (msg_id + ts_text).encode() + req.body
    any_secret_matches(req.secrets, lambda s: hex_matches(digest(s.encode(), signed), sig))
    check_window(ts, req.now, req.tolerance)


def _twitch_sign(inp: SignInput) -> SignedRequest:
    try:
        payload = json.loads(inp.body)
    except ValueError:
        payload = None
    sub = payload.get("subscription") if isinstance(payload, dict) else None
    sub_type = sub.get("type") if isinstance(sub, dict) else None
    kind = "notification"
    if isinstance(payload, dict) and "challenge" in payload:
        kind = "webhook_callback_verification"
    elif isinstance(sub, dict) and "event" not in payload and sub.get("status") != "enabled":
        kind = "revocation"
    msg_id = inp.delivery_id or str(uuid.uuid4())
    ts = _iso(inp.now, digits=9)
    sig = digest(inp.secret.encode(), (msg_id + ts).encode() + inp.body).hex()
    headers = {
        _TW + "Id": msg_id,
        _TW + "Retry": "0",
        _TW + "Type": kind,
        _TW + "Signature": "sha256=" + sig,
        _TW + "Timestamp": ts,
        "Twitch-Eventsub-Subscription-Type": inp.event_type or str(sub_type or "channel.follow"),
        "Twitch-Eventsub-Subscription-Version": "1",
        "Content-Type": "application/json",
    }
    return SignedRequest(headers=headers, body=inp.body)


TWITCH_EVENTSUB = Scheme(verify=_twitch_verify, sign=_twitch_sign)
