"""What the admin API and the dashboard read: every query is a named block of ``sql/queries/admin.sql``.

Rows come back JSON-ready (timestamps as ISO-8601 strings, costs as numbers) and payloads with the
source's ``redact`` paths masked, so neither caller can leak a field by forgetting to mask it.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from app.core.config import Config
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
    source = config.sources.get(event["source"])
    if source is not None and source.redact and event["payload"] is not None:
        event["payload"] = redact(event["payload"], source.redact)
    return story


async def dead_letters(conn: Any, *, before: int | None, limit: int) -> list[dict[str, Any]]:
    return [jsonable(r) for r in await conn.fetch(Q["dead_letters"], before, limit)]


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
