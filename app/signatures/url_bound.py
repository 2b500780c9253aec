"""Schemes that sign the public URL: Twilio, Square, HubSpot v3.

``url`` is the URL the sender called as configured on the source (behind a proxy, never rebuilt
from the request). For Twilio include any query string the sender was given.
"""

from __future__ import annotations

import hashlib
import hmac
import uuid
from urllib.parse import parse_qs, parse_qsl, urlsplit, urlunsplit

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
    digest,
    parse_pairs,
    single,
)
from ._time import check_window, parse_unix

# --- Twilio: base64 HMAC-SHA1 over URL + sorted form params (or URL?bodySHA256= for JSON) --------


def _twilio_data(url: str, params: list[tuple[str, str]]) -> bytes:
    """What twilio-python's ``compute_signature`` builds: keys sorted, each key's values sorted
    and de-duplicated, concatenated as ``name + value`` after the URL."""
    grouped: dict[str, set[str]] = {}
    for name, value in params:
        grouped.setdefault(name, set()).add(value)
    out = url
    for name in sorted(grouped):
        for value in sorted(grouped[name]):
            out += name + value
    return out.encode()


def _url_variants(url: str) -> list[str]:
    """The official validator accepts the URL with the port stripped or the default port added."""
    parts = urlsplit(url)
    host = parts.netloc.rpartition("@")[2]
    if parts.port:
        stripped = parts._replace(netloc=parts.netloc[: -len(f":{parts.port}")])
        return [url, urlunsplit(stripped)]
    default = 443 if parts.scheme == "https" else 80
    added = parts._replace(netloc=parts.netloc + f":{default}") if host else parts
    return [url, urlunsplit(added)]


def _is_json(req_headers_ct: str | None, url: str) -> bool:
    ct = (req_headers_ct or "").split(";", 1)[0].strip().lower()
    return ct == "application/json" or "bodySHA256" in parse_qs(urlsplit(url).query)


def _with_body_hash(url: str, body: bytes) -> str:
    """JSON deliveries: Twilio signs the URL carrying ``bodySHA256=<hex sha256(body)>``.

    If the configured URL already carries it, it must equal the body's hash; otherwise the hash
    of the received body is appended, so the signature check also covers the body.
    """
    body_hash = hashlib.sha256(body).hexdigest()
    given = parse_qs(urlsplit(url).query).get("bodySHA256")
    if given is not None:
        if len(given) != 1 or not hmac.compare_digest(given[0].lower().encode(), body_hash.encode()):
            raise SignatureError("bad_signature")
        return url
    return url + ("&" if urlsplit(url).query else "?") + "bodySHA256=" + body_hash


def _twilio_signed(url: str, method: str, body: bytes, content_type: str | None) -> list[bytes]:
    if _is_json(content_type, url):
        full = _with_body_hash(url, body)
        return [_twilio_data(u, []) for u in _url_variants(full)]
    params: list[tuple[str, str]] = []
    if method != "GET" and body:
        try:
            params = parse_qsl(body.decode("utf-8"), keep_blank_values=True)
        except UnicodeDecodeError:
            raise SignatureError("malformed_body", "body is not form-encoded") from None
    return [_twilio_data(u, params) for u in _url_variants(url)]


#: Webhooks Rules make Twilio sign with a Setting's SharedKey and algorithm, and say so in this
#: header (``key=<id>,algorithm=HMAC_SHA256``); absent, the signature is HMAC-SHA1 (auth token).
TWILIO_SETTINGS = "X-Twilio-Webhooks-Signature-Settings"
_TWILIO_ALGORITHMS: dict[str, Algorithm] = {"HMAC_SHA1": "sha1", "HMAC_SHA256": "sha256"}


def _twilio_algorithm(req: VerifyRequest) -> Algorithm:
    if not req.headers.has(TWILIO_SETTINGS):
        return "sha1"
    settings = parse_pairs(req.headers.one(TWILIO_SETTINGS), ",", TWILIO_SETTINGS)
    name = single(settings, "algorithm", TWILIO_SETTINGS).upper().replace("-", "_")
    if name not in _TWILIO_ALGORITHMS:
        raise SignatureError("unsupported_version", f"{TWILIO_SETTINGS} names an algorithm hookline does not accept")
    return _TWILIO_ALGORITHMS[name]


