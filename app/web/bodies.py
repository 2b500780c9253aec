"""A webhook request's body: read under its size cap, then parsed (JSON as senders send it, or a form)
into a value at most :data:`guard.MAX_DEPTH` deep, or a 400 that says where it went wrong."""

from __future__ import annotations

import json
import re
from typing import Any
from urllib.parse import parse_qsl

from starlette.requests import ClientDisconnect, Request

from app.core.errors import BadRequest, ClientGone, PayloadTooLarge
from app.web import guard
from app.web.batcher import RawJson
from app.web.payloads import json_error


async def read_body(request: Request, limit: int) -> bytes:
    """The raw body, refusing more than ``limit`` bytes before reading them all."""
    declared = request.headers.get("content-length")
    if declared is not None:
        try:
            if int(declared) > limit:
                raise PayloadTooLarge(f"body is larger than this source accepts ({limit} bytes)")
        except ValueError:
            raise BadRequest("Content-Length is not a number") from None
    chunks: list[bytes] = []
    size = 0
    try:
        async for chunk in request.stream():
            size += len(chunk)
            if size > limit:
                raise PayloadTooLarge(f"body is larger than this source accepts ({limit} bytes)")
            chunks.append(chunk)
    except ClientDisconnect:  # the client went away (or the body timeout closed it): nothing to answer
        raise ClientGone("client disconnected before sending the whole body") from None
    return b"".join(chunks)


FORM = "application/x-www-form-urlencoded"
#: A Content-Encoding named back in an error: a short coding token, never arbitrary header text.
_CODING = re.compile(r"^[a-z0-9-]{1,16}$")


def parse_body(body: bytes, content_type: str) -> Any:
    """JSON (any media type, as senders mislabel it), or a form body as an object.

    Every branch ends in a value at most :data:`guard.MAX_DEPTH` deep, or a 400.
    """
    return parse_payload(body, content_type)[0]


def parse_payload(body: bytes, content_type: str, content_encoding: str = "") -> tuple[Any, RawJson | None]:
    """:func:`parse_body`, and the body itself as JSON text when it is the document as stored (UTF-8
    JSON): the batcher sends that text as is instead of serialising the payload again.

    A body is read as sent: no ``Content-Encoding`` is decoded (no decompression bomb reaches a
    parser). One that does not parse under a coding such as gzip is a 400 that names the coding."""
    form = _is_form(content_type)
    try:
        payload, text = _parse_form(body) if form else _parse_json(body)
    except RecursionError:
        raise BadRequest("body is nested too deeply to store") from None
    except BadRequest as e:
        coding = content_encoding.strip().lower()
        if coding in ("", "identity"):
            raise
        named = coding if _CODING.match(coding) else "other than identity"
        detail = f"body is sent with Content-Encoding {named}, which hookline does not decode: send it uncompressed"
        raise BadRequest(f"{detail} ({e.detail})") from None
    deep = form or not guard.shallow_json(body)  # else the depth is bounded without walking it
    if deep and guard.nesting_depth(payload) > guard.MAX_DEPTH:
        raise BadRequest(f"body is nested deeper than {guard.MAX_DEPTH} levels")
    return payload, text


def _is_form(content_type: str) -> bool:
    return content_type.split(";", 1)[0].strip().lower() == FORM


def _parse_form(body: bytes) -> tuple[Any, None]:
    try:
        text = body.decode("utf-8")
    except UnicodeDecodeError:
        raise BadRequest("form body is not valid UTF-8") from None
    form = dict(parse_qsl(text, keep_blank_values=True))
    if "payload" in form and form["payload"].lstrip().startswith("{"):
        try:  # Slack interactivity and a few others put JSON in a form field
            return _JSON.decode(form["payload"]), None
        except ValueError:
            pass
    return form, None


def _parse_json(body: bytes) -> tuple[Any, RawJson | None]:
    if not body.strip():
        raise BadRequest("body is empty; a JSON document was expected")
    try:
        text = body.decode("utf-8")
    except UnicodeDecodeError:
        text = None
    try:
        if text is not None and not text.startswith("\ufeff") and "\x00" not in text:
            return _JSON.decode(text), RawJson(text)  # plain UTF-8 (no BOM, no UTF-16/32): the common case
        return json.loads(body, parse_constant=_no_constants), None  # what json.loads accepts beyond that
    except ValueError as e:  # JSONDecodeError and UnicodeDecodeError are ValueErrors too
        raise BadRequest(f"body is not valid JSON ({json_error(e, body)})") from None


def _no_constants(name: str) -> Any:
    raise ValueError(f"{name} is not JSON")


#: NaN and ±Infinity are not JSON (Postgres refuses them too); one decoder for every request.
_JSON = json.JSONDecoder(parse_constant=_no_constants)
