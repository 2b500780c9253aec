"""The configurable ``hmac`` provider (see :class:`~app.signatures.options.HmacOptions`).

The signed bytes are the ``signed`` template with ``{body}`` replaced by the raw body and the
other fields by the header values / method / url as text. The key is the secret as UTF-8. The
timestamp is window-checked only when the template signs it: unix seconds, or milliseconds when
it has 13 or more digits.
"""

from __future__ import annotations

import string
import uuid

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
)
from ._time import check_window, parse_unix
from .options import HmacOptions


def render(opts: HmacOptions, values: dict[str, str], body: bytes) -> bytes:
    out = bytearray()
    for literal, name, _spec, _conv in string.Formatter().parse(opts.signed):
        out += literal.encode()
        if name is None:
            continue
        out += body if name == "body" else values[name].encode()
    return bytes(out)


def _values(opts: HmacOptions, headers_one: dict[str, str], method: str, url: str | None) -> dict[str, str]:
    values = dict(headers_one)
    values["method"] = method
    if "{url}" in opts.signed:
        if not url:
            raise SignatureError("url_required")
        values["url"] = url
    return values


def verify(req: VerifyRequest) -> None:
    opts = req.options
    assert isinstance(opts, HmacOptions)
    value = req.headers.one(opts.header)
    if opts.prefix:
        if not value.startswith(opts.prefix):
            raise SignatureError("malformed_header", f"{opts.header} lacks the configured prefix")
        value = value[len(opts.prefix) :]
    found: dict[str, str] = {}
    ts: float | None = None
    if "{timestamp}" in opts.signed and opts.timestamp_header:
        found["timestamp"] = req.headers.one(opts.timestamp_header)
        raw = parse_unix(found["timestamp"], opts.timestamp_header)
        ts = raw / 1000.0 if len(found["timestamp"]) >= 13 else float(raw)
    if "{id}" in opts.signed and opts.id_header:
        found["id"] = req.headers.one(opts.id_header)
    signed = render(opts, _values(opts, found, req.method, req.url), req.body)
    match = hex_matches if opts.encoding == "hex" else b64_matches
    algo = opts.algorithm
    any_secret_matches(
        req.secrets,
        lambda s: match(digest(s.encode(), signed, algo), value),
    )
    if ts is not None:
        check_window(ts, req.now, req.tolerance)


def sign(inp: SignInput) -> SignedRequest:
    opts = inp.options
    assert isinstance(opts, HmacOptions)
    headers: dict[str, str] = {}
    found: dict[str, str] = {}
    if opts.timestamp_header:
        found["timestamp"] = headers[opts.timestamp_header] = str(int(inp.now))
    if opts.id_header:
        found["id"] = headers[opts.id_header] = inp.delivery_id or str(uuid.uuid4())
    if "{url}" in opts.signed:
        inp.require_url()
    signed = render(opts, _values(opts, found, inp.method, inp.url), inp.body)
    raw = digest(inp.secret.encode(), signed, opts.algorithm)
    headers[opts.header] = opts.prefix + (raw.hex() if opts.encoding == "hex" else b64(raw))
    headers["Content-Type"] = content_type_for(inp.body)
    return SignedRequest(headers=headers, body=inp.body)


SCHEME = Scheme(verify=verify, sign=sign)
