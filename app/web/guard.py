"""Hostile-input helpers of the ingest path: nothing a stranger sends may crash, flood or mislead.

- :func:`client_ip`: the peer address, or the X-Forwarded-For hop just before the first trusted
  proxy (``HOOKLINE_TRUSTED_PROXIES``); never a value the client alone chose.
- :func:`request_id`: the caller's X-Request-Id only when it is a short token, else a fresh one.
- :func:`indexable`: any stored value that feeds an index is kept under the btree row limit; a long
  value keeps a readable prefix and a hash of the whole, so distinct values stay distinct.
- :func:`nesting_depth`: iterative, so a 100,000-level document cannot overflow the stack.
- :func:`stored_headers`: only the headers the provider's metadata reads plus an allowlist, each
  value capped, credentials redacted.
"""

from __future__ import annotations

import hashlib
import ipaddress
import os
import re
from collections.abc import Iterable, Sequence
from functools import lru_cache
from typing import Any

from starlette.requests import Request

from app.core.config import Source
from app.signatures import PROVIDERS, Headers, parse_locator

IPNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network

#: Deepest JSON (objects and arrays) ingest stores; deeper gets 400. Far below Python's recursion
#: limit, so nothing downstream (jsonb encoding, locators, the worker's prompt trimming) overflows.
MAX_DEPTH = 128
#: Longest event type, tenant or ordering key kept verbatim (bytes, UTF-8); btree rows hold ~2.7 kB.
MAX_INDEXED_BYTES = 512

_REQUEST_ID = re.compile(r"^[A-Za-z0-9._:-]{1,128}$")


def networks(text: str | Iterable[str] | None) -> tuple[IPNetwork, ...]:
    """Parse ``"10.0.0.0/8, 192.0.2.7"`` (or a list of such) into networks; ValueError names a bad one."""
    if not text:
        return ()
    items = text.split(",") if isinstance(text, str) else list(text)
    out: list[IPNetwork] = []
    for item in items:
        item = item.strip()
        if item:
            try:
                out.append(ipaddress.ip_network(item, strict=False))
            except ValueError:
                raise ValueError(f"{item!r} is not an IP address or CIDR range") from None
    return tuple(out)


def _ip(text: str) -> ipaddress.IPv4Address | ipaddress.IPv6Address | None:
    try:
        addr = ipaddress.ip_address(text.strip())
    except ValueError:
        return None
    if isinstance(addr, ipaddress.IPv6Address) and addr.ipv4_mapped is not None:
        return addr.ipv4_mapped
    return addr


def _within(addr: ipaddress.IPv4Address | ipaddress.IPv6Address | None, nets: Sequence[IPNetwork]) -> bool:
    return addr is not None and any(addr.version == n.version and addr in n for n in nets)


def client_ip(request: Request, trusted: Sequence[IPNetwork]) -> str:
    """The address that sent the request, believing X-Forwarded-For only from trusted proxies.

    The list is read right to left (each proxy appends the address it saw): the first hop that is
    not a trusted proxy is the client. A malformed hop stops the walk at the last trusted address.
    """
    peer = request.client.host if request.client else ""
    if not trusted:  # the common case: nothing to parse
        return peer
    current = _ip(peer)
    if not _within(current, trusted):
        return peer
    hops = [h.strip() for v in request.headers.getlist("x-forwarded-for") for h in v.split(",")]
    for hop in reversed(hops):
        addr = _ip(hop)
        if addr is None:
            break
        current = addr
        if not _within(addr, trusted):
            break
    return str(current) if current is not None else peer


def ip_allowed(ip: str, allowed: Sequence[IPNetwork]) -> bool:
    return _within(_ip(ip), allowed)


def request_id(value: str | None) -> str:
    """The caller's X-Request-Id if it is a plain token (logged and echoed), else a fresh id."""
    if value and _REQUEST_ID.match(value):
        return value
    return os.urandom(16).hex()  # 32 random hex digits, like uuid4().hex without building a UUID


