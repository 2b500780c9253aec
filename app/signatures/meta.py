"""Delivery id, event type, occurrence time and tenant of a verified delivery.

Defaults come from :data:`~app.signatures.specs.PROVIDERS`; ``overrides`` replace one key's
locators (and switch off that key's provider rule). Provider rules, applied on top of the
locators when the key is not overridden:

- event type joined with the payload's action, ``<event>.<action>`` when an action is present:
  GitHub (``X-GitHub-Event`` + ``action`` → ``issues.opened``; ``push`` stays ``push``), GitLab
  (``object_kind`` + ``object_attributes.action`` → ``merge_request.open``), Linear (``type`` +
  ``action`` → ``Issue.create``), Sentry (``Sentry-Hook-Resource`` + ``action`` → ``issue.created``).
- Slack: ``event.type`` for ``event_callback`` envelopes, else the top-level ``type``.
- Meta/WhatsApp: a message's ``wamid`` is the delivery id; a status update (same ``wamid`` for
  sent/delivered/read) gets ``<wamid>:<status>`` and the event type ``statuses``.
- Calendly: ``<event>:<payload.uri>`` (created and canceled share the invitee URI).
- Zoom: ``x-zm-trackingid`` when sent, else ``<event>:<event_ts>[:<payload.object.uuid|id>]``.
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from ._base import (
    Headers,
    HeadersInput,
)
from ._time import parse_iso
from .locators import Locator, first, parse_locators, scalar_text, walk
from .specs import get_spec

KEYS = ("delivery_id", "event_type", "occurred_at", "tenant")


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


def _join_action(action_path: tuple[str, ...]) -> Callable[[Headers, Any, str | None], str | None]:
    def rule(_headers: Headers, payload: Any, base: str | None) -> str | None:
        action = scalar_text(walk(payload, action_path))
        if base and action:
            return f"{base}.{action}"
        return base

    return rule


def _slack_type(_headers: Headers, payload: Any, base: str | None) -> str | None:
    if isinstance(payload, dict) and payload.get("type") == "event_callback":
        return scalar_text(walk(payload, ("event", "type"))) or "event_callback"
    return scalar_text(walk(payload, ("type",))) or base


_WA_VALUE = ("entry", "0", "changes", "0", "value")


def _wa_status(payload: Any) -> tuple[str, str] | None:
    status = walk(payload, (*_WA_VALUE, "statuses", "0"))
    if walk(payload, (*_WA_VALUE, "messages", "0")) is None and isinstance(status, dict):
        sid, state = scalar_text(status.get("id")), scalar_text(status.get("status"))
        if sid and state:
            return sid, state
    return None


def _wa_delivery(_headers: Headers, payload: Any, base: str | None) -> str | None:
    status = _wa_status(payload)
    return f"{status[0]}:{status[1]}" if status else base


def _wa_type(_headers: Headers, payload: Any, base: str | None) -> str | None:
    return "statuses" if _wa_status(payload) else base


def _calendly_delivery(_headers: Headers, payload: Any, base: str | None) -> str | None:
    event = scalar_text(walk(payload, ("event",)))
    return f"{event}:{base}" if event and base else base


def _zoom_delivery(headers: Headers, payload: Any, base: str | None) -> str | None:
    if base:
        return base
    event, ts = scalar_text(walk(payload, ("event",))), scalar_text(walk(payload, ("event_ts",)))
    if not (event and ts):
        return None
    obj = scalar_text(walk(payload, ("payload", "object", "uuid"))) or scalar_text(
        walk(payload, ("payload", "object", "id"))
    )
    return f"{event}:{ts}:{obj}" if obj else f"{event}:{ts}"


Rule = Callable[[Headers, Any, str | None], str | None]
_RULES: Mapping[tuple[str, str], Rule] = {
    ("github", "event_type"): _join_action(("action",)),
    ("gitlab", "event_type"): _join_action(("object_attributes", "action")),
    ("linear", "event_type"): _join_action(("action",)),
    ("sentry", "event_type"): _join_action(("action",)),
    ("slack", "event_type"): _slack_type,
    ("meta_whatsapp", "delivery_id"): _wa_delivery,
    ("meta_whatsapp", "event_type"): _wa_type,
    ("calendly", "delivery_id"): _calendly_delivery,
    ("zoom", "delivery_id"): _zoom_delivery,
}


@functools.cache
def _defaults(provider: str, key: str) -> tuple[Locator, ...]:
    return parse_locators(list(getattr(get_spec(provider), key)))


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
    delivery id)."""
    spec = get_spec(provider)
    custom = parse_overrides(overrides)
    hdrs = headers if isinstance(headers, Headers) else Headers(headers)
    found: dict[str, str | None] = {}
    for key in KEYS:
        if key in custom:
            found[key] = first(custom[key], hdrs, payload)
            continue
        value = first(_defaults(spec.name, key), hdrs, payload)
        rule = _RULES.get((provider, key))
        found[key] = rule(hdrs, payload, value) if rule else value
    occurred = found["occurred_at"]
    return EventMeta(
        delivery_id=found["delivery_id"],
        event_type=found["event_type"],
        occurred_at=parse_timestamp(occurred) if occurred is not None else None,
        tenant=found["tenant"],
    )
