"""Shared building blocks: the error type, header access, constant-time comparison, timestamps.

Everything here is pure (stdlib only). Nothing in this package ever puts a secret, a computed
signature or a received signature into an exception message.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import re
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal, TypeAlias

HeadersInput: TypeAlias = Mapping[str, str] | Sequence[tuple[str, str]] | Sequence[tuple[bytes, bytes]]
Algorithm: TypeAlias = Literal["sha1", "sha256", "sha512"]

#: Every reason code a :class:`SignatureError` can carry.
REASON_CODES = frozenset(
    {
        "missing_header",  # a required header (or body field) is absent or empty
        "malformed_header",  # present but unparseable, or a header the scheme reads is repeated
        "malformed_body",  # the scheme reads the body (Mailgun, Linear, Twilio JSON) and cannot
        "bad_signature",  # no signature matched any secret
        "timestamp_expired",  # signed timestamp older than the tolerance
        "timestamp_in_future",  # signed timestamp newer than now + tolerance
        "no_secret",  # no usable secret configured
        "invalid_secret",  # every configured secret is unusable for this scheme (bad encoding)
        "unsupported_version",  # the header holds only signature versions we do not accept
        "url_required",  # URL-bound scheme called without url
    }
)


class SignatureError(Exception):
    """Verification failed. ``code`` is a stable reason for logs/metrics; never shown to senders.

    The message is built only from the code and a fixed, secret-free detail string.
    """

    code: str

    def __init__(self, code: str, detail: str | None = None) -> None:
        if code not in REASON_CODES:  # pragma: no cover - programming error
            raise ValueError(f"unknown signature error code {code!r}")
        self.code = code
        self.detail = detail
        super().__init__(code if detail is None else f"{code}: {detail}")


class Headers:
    """Case-insensitive multi-value view of request headers (mapping or list of pairs).

    Duplicate rule, the same for every scheme: a header the scheme *reads for verification*
    (signature, timestamp, signed id) must appear at most once; a repeat, even with an identical
    value, is ``malformed_header``. Rotation is expressed inside one header by the schemes that
    support it, never by repeating the header, and a repeated timestamp could otherwise be used
    to sign with one value and window-check another.
    """

    __slots__ = ("_values",)
    _values: dict[str, list[str]]

    def __init__(self, raw: HeadersInput | Headers | None) -> None:
        values: dict[str, list[str]] = {}
        if isinstance(raw, Headers):
            values = {k: list(v) for k, v in raw._values.items()}
        elif raw is not None:
            pairs: Iterable[tuple[Any, Any]] = raw.items() if isinstance(raw, Mapping) else raw
            for name, value in pairs:
                key = _text(name).strip().lower()
                values.setdefault(key, []).append(_text(value))
        self._values = values

    def pairs(self) -> list[tuple[str, str]]:
        return [(k, v) for k, values in self._values.items() for v in values]

    def all(self, name: str) -> list[str]:
        return list(self._values.get(name.lower(), ()))

    def get(self, name: str) -> str | None:
        """First non-empty value, stripped, or None (lenient: for metadata, never for verification)."""
        for value in self._values.get(name.lower(), ()):
            if value.strip():
                return value.strip()
        return None

    def has(self, name: str) -> bool:
        return name.lower() in self._values

    def one(self, name: str) -> str:
        """The single value of a header used for verification."""
        found = self._values.get(name.lower())
        if not found:
            raise SignatureError("missing_header", f"{name} header is missing")
        if len(found) > 1:
            raise SignatureError("malformed_header", f"{name} header is repeated")
        value = found[0].strip()
        if not value:
            raise SignatureError("missing_header", f"{name} header is empty")
        return value

    def first_family(self, *names: str) -> str:
        """The first of ``names`` that is present (aliases such as Shopify's un-prefixed names)."""
        for name in names:
            if self.has(name):
                return name
        return names[0]


def _text(value: Any) -> str:
    """Header bytes as the sender meant them: UTF-8 when they are UTF-8 (a non-ASCII webhook-id is
    then signed over the same bytes it was sent as), else latin-1, which never fails."""
    if isinstance(value, bytes | bytearray):
        try:
            return bytes(value).decode("utf-8")
        except UnicodeDecodeError:
            return bytes(value).decode("latin-1")
    return str(value)


# --- comparison and digests -------------------------------------------------------------------


_HASHES = {"sha1": hashlib.sha1, "sha256": hashlib.sha256, "sha512": hashlib.sha512}


def digest(key: bytes, message: bytes, algorithm: str = "sha256") -> bytes:
    if algorithm not in _HASHES:
        raise KeyError(algorithm)
    return hmac.digest(key, message, algorithm)  # one-shot, in C


def _ascii(value: str) -> bytes:
    return value.encode("utf-8", "replace")


def hex_matches(expected: bytes, received: str) -> bool:
    """Constant-time compare of a raw digest with a received hex string (case-insensitive)."""
    return hmac.compare_digest(_ascii(expected.hex()), _ascii(received.strip().lower()))


def b64_matches(expected: bytes, received: str) -> bool:
    """Constant-time compare of a raw digest with a received base64 string."""
    decoded = b64decode_strict(received.strip())
    if decoded is None:
        return False
    return hmac.compare_digest(expected, decoded)


def text_matches(expected: str, received: str) -> bool:
    return hmac.compare_digest(_ascii(expected), _ascii(received))


_B64_RE = re.compile(r"^[A-Za-z0-9+/]*={0,2}$")
_B64URL_RE = re.compile(r"^[A-Za-z0-9_-]*={0,2}$")


def b64decode_strict(value: str, *, pad: bool = False) -> bytes | None:
    """Decode standard (or URL-safe) base64; None when it is not base64. ``pad`` adds missing '='."""
    urlsafe = bool(_B64URL_RE.match(value)) and not _B64_RE.match(value)
    if not (urlsafe or _B64_RE.match(value)):
        return None
    if pad:
        value = value + "=" * (-len(value) % 4)
    try:
        if urlsafe:
            return base64.urlsafe_b64decode(value)
        return base64.b64decode(value, validate=True)
    except (binascii.Error, ValueError):
        return None


def b64(data: bytes) -> str:
    return base64.b64encode(data).decode("ascii")


def parse_pairs(value: str, sep: str, what: str) -> list[tuple[str, str]]:
    """Split ``k=v<sep>k=v``; an item without '=' is ``malformed_header``."""
    pairs: list[tuple[str, str]] = []
    for item in value.split(sep):
        item = item.strip()
        if not item:
            continue
        key, eq, val = item.partition("=")
        if not eq or not key.strip():
            raise SignatureError("malformed_header", f"{what} header has an item without '='")
        pairs.append((key.strip(), val.strip()))
    if not pairs:
        raise SignatureError("malformed_header", f"{what} header is empty")
    return pairs


def single(pairs: Sequence[tuple[str, str]], key: str, what: str) -> str:
    """The only value for ``key`` in ``pairs``; missing → missing_header, repeated → malformed."""
    found = [v for k, v in pairs if k == key]
    if not found or not found[0]:
        raise SignatureError("missing_header", f"{what} header has no {key}")
    if len(found) > 1:
        raise SignatureError("malformed_header", f"{what} header repeats {key}")
    return found[0]


# --- the request handed to each scheme ----------------------------------------------------------


@dataclass(frozen=True)
class VerifyRequest:
    headers: Headers
    body: bytes
    secrets: tuple[str, ...]
    url: str | None
    method: str
    now: float
    tolerance: int | None
    options: Any = None  # HmacOptions for the generic provider

    def require_url(self) -> str:
        if not self.url:
            raise SignatureError("url_required")
        return self.url


@dataclass(frozen=True)
class SignInput:
    secret: str
    body: bytes
    url: str | None
    method: str
    now: float
    delivery_id: str | None
    event_type: str | None
    options: Any = None

    def require_url(self) -> str:
        if not self.url:
            raise ValueError("this provider signs the URL: pass url=")
        return self.url


@dataclass(frozen=True)
class SignedRequest:
    """What a sender would transmit: headers and the (possibly rewritten) body."""

    headers: dict[str, str]
    body: bytes
    url: str | None = None  # the URL the sender posts to, when signing adds to it (Twilio JSON: ?bodySHA256=)


@dataclass(frozen=True)
class Scheme:
    verify: Callable[[VerifyRequest], None]
    sign: Callable[[SignInput], SignedRequest]
    keypair: Callable[[], tuple[str, str]] | None = None
    check_secret: Callable[[str], None] | None = None
    extra: Mapping[str, Any] = field(default_factory=dict)


def any_secret_matches(secrets: Iterable[str], check: Callable[[str], bool]) -> None:
    """Raise ``bad_signature`` unless ``check(secret)`` holds for some secret."""
    for secret in secrets:
        if check(secret):
            return
    raise SignatureError("bad_signature")


def content_type_for(body: bytes) -> str:
    stripped = body.lstrip()
    if stripped[:1] in (b"{", b"["):
        return "application/json"
    return "application/x-www-form-urlencoded"
