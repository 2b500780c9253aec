"""Routing without the model: a pipeline's ``when`` expression decides whether an event reaches it.

The expression runs in the template sandbox (:func:`app.core.templates.evaluate`) over ``payload``
and ``event`` (``id``, ``source``, ``type``, ``tenant``, ``occurred_at``). A missing key or a type
error does not crash the event: the pipeline does not apply, and the reason is kept.
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import datetime
from typing import Any

from app.core import templates
from app.core.config import Pipeline


def passes(pipeline: Pipeline, event: Mapping[str, Any]) -> tuple[bool, str | None]:
    """``(True, None)`` when the event passes ``when`` (or there is none); else ``(False, why)``."""
    if pipeline.when is None:
        return True, None
    occurred = event.get("occurred_at")
    names = {
        "payload": event.get("payload"),
        "event": {
            "id": event.get("id"),
            "source": event.get("source"),
            "type": event.get("event_type"),
            "tenant": event.get("tenant"),
            "occurred_at": occurred.isoformat() if isinstance(occurred, datetime) else occurred,
        },
    }
    try:
        result = templates.evaluate(pipeline.when, names)
    except templates.TemplateRenderError as e:
        return False, str(e)
    return (True, None) if result else (False, "when is false")


def route(pipelines: list[Pipeline], event: Mapping[str, Any]) -> tuple[list[Pipeline], list[str]]:
    """The pipelines whose ``when`` the event passes, and why each other one does not apply."""
    kept: list[Pipeline] = []
    reasons: list[str] = []
    for p in pipelines:
        ok, why = passes(p, event)
        if ok:
            kept.append(p)
        else:
            reasons.append(f"pipeline {p.name}: {why}")
    return kept, reasons
