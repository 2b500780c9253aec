"""What the admin API and the dashboard read: every query is a named block of ``sql/queries/admin.sql``.

Rows come back JSON-ready (timestamps as ISO-8601 strings, costs as numbers) and payloads with the
source's ``redact`` paths masked (app/core/redaction.py), so neither caller can leak a field by
forgetting to mask it.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from app.core.config import Config
from app.core.querynames import AdminQuery
from app.core.redaction import Scrubber, hidden_values, masked_story, may_hide
from app.core.sqlfiles import NamedQueries
from app.core.timeline import jsonable, load_steps

Q: NamedQueries[AdminQuery] = NamedQueries("admin", AdminQuery)

#: Largest page the list endpoints return.
MAX_LIMIT = 500


@dataclass(frozen=True)
class EventFilter:
    source: str | None = None
    event_type: str | None = None
    status: str | None = None
    tenant: str | None = None
    since: datetime | None = None
    until: datetime | None = None


async def list_events(
    conn: Any, config: Config, f: EventFilter, *, before: int | None, limit: int
) -> list[dict[str, Any]]:
    """Events matching ``f``, their ``last_error`` and ``detail`` masked as the dead letters' errors are."""
    rows = await conn.fetch(
        Q["list_events"], f.source, f.event_type, f.status, f.tenant, f.since, f.until, before, limit
    )
    return await _masked(conn, config, [jsonable(r) for r in rows], "id", ("last_error", "detail"))


async def event_detail(conn: Any, config: Config, event_id: int) -> dict[str, Any] | None:
    """The event (payload masked), its timeline, model calls and action runs; None when absent. What the
    model, an action or an error repeated of a masked value is masked too (app/core/redaction.py)."""
    row = await conn.fetchrow(Q["event_row"], event_id)
    if row is None:
        return None
    story = await load_steps(conn, dict(row))  # the hookline.event_timeline view's steps
    return masked_story(config, story, row["payload"]).as_json()


async def dead_letters(conn: Any, config: Config, *, before: int | None, limit: int) -> list[dict[str, Any]]:
    """Dead letters, their errors masked where they repeat a value of their source's ``redact`` paths
    (a model answer that failed its schema is described with the value itself)."""
    rows = [jsonable(r) for r in await conn.fetch(Q["dead_letters"], before, limit)]
    return await _masked(conn, config, rows, "event_id", ("error", "detail", "invalid_output_error"))


async def _masked(
    conn: Any, config: Config, rows: list[dict[str, Any]], id_key: str, keys: tuple[str, ...]
) -> list[dict[str, Any]]:
    """``rows`` with the texts under ``keys`` masked where they repeat a value of their source's
    ``redact`` paths, read from the payloads of the rows whose source masks fields (one query)."""
    masking = [r[id_key] for r in rows if may_hide(config, r["source"])]  # a schedule firing's digest too
    if not masking:
        return rows
    payloads = {int(r["id"]): r["payload"] for r in await conn.fetch(Q["event_payloads"], masking)}
    for row in rows:
        hidden = hidden_values(config, row["source"], payloads.get(row[id_key]))
        if hidden:
            mask = Scrubber(hidden)
            for key in keys:
                row[key] = mask(row[key])
    return rows


async def status_counts(conn: Any) -> dict[str, int]:
    return {str(r["status"]): int(r["n"]) for r in await conn.fetch(Q["status_counts"])}


async def dead_letter_counts(conn: Any) -> dict[str, int]:
    """Dead letters (``open``: not dismissed) and dismissed dead events, from the trigger-kept counts."""
    row = await conn.fetchrow(Q["dead_letter_counts"])
    return {"open": int(row["open"]), "dismissed": int(row["dismissed"])}


def tiles(by_status: dict[str, int], dead_letters: dict[str, int]) -> dict[str, int]:
    """What the overview's count tiles show: events per status, except that ``dead`` counts the dead
    letters (a dismissed dead event is left out, as in ``hookline status`` and the metric)."""
    counts = dict(by_status)
    if "dead" in counts:
        counts["dead"] = dead_letters["open"]
    return counts


async def tile_counts(conn: Any) -> dict[str, int]:
    return tiles(await status_counts(conn), await dead_letter_counts(conn))


async def stats(conn: Any) -> dict[str, Any]:
    recent = await conn.fetchrow(Q["recent_counts"])
    return {
        "events_by_status": await status_counts(conn),
        "dead_letters": await dead_letter_counts(conn),
        "last_hour": jsonable(recent),
        "queue": [jsonable(r) for r in await conn.fetch(Q["queue_depth"])],
    }


async def cost(conn: Any, since: datetime, until: datetime) -> list[dict[str, Any]]:
    return [jsonable(r) for r in await conn.fetch(Q["cost"], since, until)]


async def throughput(conn: Any, minutes: int) -> list[dict[str, Any]]:
    return [dict(r) for r in await conn.fetch(Q["throughput"], minutes)]


async def events_by_ids(conn: Any, ids: Iterable[int]) -> list[dict[str, Any]]:
    return [jsonable(r) for r in await conn.fetch(Q["events_by_ids"], list(ids))]
