"""Synchronous replies: the ``respond*`` keys of ``[pipelines.NAME]``, checked at config load.

A pipeline with ``respond = "sync"`` answers the webhook's HTTP request itself: the handler stores
the event as usual, waits up to ``respond_timeout_ms`` for the model's answer and replies with
``respond_body`` rendered over it (or ``respond_default`` when time runs out). Both are templates of
:mod:`app.core.templates`, compiled here so that a syntax error names its key.

At most one sync pipeline may match any event: two sync pipelines of one source whose ``events``
patterns overlap are refused (a request has exactly one reply).
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any, Literal, Protocol

from app.core import templates


class Pipeline(Protocol):
    """What these checks read of ``app.core.config.pipelines.Pipeline`` (a Protocol: no import cycle)."""

    @property
    def sync(self) -> bool: ...
    @property
    def model_fields_set(self) -> set[str]: ...

    @property
    def source(self) -> str: ...
    @property
    def events(self) -> tuple[str, ...]: ...
    @property
    def respond_content_type(self) -> str: ...
    @property
    def respond_body(self) -> Any: ...
    @property
    def respond_default(self) -> Any: ...


RESPOND_CONTENT_TYPES = Literal["application/json", "application/xml", "text/xml", "text/plain"]

#: Keys that only mean something with ``respond = "sync"``.
_SYNC_ONLY = ("respond_timeout_ms", "respond_default", "respond_body", "respond_content_type")


def escape_for(content_type: str) -> templates.Escape:
    """XML replies (TwiML) autoescape what the templates insert; JSON is built leaf by leaf."""
    return "xml" if content_type.endswith("/xml") else "none"


def check_respond(p: Pipeline) -> None:
    if not p.sync:
        stray = [k for k in _SYNC_ONLY if k in p.model_fields_set]
        if stray:
            raise ValueError(f'{stray[0]}: only used with respond = "sync"')
        return
    if p.source == "db":
        raise ValueError('respond: a watched table (source "db") has no HTTP request to answer; use "async"')
    escape = escape_for(p.respond_content_type)
    for key in ("respond_body", "respond_default"):
        value = getattr(p, key)
        if value is None:
            if p.respond_content_type != "application/json":
                raise ValueError(f"{key}: required with respond_content_type = {p.respond_content_type!r}")
            continue
        if p.respond_content_type != "application/json" and not isinstance(value, str):
            raise ValueError(f"{key}: must be a string (a template) for {p.respond_content_type}")
        try:
            json.dumps(value)
        except (TypeError, ValueError):
            raise ValueError(f"{key}: holds a value that is not JSON (dates and times are not)") from None
        try:
            templates.check_value(value, escape)
        except ValueError as e:
            raise ValueError(f"{key}: {e}") from None


def _overlap(a: str, b: str) -> bool:
    """Can one event type match both ``events`` patterns (``*``, ``prefix.*`` or exact)?"""
    if a == "*" or b == "*":
        return True
    pa, pb = a.endswith(".*"), b.endswith(".*")
    if pa and pb:
        return a[:-1].startswith(b[:-1]) or b[:-1].startswith(a[:-1])
    if pa:
        return b.startswith(a[:-1])
    if pb:
        return a.startswith(b[:-1])
    return a == b


def check_sync_overlaps(pipelines: Mapping[str, Pipeline]) -> None:
    """Refuse two sync pipelines that could both answer one request."""
    sync = [(n, p) for n, p in pipelines.items() if p.sync]
    for i, (name, p) in enumerate(sync):
        for other, q in sync[i + 1 :]:
            if p.source != q.source:
                continue
            pair = next(((a, b) for a in p.events for b in q.events if _overlap(a, b)), None)
            if pair is not None:
                raise ValueError(
                    f'pipelines.{other}.respond: pipelines.{name} is also respond = "sync" for source '
                    f"{p.source!r} and their events overlap ({pair[0]!r} and {pair[1]!r}); "
                    "a request has one reply, so at most one sync pipeline may match an event"
                )
