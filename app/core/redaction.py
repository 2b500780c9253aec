"""A source's ``redact`` paths, masked wherever an event is shown: the admin API and dashboard,
``hookline events show`` and ``hookline tail``; and the worker's and web's log lines about an event
(:func:`masked_values`).

The payload's paths read ``[redacted]``, and so do their values where the model's answer, an action's
result, an error or the timeline repeats them (an email action's ``to`` read from
``data.object.customer_email``). The values are found in the event's stored payload, and until payload
retention drops it the stored rows keep everything: masking is for display only. Retention
(``HOOKLINE_PAYLOAD_RETENTION_DAYS``) then leaves nothing to find them by, so before it drops the payload
the worker masks them in the rows it keeps, with :func:`hidden_values` and :class:`Scrubber` as here
(worker/retention.py, migration 0043): from then on ``llm_calls.output`` and ``error`` (and a dead
letter's kept ``response``), ``action_runs.result`` and ``error`` and ``events.last_error`` and ``detail``
hold ``[redacted]`` themselves.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import replace
from typing import Any

from app.core.config import SCHEDULE_SOURCE, Config
from app.core.querynames import ObserveQuery
from app.core.sqlfiles import NamedQueries
from app.core.timeline import EventStory, load_event_story

Q: NamedQueries[ObserveQuery] = NamedQueries("observe", ObserveQuery)

MASK = "[redacted]"


def redact(payload: Any, paths: Iterable[str]) -> Any:
    """A copy of ``payload`` with each dotted path's value replaced by ``[redacted]``.

    A path that crosses a list applies to every element (``items.email`` masks each item's email).
    """
    out = _copy(payload)
    for path in paths:
        _mask(out, path.split("."))
    return out


def _copy(v: Any) -> Any:
    if isinstance(v, dict):
        return {k: _copy(x) for k, x in v.items()}
    if isinstance(v, list):
        return [_copy(x) for x in v]
    return v


def _mask(node: Any, parts: list[str]) -> None:
    if isinstance(node, list):
        for item in node:
            _mask(item, parts)
        return
    if not isinstance(node, dict) or parts[0] not in node:
        return
    if len(parts) == 1:
        node[parts[0]] = MASK
    else:
        _mask(node[parts[0]], parts[1:])


def masked_payload(config: Config, source_name: str, payload: Any) -> Any:
    """``payload`` as an event is shown: the source's ``redact`` paths masked. A schedule firing's
    digest copies fields of other sources' events into its ``examples``: each is masked with its own
    source's paths, whether the schedule kept whole payloads or listed fields (``example_fields``: keys
    such as ``"data.object"`` holding what is under that path)."""
    if payload is None:
        return None
    source = config.sources.get(source_name)
    if source is not None and source.redact:
        payload = redact(payload, source.redact)
    if source_name != SCHEDULE_SOURCE or not isinstance(payload, dict) or not isinstance(payload.get("examples"), list):
        return payload
    payload = {**payload, "examples": [_masked_example(config, ex) for ex in payload["examples"]]}
    return payload


def _masked_example(config: Config, example: Any) -> Any:
    if not isinstance(example, dict) or example.get("fields") is None:
        return example
    source = config.sources.get(str(example.get("source")))
    if source is None or not source.redact:
        return example
    fields = redact(example["fields"], source.redact)  # a whole payload (no example_fields)
    if isinstance(fields, dict):  # listed fields: flat keys that are dotted paths themselves
        for key in list(fields):
            for path in source.redact:
                if key == path or key.startswith(path + "."):
                    fields[key] = MASK
                elif path.startswith(key + "."):
                    fields[key] = redact(fields[key], [path[len(key) + 1 :]])
    return {**example, "fields": fields}


def may_hide(config: Config, source_name: str) -> bool:
    """Whether an event of ``source_name`` can have values to mask (its source redacts, or it is a
    schedule firing whose digest may copy a redacting source's fields)."""
    if source_name == SCHEDULE_SOURCE:
        return any(s.redact for s in config.sources.values())
    source = config.sources.get(source_name)
    return source is not None and bool(source.redact)


def hidden_values(config: Config, source_name: str, payload: Any) -> set[str]:
    """Every scalar of ``payload`` (as text) that :func:`masked_payload` replaces by ``[redacted]``."""
    out: set[str] = set()
    _removed(payload, masked_payload(config, source_name, payload), out)
    return out


def _removed(raw: Any, masked: Any, out: set[str]) -> None:
    if isinstance(masked, str) and masked == MASK and raw != MASK:
        _leaves(raw, out)
    elif isinstance(raw, dict) and isinstance(masked, dict):
        for key, value in raw.items():
            if key in masked:
                _removed(value, masked[key], out)
    elif isinstance(raw, list) and isinstance(masked, list):
        for a, b in zip(raw, masked, strict=False):
            _removed(a, b, out)


def _leaves(value: Any, out: set[str]) -> None:
    if isinstance(value, dict):
        for v in value.values():
            _leaves(v, out)
    elif isinstance(value, list):
        for v in value:
            _leaves(v, out)
    elif isinstance(value, str | int | float) and not isinstance(value, bool) and str(value).strip():
        out.add(str(value))


class Scrubber:
    """Masks the values of redacted paths where they turn up again: a string or number equal to one
    becomes ``[redacted]``, and a value of ``MIN_INSIDE`` characters or more is masked inside longer
    text as well (a shorter one would mask every word it is part of)."""

    MIN_INSIDE = 3

    def __init__(self, values: set[str]) -> None:
        self._exact = values
        self._inside = sorted((v for v in values if len(v) >= self.MIN_INSIDE), key=len, reverse=True)

    def __call__(self, value: Any) -> Any:
        if isinstance(value, dict):
            return {k: self(v) for k, v in value.items()}
        if isinstance(value, list):
            return [self(v) for v in value]
        if isinstance(value, bool) or not isinstance(value, str | int | float):
            return value
        text = str(value)
        if text in self._exact:
            return MASK
        if not isinstance(value, str):
            return value
        for hidden in self._inside:
            value = value.replace(hidden, MASK)
        return value


def masked_values(config: Config, source_name: str, payload: Any, value: Any) -> Any:
    """``value`` about an event of ``source_name`` (an error, an answer) with the values of ``payload``
    that its ``redact`` paths hide masked as :class:`Scrubber` does: what the worker and web log about an
    event (the stored rows keep them, masked when shown)."""
    if not may_hide(config, source_name):
        return value
    hidden = hidden_values(config, source_name, payload)
    return Scrubber(hidden)(value) if hidden else value


def masked_text(config: Config, source_name: str, payload: Any, text: str) -> str:
    """:func:`masked_values` of a text."""
    return str(masked_values(config, source_name, payload, text))


def masked_story(config: Config, story: EventStory, payload: Any) -> EventStory:
    """``story`` as it is shown: its payload (when the event row carries one) masked, and the masked
    values masked where the event's detail or last error, a timeline step, a model call's answer or
    error, or an action's result or error repeats them. ``payload`` is the event's stored payload."""
    source = str(story.event["source"])
    event = dict(story.event)
    if "payload" in event:
        event["payload"] = masked_payload(config, source, event["payload"])
    hidden = hidden_values(config, source, payload)
    if not hidden:
        return replace(story, event=event)
    mask = Scrubber(hidden)
    for key in ("last_error", "detail"):
        if key in event:
            event[key] = mask(event[key])
    return EventStory(
        event=event,
        timeline=[{**s, "detail": mask(s["detail"])} for s in story.timeline],
        calls=[{**c, "output": mask(c["output"]), "error": mask(c["error"])} for c in story.calls],
        actions=[{**a, "result": mask(a["result"]), "error": mask(a["error"])} for a in story.actions],
    )


async def load_shown_story(conn: Any, config: Config, event_id: int) -> EventStory | None:
    """:func:`app.core.timeline.load_event_story`, masked as :func:`masked_story` says (the payload is
    read only for an event that may have something to mask); None when there is no such event."""
    story = await load_event_story(conn, event_id)
    if story is None or not may_hide(config, str(story.event["source"])):
        return story
    payload = await conn.fetchval(Q["event_payload"], event_id)
    return masked_story(config, story, payload)
