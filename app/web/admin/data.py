"""What the admin API and the dashboard read: every query is a named block of ``sql/queries/admin.sql``.

Rows come back JSON-ready (timestamps as ISO-8601 strings, costs as numbers) and payloads with the
source's ``redact`` paths masked, so neither caller can leak a field by forgetting to mask it.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from app.core.config import SCHEDULE_SOURCE, Config
from app.core.querynames import AdminQuery
from app.core.sqlfiles import NamedQueries
from app.core.timeline import jsonable, load_steps

Q: NamedQueries[AdminQuery] = NamedQueries("admin", AdminQuery)

MASK = "[redacted]"
#: Largest page the list endpoints return.
MAX_LIMIT = 500


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


@dataclass(frozen=True)
class EventFilter:
    source: str | None = None
    event_type: str | None = None
    status: str | None = None
    tenant: str | None = None
    since: datetime | None = None
    until: datetime | None = None


async def list_events(conn: Any, f: EventFilter, *, before: int | None, limit: int) -> list[dict[str, Any]]:
    rows = await conn.fetch(
        Q["list_events"], f.source, f.event_type, f.status, f.tenant, f.since, f.until, before, limit
    )
    return [jsonable(r) for r in rows]


async def event_detail(conn: Any, config: Config, event_id: int) -> dict[str, Any] | None:
    """The event (payload masked), its timeline, model calls and action runs; None when absent."""
    row = await conn.fetchrow(Q["event_row"], event_id)
    if row is None:
        return None
    story = (await load_steps(conn, dict(row))).as_json()  # the hookline.event_timeline view's steps
    event = story["event"]
    raw = event["payload"]
    event["payload"] = masked_payload(config, event["source"], raw)
    hidden: set[str] = set()
    _removed(raw, event["payload"], hidden)
    if hidden:  # what the model, an action or an error repeated of a masked value is masked too
        mask = Scrubber(hidden)
        for key in ("last_error", "detail"):
            event[key] = mask(event[key])
        for step in story["timeline"]:
            step["detail"] = mask(step["detail"])
        for call in story["calls"]:
            call["output"], call["error"] = mask(call["output"]), mask(call["error"])
        for run in story["actions"]:
            run["result"], run["error"] = mask(run["result"]), mask(run["error"])
    return story


def _removed(raw: Any, masked: Any, out: set[str]) -> None:
    """Add to ``out`` every scalar of ``raw`` that masking replaced by ``[redacted]`` (as text)."""
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


def masked_payload(config: Config, source_name: str, payload: Any) -> Any:
    """``payload`` as the admin API and dashboard show it: the source's ``redact`` paths masked. A
    schedule firing's digest copies fields of other sources' events into its ``examples``: each is
    masked with its own source's paths, whether the schedule kept whole payloads or listed fields
    (``example_fields``: keys such as ``"data.object"`` holding what is under that path)."""
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


async def dead_letters(conn: Any, config: Config, *, before: int | None, limit: int) -> list[dict[str, Any]]:
    """Dead letters, their errors masked where they repeat a value of their source's ``redact`` paths
    (a model answer that failed its schema is described with the value itself)."""
    rows = [jsonable(r) for r in await conn.fetch(Q["dead_letters"], before, limit)]
    masking = [r["event_id"] for r in rows if (s := config.sources.get(r["source"])) is not None and s.redact]
    if not masking:
        return rows
    payloads = {int(r["id"]): r["payload"] for r in await conn.fetch(Q["event_payloads"], masking)}
    for row in rows:
        raw = payloads.get(row["event_id"])
        hidden: set[str] = set()
        _removed(raw, masked_payload(config, row["source"], raw), hidden)
        if hidden:
            mask = Scrubber(hidden)
            for key in ("error", "detail", "invalid_output_error"):
                row[key] = mask(row[key])
    return rows


async def status_counts(conn: Any) -> dict[str, int]:
    return {str(r["status"]): int(r["n"]) for r in await conn.fetch(Q["status_counts"])}


async def stats(conn: Any) -> dict[str, Any]:
    recent = await conn.fetchrow(Q["recent_counts"])
    return {
        "events_by_status": await status_counts(conn),
        "last_hour": jsonable(recent),
        "queue": [jsonable(r) for r in await conn.fetch(Q["queue_depth"])],
    }


async def cost(conn: Any, since: datetime, until: datetime) -> list[dict[str, Any]]:
    return [jsonable(r) for r in await conn.fetch(Q["cost"], since, until)]


async def throughput(conn: Any, minutes: int) -> list[dict[str, Any]]:
    return [dict(r) for r in await conn.fetch(Q["throughput"], minutes)]


async def events_by_ids(conn: Any, ids: Iterable[int]) -> list[dict[str, Any]]:
    return [jsonable(r) for r in await conn.fetch(Q["events_by_ids"], list(ids))]
