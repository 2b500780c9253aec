"""Failed token attempts per client address: the admin token (API bearer, dashboard bearer, the login
form) and ``HOOKLINE_METRICS_TOKEN``, in this web process's memory.

An address that sends ``LIMIT`` wrong tokens within ``WINDOW_SECONDS`` (counted from its first failure)
gets ``429`` with ``Retry-After`` for every further token it presents, right or wrong, until that
window has passed. Requests with the right token are neither counted nor slowed while the address is
under the limit. The address is :func:`app.web.guard.client_ip`'s (``HOOKLINE_TRUSTED_PROXIES``).
Loopback addresses are never counted: the machine's own scripts and health checks, and a reverse proxy
on the same machine that ``HOOKLINE_TRUSTED_PROXIES`` does not name, whose one address every client
would otherwise share (one client's wrong tokens would shut out all the others).

Per process, like the ingest rate limits (app/web/ratelimit.py): with N web processes an address may
try up to N × ``LIMIT`` tokens per window. Bounded: at most ``MAX_ADDRESSES`` addresses are remembered;
when full, the addresses whose window has passed go first, then the oldest window, so an attacker
rotating addresses cannot grow memory without limit.
"""

from __future__ import annotations

import ipaddress
import math
import time

from app.core.errors import RateLimited

#: Wrong tokens one address may send within WINDOW_SECONDS.
LIMIT = 10
WINDOW_SECONDS = 60.0
#: Most addresses remembered (about 200 bytes each: 2 MB when full).
MAX_ADDRESSES = 10_000


class FailedAttempts:
    """Wrong tokens per address: ``address → [window start (monotonic), failures]``, kept in the order
    their windows began (a new window re-inserts), so expired entries are always at the front."""

    def __init__(self, limit: int = LIMIT, window: float = WINDOW_SECONDS, max_addresses: int = MAX_ADDRESSES) -> None:
        self.limit = limit
        self.window = window
        self.max_addresses = max_addresses
        self._seen: dict[str, list[float]] = {}

    def __len__(self) -> int:
        return len(self._seen)

    def retry_after(self, address: str, now: float | None = None) -> int:
        """0 when ``address`` may present a token, else the whole seconds until it may again."""
        t = time.monotonic() if now is None else now
        entry = self._seen.get(address)
        if entry is None or entry[1] < self.limit:
            return 0
        left = entry[0] + self.window - t
        return max(1, math.ceil(left)) if left > 0 else 0

    def check(self, address: str, now: float | None = None) -> None:
        """429 (``rate_limited``, ``Retry-After``) while ``address`` is over the limit."""
        wait = self.retry_after(address, now)
        if wait:
            raise RateLimited(too_many(wait), headers={"Retry-After": str(wait)})

    def failed(self, address: str, now: float | None = None) -> None:
        """Count one wrong token from ``address`` (not from a loopback address)."""
        if is_loopback(address):
            return
        t = time.monotonic() if now is None else now
        entry = self._seen.get(address)
        if entry is not None and t - entry[0] < self.window:
            entry[1] += 1
            return
        self._seen.pop(address, None)
        self._forget(t)
        self._seen[address] = [t, 1.0]

    def _forget(self, now: float) -> None:
        """Drop the addresses whose window has passed, then the oldest while there is no room."""
        while self._seen:
            oldest = next(iter(self._seen))
            if now - self._seen[oldest][0] < self.window and len(self._seen) < self.max_addresses:
                return
            del self._seen[oldest]


def is_loopback(address: str) -> bool:
    """``127.0.0.0/8`` or ``::1`` (and IPv4-mapped loopback); False for anything that is not an address."""
    try:
        ip = ipaddress.ip_address(address)
    except ValueError:
        return False
    mapped = getattr(ip, "ipv4_mapped", None)
    return bool(ip.is_loopback or (mapped is not None and mapped.is_loopback))


def too_many(wait: int) -> str:
    """The sentence of a refused attempt (JSON detail and the login page alike)."""
    return f"too many failed token attempts from this address; try again in {wait} s"
