"""Delivery id, event type, occurrence time and tenant of a verified delivery.

Defaults come from each provider's record in :data:`~app.signatures.registry.PROVIDERS`: its
locators, then its rules (:mod:`app.signatures.meta_rules`) on top. ``overrides`` replace one key's
locators (and switch off that key's provider rule).
"""

from __future__ import annotations

import functools
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from ._base import (
    Headers,
    HeadersInput,
)
from ._time import parse_iso
from .locators import InexactNumber, Locator, first, parse_locators
from .provider import META_KEYS
from .registry import get_provider

KEYS = META_KEYS


class MetaError(ValueError):
    """Metadata configuration or extraction problem; the message is safe to show a user."""


@dataclass(frozen=True)
class EventMeta:
    delivery_id: str | None
    event_type: str | None
    occurred_at: datetime | None  # tz-aware UTC
    tenant: str | None


def parse_timestamp(value: Any) -> datetime | None:
    """Unix seconds / ms / µs / ns (by magnitude) or ISO-8601/RFC 3339 → aware UTC, else None."""
    if isinstance(value, bool) or value is None:
        return None
    number: float | None = None
    if isinstance(value, int | float):
        number = float(value)
    elif isinstance(value, str):
        text = value.strip()
        try:
            number = float(text) if text and text.replace(".", "", 1).isdigit() else None
        except ValueError:  # pragma: no cover - guarded by isdigit
            number = None
        if number is None:
            return parse_iso(text)
    if number is None or number < 0:
        return None
    for limit, scale in ((1e11, 1.0), (1e14, 1e3), (1e17, 1e6), (1e20, 1e9)):
        if number < limit:
            try:
                return datetime.fromtimestamp(number / scale, UTC)
            except (OverflowError, OSError, ValueError):
                return None
    return None


@functools.cache
def _defaults(provider: str, key: str) -> tuple[Locator, ...]:
    return parse_locators(list(get_provider(provider).locators(key)))


def parse_overrides(
    overrides: Mapping[str, str | Sequence[str]] | None,
) -> dict[str, tuple[Locator, ...]]:
    """Validate ``overrides`` (config time); raises :class:`MetaError` naming the bad key."""
    parsed: dict[str, tuple[Locator, ...]] = {}
    for key, value in (overrides or {}).items():
        if key not in KEYS:
            raise MetaError(f"unknown metadata key {key!r}; use one of {', '.join(KEYS)}")
        try:
            parsed[key] = parse_locators(value)
        except ValueError as exc:
            raise MetaError(f"{key}: {exc}") from None
    return parsed


def extract_meta(
    provider: str,
    *,
    headers: HeadersInput | Headers,
    payload: Any,
    overrides: Mapping[str, str | Sequence[str]] | None = None,
) -> EventMeta:
    """Pull the four metadata fields out of a (verified, parsed) delivery. Never raises for a
    payload that lacks them: missing values are None, and the caller decides (e.g. 400 without a
    delivery id). Raises :class:`MetaError` for a delivery id that is not exact (a float)."""
    record = get_provider(provider)
    custom = parse_overrides(overrides)
    hdrs = headers if isinstance(headers, Headers) else Headers(headers)
    found: dict[str, str | None] = {}
    try:
        for key in KEYS:
            exact = key == "delivery_id"  # dedup rests on it: no two deliveries may share one
            if key in custom:
                found[key] = first(custom[key], hdrs, payload, exact)
                continue
            value = first(_defaults(record.name, key), hdrs, payload, exact)
            rule = record.rules.get(key)
            found[key] = rule(hdrs, payload, value) if rule else value
    except InexactNumber as e:
        raise MetaError(
            f"the delivery id ({e}) is a number with a fraction or an exponent, which is not an exact value "
            "once parsed (distinct ones can read the same); send it as a string or an integer"
        ) from None
    occurred = found["occurred_at"]
    return EventMeta(
        delivery_id=found["delivery_id"],
        event_type=found["event_type"],
        occurred_at=parse_timestamp(occurred) if occurred is not None else None,
        tenant=found["tenant"],
    )
