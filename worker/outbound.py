"""Outbound HTTP allowlist: every request the worker's HTTP client sends is checked here.

The hook sits on the client itself (``Runtime.http``), so every action type that speaks HTTP, now
or later, is covered, and redirects are not followed. Targets already come only from
configuration (``url_env`` and the like); the allowlist (``HOOKLINE_OUTBOUND_ALLOWED_HOSTS``)
bounds what a mistaken or compromised configuration value can reach.

Entries: ``host`` (any port), ``host:port``, ``*.example.com`` (subdomains, not the apex).
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable

import httpx

from worker.errors import PermanentError


def parse_allowlist(text: str | None) -> tuple[str, ...] | None:
    """None when unset (no extra restriction), else the lower-cased entries."""
    if text is None or not text.strip():
        return None
    return tuple(e.strip().lower().rstrip(".") for e in text.split(",") if e.strip())


def host_allowed(url: httpx.URL, allowed: tuple[str, ...]) -> bool:
    host = (url.host or "").lower().rstrip(".")
    port = url.port or (443 if url.scheme == "https" else 80)
    for entry in allowed:
        name, want_port = _host_and_port(entry)
        if want_port and want_port.isdigit() and int(want_port) != port:
            continue
        if name.startswith("*."):
            if host.endswith(name[1:]) and host != name[2:]:
                return True
        elif host == name:
            return True
    return False


def _host_and_port(entry: str) -> tuple[str, str]:
    """``host``, ``host:port``, an IPv6 address alone (``::1``) or with a port in brackets (``[::1]:8443``)."""
    if entry.startswith("["):
        host, _, rest = entry[1:].partition("]")
        return host, rest[1:] if rest.startswith(":") else ""
    if entry.count(":") == 1:
        host, _, port = entry.partition(":")
        return host, port
    return entry, ""


def outbound_guard(allowed: tuple[str, ...] | None) -> Callable[[httpx.Request], Awaitable[None]]:
    """An httpx request hook refusing hosts outside ``allowed`` (a permanent error: no retry)."""

    async def check(request: httpx.Request) -> None:
        if allowed is not None and not host_allowed(request.url, allowed):
            raise PermanentError(
                f"outbound request to {request.url.host}:{request.url.port or request.url.scheme} refused: "
                "not in HOOKLINE_OUTBOUND_ALLOWED_HOSTS"
            )

    return check
