"""Timestamps: parsing what senders put in headers and the tolerance window."""

from __future__ import annotations

import re
from datetime import UTC, datetime

from ._base import SignatureError

_INT_RE = re.compile(r"^[0-9]{1,19}$")


def parse_unix(value: str, what: str = "timestamp") -> int:
    """Parse an integer unix timestamp from a header; anything else is ``malformed_header``."""
    if not _INT_RE.match(value.strip()):
        raise SignatureError("malformed_header", f"{what} is not an integer")
    return int(value.strip())


def check_window(ts: float, now: float, tolerance: int | None) -> None:
    """Reject a *signed* timestamp outside ``[now - tolerance, now + tolerance]``.

    Both directions, for every scheme (see the package docstring for why Stripe and Paddle, whose
    SDKs only check the past, are treated the same way).
    """
    if tolerance is None:
        return
    if ts < now - tolerance:
        raise SignatureError("timestamp_expired")
    if ts > now + tolerance:
        raise SignatureError("timestamp_in_future")


def parse_iso(value: str) -> datetime | None:
    """ISO-8601 / RFC 3339 (nanoseconds truncated, ``Z`` accepted) → tz-aware UTC, else None."""
    text = value.strip()
    if not text or len(text) > 64 or not text[:1].isdigit():
        return None
    try:
        parsed = datetime.fromisoformat(text)
        if parsed.tzinfo is None:
            parsed = parsed.replace(tzinfo=UTC)
        parsed = parsed.astimezone(UTC)
        parsed.timestamp()  # 0001-01-01T00:00:00+01:00 is year 0 in UTC: not representable
    except (ValueError, OverflowError):  # e.g. 9999-12-31T23:59:59-01:00 is past year 9999 in UTC
        return None
    return parsed


def parse_signed_iso(value: str, what: str) -> float:
    parsed = parse_iso(value)
    if parsed is None:
        raise SignatureError("malformed_header", f"{what} is not an RFC 3339 timestamp")
    return parsed.timestamp()