def indexable(value: str | None, limit: int = MAX_INDEXED_BYTES) -> str | None:
    """``value`` if it fits ``limit`` UTF-8 bytes, else a prefix + ``…sha256:<hex of the whole>``."""
    if value is None:
        return None
    raw = value.encode("utf-8", "surrogatepass")
    if len(raw) <= limit:
        return value
    prefix = raw[: limit - 80].decode("utf-8", "ignore")
    return f"{prefix}…sha256:{hashlib.sha256(raw).hexdigest()}"


def shallow_json(body: bytes, limit: int = MAX_DEPTH) -> bool:
    """True when a JSON text cannot nest deeper than ``limit``: every level opens with ``{`` or ``[``,
    so fewer of those bytes in the whole text (strings included) bounds the depth without parsing."""
    return body.count(b"{") + body.count(b"[") <= limit


def nesting_depth(value: Any, stop: int = MAX_DEPTH) -> int:
    """Depth of nested lists/dicts, counted without recursion; stops counting past ``stop``."""
    deepest = 0
    stack: list[tuple[Any, int]] = [(value, 1)]
    while stack:
        item, depth = stack.pop()
        if isinstance(item, dict):
            children: Iterable[Any] = item.values()
        elif isinstance(item, list):
            children = item
        else:
            continue
        deepest = max(deepest, depth)
        if deepest > stop:
            return deepest
        stack.extend((c, depth + 1) for c in children)
    return deepest


@lru_cache(maxsize=256)
def _metadata_headers(provider: str, locators: tuple[str, ...]) -> frozenset[str]:
    spec = PROVIDERS[provider]
    texts = [*spec.delivery_id, *spec.event_type, *spec.occurred_at, *spec.tenant, *locators]
    names = set()
    for text in texts:
        loc = parse_locator(text)
        if loc.kind == "header":
            names.add(loc.path[0].lower())
    return frozenset(names)


_REDACT_EXACT = {
    "authorization",
    "proxy-authorization",
    "cookie",
    "set-cookie",
    "x-gitlab-token",
    "x-shopify-hmac-sha256",
    "x-square-hmacsha256-signature",
    "x-api-key",
}
_REDACT_PARTS = ("signature", "hmac", "token", "secret", "password", "auth", "key")


def is_credential(name: str) -> bool:
    lname = name.lower()
    return lname in _REDACT_EXACT or any(p in lname for p in _REDACT_PARTS)


def stored_headers(
    headers: Headers, src: Source, ordering: Sequence[str] | None, allow: frozenset[str], max_bytes: int
) -> dict[str, str]:
    """What goes into ``hookline.events.headers``: metadata headers and the allowlist, capped."""
    custom = tuple(t for v in src.overrides().values() for t in v) + tuple(ordering or ())
    signed = str(src.hmac.get("header", "")).lower() if src.hmac else ""
    keep, redact = _kept(src.provider, custom, allow, signed)
    out: dict[str, str] = {}
    for name, value in headers.pairs():
        if name not in keep:
            continue
        if name in redact:
            value = "[redacted]"
        elif len(value) * 4 > max_bytes and len(value.encode("utf-8", "surrogatepass")) > max_bytes:
            value = value.encode("utf-8", "surrogatepass")[:max_bytes].decode("utf-8", "ignore") + "…[cut]"
        out[name] = f"{out[name]}, {value}" if name in out else value
    return out


@lru_cache(maxsize=256)
def _kept(
    provider: str, custom: tuple[str, ...], allow: frozenset[str], signed: str
) -> tuple[frozenset[str], frozenset[str]]:
    """The header names a source stores, and those of them stored as ``[redacted]`` (config only)."""
    keep = _metadata_headers(provider, custom) | allow
    redact = {n for n in keep if (is_credential(n) or n == signed) and not _metadata_only_for(n, provider)}
    return keep, frozenset(redact)


def _metadata_only_for(name: str, provider: str) -> bool:
    """Headers such as I-Twilio-Idempotency-Token are ids, not credentials, despite their name."""
    return name in _metadata_headers(provider, ()) and "signature" not in name and "hmac" not in name
