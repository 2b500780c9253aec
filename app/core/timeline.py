"""One event's story: its row, the ``hookline.event_timeline`` steps, its model calls and action runs.

Shared by ``hookline events show`` and the admin API: both call :func:`load_event_story` with an
asyncpg connection or pool (anything with ``fetchrow``/``fetch``, json codecs as ``app.core.db`` sets
them) and render :meth:`EventStory.as_json`.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from decimal import Decimal
from typing import Any

from app.core.querynames import ObserveQuery
from app.core.sqlfiles import NamedQueries

Q: NamedQueries[ObserveQuery] = NamedQueries("observe", ObserveQuery)


@dataclass(frozen=True)
class EventStory:
    event: dict[str, Any]
    timeline: list[dict[str, Any]]
    calls: list[dict[str, Any]]
    actions: list[dict[str, Any]]

    def as_json(self) -> dict[str, Any]:
        """JSON-ready: timestamps as ISO-8601, costs as numbers."""
        return {
            "event": jsonable(self.event),
            "timeline": [jsonable(s) for s in self.timeline],
            "calls": [jsonable(c) for c in self.calls],
            "actions": [jsonable(a) for a in self.actions],
        }

    @property
    def tokens(self) -> tuple[int, int]:
        """(input, output) tokens over every call."""
        return (
            sum(int(c["input_tokens"] or 0) for c in self.calls),
            sum(int(c["output_tokens"] or 0) for c in self.calls),
        )

    @property
    def cost_usd(self) -> Decimal:
        return sum((Decimal(c["cost_usd"]) for c in self.calls if c["cost_usd"] is not None), Decimal(0))


def jsonable(row: dict[str, Any]) -> dict[str, Any]:
    return {k: _value(v) for k, v in row.items()}


def _value(v: Any) -> Any:
    if isinstance(v, datetime):
        return v.isoformat()
    if isinstance(v, Decimal):
        return float(v)
    return v


async def load_event_story(conn: Any, event_id: int) -> EventStory | None:
    """The event's story, or None when there is no such event."""
    event = await conn.fetchrow(Q["event_detail"], event_id)
    if event is None:
        return None
    return await load_steps(conn, dict(event))


async def load_steps(conn: Any, event: dict[str, Any]) -> EventStory:
    """The story of an event row already read (``event`` needs its ``id``): the view's timeline, the
    model calls and the action runs. The admin API reads its own row (with the payload, to redact)."""
    event_id = event["id"]
    return EventStory(
        event=event,
        timeline=[dict(r) for r in await conn.fetch(Q["event_timeline"], event_id)],
        calls=[dict(r) for r in await conn.fetch(Q["event_calls"], event_id)],
        actions=[dict(r) for r in await conn.fetch(Q["event_actions"], event_id)],
    )
