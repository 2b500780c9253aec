"""Schemes that sign only the raw body (no timestamp in the signed string).

GitHub, Shopify, Intercom, Meta/WhatsApp, Sentry, Typeform, Jira Cloud, PagerDuty v3, Linear
(whose timestamp lives inside the signed JSON body) and GitLab (plain token, no HMAC).
The key is always the secret string as UTF-8.
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Callable
from datetime import UTC, datetime

from ._base import (
    Algorithm,
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
    text_matches,
)
from ._time import check_window

ExtraHeaders = Callable[[SignInput], dict[str, str]]


def _no_extra(_inp: SignInput) -> dict[str, str]:
    return {}


def body_scheme(
    header: str,
    *,
    algorithm: Algorithm = "sha256",
    encoding: str = "hex",
    prefix: str = "",
    aliases: tuple[str, ...] = (),
    extra: ExtraHeaders = _no_extra,
) -> Scheme:
    """``<header>: <prefix><hex|base64 HMAC(secret, body)>``."""

    def verify(req: VerifyRequest) -> None:
        name = req.headers.first_family(header, *aliases)
        value = req.headers.one(name)
        if prefix:
            if not value.startswith(prefix):
                if "=" in value[:8]:
                    raise SignatureError("unsupported_version", f"{name} uses another algorithm")
                raise SignatureError("malformed_header", f"{name} lacks the {prefix!r} prefix")
            value = value[len(prefix) :]
        match = hex_matches if encoding == "hex" else b64_matches
        any_secret_matches(req.secrets, lambda s: match(digest(s.encode(), req.body, algorithm), value))

    def sign(inp: SignInput) -> SignedRequest:
        raw = digest(inp.secret.encode(), inp.body, algorithm)
        value = prefix + (raw.hex() if encoding == "hex" else b64(raw))
        headers = {header: value, "Content-Type": content_type_for(inp.body)}
        headers.update(extra(inp))
        return SignedRequest(headers=headers, body=inp.body)

    return Scheme(verify=verify, sign=sign)


def _head(event_type: str | None, default: str) -> str:
    """``issues.opened`` → ``issues``: the header part of a combined event type."""
    return (event_type or default).split(".", 1)[0]


def _uuid(inp: SignInput) -> str:
    return inp.delivery_id or str(uuid.uuid4())


GITHUB = body_scheme(
    "X-Hub-Signature-256",
    prefix="sha256=",
    extra=lambda i: {
        "X-GitHub-Delivery": _uuid(i),
        "X-GitHub-Event": _head(i.event_type, "issues"),
        "User-Agent": "GitHub-Hookshot/hookline",
    },
)
SHOPIFY = body_scheme(
    "X-Shopify-Hmac-Sha256",
    encoding="base64",
    aliases=("Shopify-Hmac-Sha256",),
    extra=lambda i: {
        "X-Shopify-Webhook-Id": _uuid(i),
        "X-Shopify-Topic": i.event_type or "fulfillments/create",
        "X-Shopify-Shop-Domain": "hookline-dev.myshopify.com",
        "X-Shopify-API-Version": "2025-01",
        "X-Shopify-Triggered-At": _iso(i.now),
    },
)
INTERCOM = body_scheme("X-Hub-Signature", algorithm="sha1", prefix="sha1=")
META_WHATSAPP = body_scheme("X-Hub-Signature-256", prefix="sha256=")
SENTRY = body_scheme(
    "Sentry-Hook-Signature",
    extra=lambda i: {
        "Request-ID": _uuid(i),
        "Sentry-Hook-Resource": _head(i.event_type, "issue"),
        "Sentry-Hook-Timestamp": str(int(i.now)),
    },
)
TYPEFORM = body_scheme("Typeform-Signature", encoding="base64", prefix="sha256=")
JIRA_CLOUD = body_scheme(
    "X-Hub-Signature",
    prefix="sha256=",
    extra=lambda i: {"X-Atlassian-Webhook-Identifier": _uuid(i)},
)


def _iso(now: float) -> str:
    return datetime.fromtimestamp(now, UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


# --- PagerDuty v3: comma-separated v1= list ------------------------------------------------------


def _pagerduty_verify(req: VerifyRequest) -> None:
    value = req.headers.one("X-PagerDuty-Signature")
    sigs = [item.strip()[3:] for item in value.split(",") if item.strip().startswith("v1=")]
    if not sigs:
        raise SignatureError("unsupported_version")
    any_secret_matches(
        req.secrets,
        lambda s: any(hex_matches(digest(s.encode(), req.body), sig) for sig in sigs),
    )


def _pagerduty_sign(inp: SignInput) -> SignedRequest:
    sig = "v1=" + digest(inp.secret.encode(), inp.body).hex()
    headers = {
        "X-PagerDuty-Signature": sig,
        "X-Webhook-Id": _uuid(inp),
        "Content-Type": "application/json",
    }
    return SignedRequest(headers=headers, body=inp.body)


PAGERDUTY_V3 = Scheme(verify=_pagerduty_verify, sign=_pagerduty_sign)


# --- Linear: body HMAC, webhookTimestamp (ms) inside the signed body -------------------------------


def _linear_verify(req: VerifyRequest) -> None:
    value = req.headers.one("Linear-Signature")
    any_secret_matches(req.secrets, lambda s: hex_matches(digest(s.encode(), req.body), value))
    if req.tolerance is None:
        return
    try:
        payload = json.loads(req.body)
    except ValueError:
        raise SignatureError("malformed_body", "body is not JSON") from None
    ts = payload.get("webhookTimestamp") if isinstance(payload, dict) else None
    if isinstance(ts, bool) or not isinstance(ts, int | float):
        raise SignatureError("malformed_body", "webhookTimestamp is missing")
    check_window(ts / 1000.0, req.now, req.tolerance)


def _linear_sign(inp: SignInput) -> SignedRequest:
    body = inp.body
    try:
        payload = json.loads(body)
    except ValueError:
        payload = None
    if isinstance(payload, dict):  # the timestamp is part of the body: refresh it
        payload["webhookTimestamp"] = int(inp.now * 1000)
        body = json.dumps(payload, separators=(",", ":")).encode()
    headers = {
        "Linear-Signature": digest(inp.secret.encode(), body).hex(),
        "Linear-Delivery": _uuid(inp),
        "Content-Type": "application/json",
    }
    if isinstance(payload, dict) and isinstance(payload.get("type"), str):
        headers["Linear-Event"] = payload["type"]
    return SignedRequest(headers=headers, body=body)


LINEAR = Scheme(verify=_linear_verify, sign=_linear_sign)


# --- GitLab: plain secret token ---------------------------------------------------------------


def _gitlab_verify(req: VerifyRequest) -> None:
    token = req.headers.one("X-Gitlab-Token")
    any_secret_matches(req.secrets, lambda s: text_matches(s, token))


def _gitlab_sign(inp: SignInput) -> SignedRequest:
    kind = _head(inp.event_type, "merge_request")
    event_id = _uuid(inp)
    headers = {
        "X-Gitlab-Token": inp.secret,
        "X-Gitlab-Event": kind.replace("_", " ").title() + " Hook",
        "X-Gitlab-Event-UUID": event_id,
        "Idempotency-Key": event_id,
        "Content-Type": "application/json",
    }
    return SignedRequest(headers=headers, body=inp.body)


GITLAB = Scheme(verify=_gitlab_verify, sign=_gitlab_sign)
