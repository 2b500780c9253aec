"""Mailgun: the signature travels inside the body.

JSON webhooks: ``{"signature": {"timestamp": "…", "token": "…", "signature": "<hex>"}, "event-data":
{…}}``; legacy form-encoded webhooks carry ``timestamp``, ``token`` and ``signature`` fields.
Signature = hex HMAC-SHA256(HTTP webhook signing key, ``timestamp + token``). Window ±900 s (the
SDK's ``max_age_seconds``). Also cache ``token`` against replays (the events table's unique
delivery id does that when ``signature.token`` is the delivery id).
"""

from __future__ import annotations

import json
import secrets as _random
from typing import Any
from urllib.parse import parse_qs

from ._base import (
    Scheme,
    SignatureError,
    SignedRequest,
    SignInput,
    VerifyRequest,
    any_secret_matches,
    digest,
    hex_matches,
)
from ._time import check_window, parse_unix


def _fields(body: bytes) -> tuple[str, str, str]:
    found: Any = None
    try:
        payload = json.loads(body)
    except ValueError:
        payload = None
    if isinstance(payload, dict):
        found = payload.get("signature")
    elif payload is None:
        try:
            form = parse_qs(body.decode("utf-8"), keep_blank_values=True)
        except UnicodeDecodeError:
            raise SignatureError("malformed_body", "body is neither JSON nor form data") from None
        if any(len(v) > 1 for k, v in form.items() if k in ("timestamp", "token", "signature")):
            raise SignatureError("malformed_body", "signature fields are repeated")
        found = {k: v[0] for k, v in form.items()}
    else:
        raise SignatureError("malformed_body", "body is not a JSON object")
    if not isinstance(found, dict):
        raise SignatureError("missing_header", "body has no signature object")
    values = []
    for key in ("timestamp", "token", "signature"):
        value = found.get(key)
        if isinstance(value, int) and not isinstance(value, bool):
            value = str(value)
        if not isinstance(value, str) or not value.strip():
            raise SignatureError("missing_header", f"signature.{key} is missing")
        values.append(value.strip())
    return values[0], values[1], values[2]


def verify(req: VerifyRequest) -> None:
    ts_text, token, sig = _fields(req.body)
    ts = parse_unix(ts_text, "signature.timestamp")
    signed = (ts_text + token).encode()
    any_secret_matches(req.secrets, lambda s: hex_matches(digest(s.encode(), signed), sig))
    check_window(ts, req.now, req.tolerance)


def sign(inp: SignInput) -> SignedRequest:
    try:
        payload = json.loads(inp.body) if inp.body.strip() else {}
    except ValueError:
        raise ValueError("mailgun signs JSON webhook bodies (an object with event-data)") from None
    if not isinstance(payload, dict):
        raise ValueError("mailgun signs JSON webhook bodies (an object with event-data)")
    ts = str(int(inp.now))
    token = _random.token_hex(25)
    event_data = payload.get("event-data")
    if inp.delivery_id and isinstance(event_data, dict):
        event_data["id"] = inp.delivery_id
    payload["signature"] = {
        "timestamp": ts,
        "token": token,
        "signature": digest(inp.secret.encode(), (ts + token).encode()).hex(),
    }
    body = json.dumps(payload).encode()
    return SignedRequest(headers={"Content-Type": "application/json"}, body=body)


SCHEME = Scheme(verify=verify, sign=sign)
