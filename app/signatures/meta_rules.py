"""Metadata rules: values computed on top of a provider's locators (see :class:`~.provider.Provider`).

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

from typing import Any

from ._base import Headers
from .locators import scalar_text, walk
from .provider import Rule


def join_action(action_path: tuple[str, ...]) -> Rule:
    def rule(_headers: Headers, payload: Any, base: str | None) -> str | None:
        action = scalar_text(walk(payload, action_path))
        if base and action:
            return f"{base}.{action}"
        return base

    return rule


def slack_type(_headers: Headers, payload: Any, base: str | None) -> str | None:
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


def wa_delivery(_headers: Headers, payload: Any, base: str | None) -> str | None:
    status = _wa_status(payload)
    return f"{status[0]}:{status[1]}" if status else base


def wa_type(_headers: Headers, payload: Any, base: str | None) -> str | None:
    return "statuses" if _wa_status(payload) else base


def calendly_delivery(_headers: Headers, payload: Any, base: str | None) -> str | None:
    event = scalar_text(walk(payload, ("event",)))
    return f"{event}:{base}" if event and base else base


def zoom_delivery(headers: Headers, payload: Any, base: str | None) -> str | None:
    if base:
        return base
    event, ts = scalar_text(walk(payload, ("event",))), scalar_text(walk(payload, ("event_ts",)))
    if not (event and ts):
        return None
    obj = scalar_text(walk(payload, ("payload", "object", "uuid"))) or scalar_text(
        walk(payload, ("payload", "object", "id"))
    )
    return f"{event}:{ts}:{obj}" if obj else f"{event}:{ts}"