def _twilio_verify(req: VerifyRequest) -> None:
    url = req.require_url()
    value = req.headers.one("X-Twilio-Signature")
    algorithm = _twilio_algorithm(req)
    candidates = _twilio_signed(url, req.method, req.body, req.headers.get("Content-Type"))
    any_secret_matches(
        req.secrets,
        lambda s: any(b64_matches(digest(s.encode(), c, algorithm), value) for c in candidates),
    )


def _twilio_sign(inp: SignInput) -> SignedRequest:
    """Sign as Twilio does by default (HMAC-SHA1 with the auth token)."""
    url = inp.require_url()
    is_json = inp.body.lstrip()[:1] in (b"{", b"[")
    ct = "application/json" if is_json else "application/x-www-form-urlencoded"
    data = _twilio_signed(url, inp.method, inp.body, ct)[0]
    headers = {
        "X-Twilio-Signature": b64(digest(inp.secret.encode(), data, "sha1")),
        "I-Twilio-Idempotency-Token": inp.delivery_id or str(uuid.uuid4()),
        "Content-Type": ct,
    }
    # A JSON delivery goes to the URL carrying ?bodySHA256=…, the URL that was signed.
    posted = _with_body_hash(url, inp.body) if is_json else url
    return SignedRequest(headers=headers, body=inp.body, url=posted)


TWILIO = Scheme(verify=_twilio_verify, sign=_twilio_sign)


# --- Square: base64 HMAC-SHA256 over notification URL + body ----------------------------------


def _square_verify(req: VerifyRequest) -> None:
    signed = req.require_url().encode() + req.body
    value = req.headers.one("x-square-hmacsha256-signature")
    any_secret_matches(req.secrets, lambda s: b64_matches(digest(s.encode(), signed), value))


def _square_sign(inp: SignInput) -> SignedRequest:
    sig = b64(digest(inp.secret.encode(), inp.require_url().encode() + inp.body))
    headers = {"x-square-hmacsha256-signature": sig, "Content-Type": "application/json"}
    return SignedRequest(headers=headers, body=inp.body)


SQUARE = Scheme(verify=_square_verify, sign=_square_sign)


# --- HubSpot v3: base64 HMAC-SHA256 over METHOD + URI + body + timestamp(ms) ---------------------

_HS_SIG = "X-HubSpot-Signature-v3"
_HS_TS = "X-HubSpot-Request-Timestamp"
# HubSpot's docs: decode these escapes in the URI before signing.
_HS_DECODE = {
    "%3A": ":", "%2F": "/", "%3F": "?", "%40": "@", "%21": "!", "%24": "$",
    "%27": "'", "%28": "(", "%29": ")", "%2A": "*", "%2C": ",", "%3B": ";",
}  # fmt: skip


def _hubspot_uri(url: str) -> str:
    for escaped, char in _HS_DECODE.items():
        url = url.replace(escaped, char).replace(escaped.lower(), char)
    return url


def _hubspot_signed(method: str, url: str, body: bytes, ts_text: str) -> bytes:
    return (method + _hubspot_uri(url)).encode() + body + ts_text.encode()


def _hubspot_verify(req: VerifyRequest) -> None:
    url = req.require_url()
    ts_text = req.headers.one(_HS_TS)
    value = req.headers.one(_HS_SIG)
    ts_ms = parse_unix(ts_text, _HS_TS)
    signed = _hubspot_signed(req.method, url, req.body, ts_text)
    any_secret_matches(req.secrets, lambda s: b64_matches(digest(s.encode(), signed), value))
    check_window(ts_ms / 1000.0, req.now, req.tolerance)


def _hubspot_sign(inp: SignInput) -> SignedRequest:
    ts_text = str(int(inp.now * 1000))
    signed = _hubspot_signed(inp.method, inp.require_url(), inp.body, ts_text)
    headers = {
        _HS_SIG: b64(digest(inp.secret.encode(), signed)),
        _HS_TS: ts_text,
        "Content-Type": "application/json",
    }
    return SignedRequest(headers=headers, body=inp.body)


HUBSPOT_V3 = Scheme(verify=_hubspot_verify, sign=_hubspot_sign)
