"""``/admin/api``: JSON for operators and scripts, behind ``Authorization: Bearer $HOOKLINE_ADMIN_TOKEN``.

Lists are newest first and keyset-paginated on id: pass a page's ``next_cursor`` as ``cursor`` to get
the next one (``null`` on the last page). Errors are ``{"error": code, "detail": …}`` like the rest of
the HTTP API. ``app/web/openapi.py`` describes every route here; keep the two in step.
"""

from __future__ import annotations

import functools
import json
import re
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime, timedelta
from typing import Any

import asyncpg
from starlette.datastructures import QueryParams
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from app.core.errors import BadRequest, Conflict, DatabaseUnavailable, MissingGrant, NotFound, PayloadTooLarge
from app.core.status import EventStatus
from app.web.admin import data
from app.web.admin.auth import require_bearer
from app.web.guard import client_ip
from app.web.responses import DB_UNAVAILABLE, json_response, needs_grant, private
from app.web.state import AppState

Handler = Callable[[Request, AppState], Awaitable[Response]]
REPLAYABLE = ("succeeded", "dead", "skipped")
#: hookline.events.dismissed_by of a dismissal made through the API (the dashboard's: "dashboard").
BY_API = "admin api"
MIN_TIME = datetime(1, 1, 2, tzinfo=UTC)
MAX_TIME = datetime(9998, 12, 31, tzinfo=UTC)
MAX_BODY_BYTES = 64 * 1024
BIGINT = 2**63 - 1


def guarded(handler: Handler) -> Callable[[Request], Awaitable[Response]]:
    """Bearer check, then the handler with the app state; database trouble becomes 503/404/409/400.
    The answer is never cached (``Cache-Control: no-store``)."""

    @functools.wraps(handler)
    async def endpoint(request: Request) -> Response:
        state: AppState = request.state.hookline
        assert state.settings.admin_token is not None  # routes exist only when it is set
        address = client_ip(request, state.trusted_proxies)
        require_bearer(request, state.settings.admin_token.get_secret_value(), state.admin_attempts, address)
        return private(await run_db(state, lambda: handler(request, state), write=request.method == "POST"))

    return endpoint


#: What a refused privilege means, by whether the request writes (replay, dismiss) or only reads.
NEEDS_GRANT = {
    True: needs_grant("hookline_worker", "replay or dismiss events"),
    False: needs_grant("hookline_readonly", "read what the admin pages show"),
}


async def run_db(state: AppState, call: Callable[[], Awaitable[Response]], *, write: bool = False) -> Response:
    """``call``, with the database's refusals as HTTP errors. ``write``: the request replays or dismisses,
    which decides the grant a missing privilege names (never the database's own message)."""
    try:
        return await call()
    except asyncpg.InsufficientPrivilegeError:
        raise MissingGrant(NEEDS_GRANT[write]) from None
    except asyncpg.NoDataFoundError as e:
        raise NotFound(_pg_message(e)) from None
    except asyncpg.ObjectNotInPrerequisiteStateError as e:
        raise Conflict(_pg_message(e)) from None
    except asyncpg.InvalidParameterValueError as e:
        raise BadRequest(_pg_message(e)) from None
    except DB_UNAVAILABLE:
        raise DatabaseUnavailable(
            "the event store is unavailable; retry later",
            headers={"Retry-After": str(state.settings.retry_after_seconds)},
        ) from None


def _pg_message(e: Exception) -> str:
    return str(e).removeprefix("hookline.replay: ").removeprefix("hookline.dismiss: ")


# -- parameters ----------------------------------------------------------------------------------


def parse_time(name: str, value: str | None) -> datetime | None:
    """ISO-8601; a time without an offset is UTC. Absent is None; an empty value is an error."""
    if value is None:
        return None
    try:
        t = datetime.fromisoformat(value)
        t = (t if t.tzinfo is not None else t.replace(tzinfo=UTC)).astimezone(UTC)
        if not MIN_TIME <= t <= MAX_TIME:
            raise ValueError("out of range")
    except (ValueError, OverflowError):
        raise BadRequest(f"{name}: an ISO-8601 time between years 1 and 9998 (e.g. 2026-01-31T12:00:00Z)") from None
    return t


def parse_int(name: str, value: str | None, *, default: int | None, low: int, high: int) -> int | None:
    if value is None:
        return default
    if not re.fullmatch(r"[0-9]{1,19}", value) or not low <= int(value) <= high:
        raise BadRequest(f"{name}: an integer from {low} to {high}")
    return int(value)


def parse_status(value: str | None, allowed: tuple[str, ...] = tuple(EventStatus)) -> str | None:
    if value is None or value == "":
        return None
    if value not in allowed:
        raise BadRequest(f"status: one of {', '.join(allowed)}")
    return value


def clean(name: str, value: Any) -> str | None:
    """A text filter as Postgres can take it (no NUL, valid UTF-8), or None when empty."""
    if value is None or value == "":
        return None
    if not isinstance(value, str):
        raise BadRequest(f"{name}: a string")
    if "\x00" in value or len(value) > 1000:
        raise BadRequest(f"{name}: no NUL characters, at most 1000 characters")
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:
        raise BadRequest(f"{name}: not valid Unicode text") from None
    return value


def event_filter(params: Any) -> data.EventFilter:
    return data.EventFilter(
        source=clean("source", params.get("source")),
        event_type=clean("type", params.get("type")),
        status=parse_status(params.get("status")),
        tenant=clean("tenant", params.get("tenant")),
        since=parse_time("since", params.get("since")),
        until=parse_time("until", params.get("until")),
    )


def page(items: list[dict[str, Any]], limit: int, key: str) -> tuple[list[dict[str, Any]], str | None]:
    """One page of ``items`` (fetched with ``limit + 1``) and its ``next_cursor``: None when nothing
    follows, so a last page that is exactly full says so too."""
    if len(items) <= limit:
        return items, None
    items = items[:limit]
    return items, str(items[-1][key])


async def json_body(request: Request) -> dict[str, Any]:
    raw = await request.body()
    if len(raw) > MAX_BODY_BYTES:
        raise PayloadTooLarge(f"the body is larger than {MAX_BODY_BYTES} bytes")
    if not raw.strip():
        return {}
    if "json" not in request.headers.get("content-type", "application/json"):
        raise BadRequest("send the options as application/json")
    try:
        body = json.loads(raw)
    except (ValueError, RecursionError):
        raise BadRequest("the body is not valid JSON") from None
    if not isinstance(body, dict):
        raise BadRequest("the body must be a JSON object")
    return body


def only(body: dict[str, Any], *allowed: str) -> dict[str, Any]:
    """``body`` when it names no key but ``allowed``: a misspelt filter (``sincee``) must not widen a
    bulk replay to every event the other filters match."""
    unknown = sorted(set(body) - set(allowed))
    if unknown:
        raise BadRequest(f"unknown key(s) {unknown[:5]}; use {list(allowed)}")
    return body


#: The query parameters of each list filter (app/web/openapi.py documents the same).
EVENT_QUERY = ("source", "type", "status", "tenant", "since", "until", "cursor", "limit")
PAGE_QUERY = ("cursor", "limit")
COST_QUERY = ("since", "until")


def query(request: Request, *allowed: str) -> QueryParams:
    """The request's query parameters when it names none but ``allowed``: a misspelt filter
    (``event_type`` for ``type``) must not silently answer with everything."""
    params = request.query_params
    unknown = sorted(set(params.keys()) - set(allowed))
    if unknown:
        takes = f"use {list(allowed)}" if allowed else "this endpoint takes none"
        raise BadRequest(f"unknown parameter(s) {unknown[:5]}; {takes}")
    return params


def flag(body: dict[str, Any], name: str) -> bool:
    value = body.get(name, False)
    if not isinstance(value, bool):
        raise BadRequest(f"{name}: true or false")
    return value


def text(body: dict[str, Any], name: str) -> str | None:
    """A string field of a JSON body: absent or null is None, an empty string is an error."""
    if name in body and body[name] in ("", None):
        raise BadRequest(f"{name}: must not be empty or null (leave it out instead)")
    return clean(name, body.get(name))


def parse_cursor(value: str | None) -> int | None:
    """A list cursor: the last id of the previous page (any id-like number; past bigint means 'all')."""
    if value is None:
        return None
    if not re.fullmatch(r"[0-9]{1,19}", value):
        raise BadRequest("cursor: the next_cursor of the previous page (digits)")
    return min(int(value), BIGINT)


def list_page(params: Any) -> tuple[int | None, int]:
    """A list's ``cursor`` (None: from the newest) and ``limit`` (50 unless given)."""
    limit = parse_int("limit", params.get("limit"), default=50, low=1, high=data.MAX_LIMIT) or 50
    return parse_cursor(params.get("cursor")), limit


# -- endpoints -----------------------------------------------------------------------------------


@guarded
async def list_events(request: Request, state: AppState) -> Response:
    p = query(request, *EVENT_QUERY)
    f = event_filter(p)
    before, limit = list_page(p)
    pool = await state.db.ensure()
    rows = await data.list_events(pool, state.config, f, before=before, limit=limit + 1)
    events, cursor = page(rows, limit, "id")
    return json_response(200, {"events": events, "next_cursor": cursor})


@guarded
async def event_detail(request: Request, state: AppState) -> Response:
    query(request)
    event_id = parse_int("event id", request.path_params["event_id"], default=None, low=1, high=BIGINT)
    assert event_id is not None
    detail = await data.event_detail(await state.db.ensure(), state.config, event_id)
    if detail is None:
        raise NotFound(f"no event with id {event_id}")
    return json_response(200, detail)


@guarded
async def dead_letters(request: Request, state: AppState) -> Response:
    before, limit = list_page(query(request, *PAGE_QUERY))
    rows, cursor = page(
        await data.dead_letters(await state.db.ensure(), state.config, before=before, limit=limit + 1),
        limit,
        "event_id",
    )
    return json_response(200, {"dead_letters": rows, "next_cursor": cursor})


async def replay_event(state: AppState, event_id: int, *, recompute: bool, force: bool) -> int:
    """``hookline.replay(event_id)``: the new job id (404 / 409 as the function raises)."""
    pool = await state.db.ensure()
    return int(await pool.fetchval(data.Q["replay_one"], event_id, recompute, force))


@guarded
async def replay_one(request: Request, state: AppState) -> Response:
    query(request)  # the options go in the JSON body
    event_id = parse_int("event id", request.path_params["event_id"], default=None, low=1, high=BIGINT)
    assert event_id is not None
    body = only(await json_body(request), "recompute", "force")
    job_id = await replay_event(state, event_id, recompute=flag(body, "recompute"), force=flag(body, "force"))
    return json_response(202, {"event_id": event_id, "job_id": job_id})


@guarded
async def replay_matching(request: Request, state: AppState) -> Response:
    query(request)  # the filter goes in the JSON body: one in the URL would be ignored, widening the replay
    body = only(await json_body(request), "source", "type", "status", "since", "until", "recompute", "force")
    args = (
        text(body, "source"),
        text(body, "type"),
        parse_status(text(body, "status"), REPLAYABLE),
        parse_time("since", text(body, "since")),
        parse_time("until", text(body, "until")),
    )
    if all(a is None for a in args):
        raise BadRequest("name at least one of source, type, status, since, until")
    pool = await state.db.ensure()
    async with pool.acquire() as conn, conn.transaction():
        rows = await conn.fetch(data.Q["replay_matching"], *args, flag(body, "recompute"), flag(body, "force"))
    replayed = [{"event_id": int(r["event_id"]), "job_id": int(r["job_id"])} for r in rows]
    return json_response(202, {"replayed": len(replayed), "events": replayed})


async def dismiss_event(state: AppState, event_id: int, *, reason: str | None, by: str) -> dict[str, Any]:
    """``hookline.dismiss(ARRAY[event_id])`` (404 / 409 as the function raises): the event's dismissal,
    made now or before (``dismissed_now`` false: it was dismissed already and stays as it was)."""
    pool = await state.db.ensure()
    row = await pool.fetchrow(data.Q["dismiss_one"], event_id, reason, by)
    if row is None:
        raise NotFound(f"no event with id {event_id}")
    return {
        "event_id": event_id,
        "dismissed_at": row["dismissed_at"].isoformat(),
        "dismissed_now": bool(row["dismissed_now"]),
    }


@guarded
async def dismiss_one(request: Request, state: AppState) -> Response:
    query(request)  # the reason goes in the JSON body
    event_id = parse_int("event id", request.path_params["event_id"], default=None, low=1, high=BIGINT)
    assert event_id is not None
    body = only(await json_body(request), "reason")
    return json_response(200, await dismiss_event(state, event_id, reason=text(body, "reason"), by=BY_API))


@guarded
async def dismiss_matching(request: Request, state: AppState) -> Response:
    query(request)  # the filter goes in the JSON body, as for the bulk replay
    body = only(await json_body(request), "source", "type", "since", "until", "reason")
    args = (
        text(body, "source"),
        text(body, "type"),
        parse_time("since", text(body, "since")),
        parse_time("until", text(body, "until")),
    )
    if all(a is None for a in args):
        raise BadRequest("name at least one of source, type, since, until")
    pool = await state.db.ensure()
    rows = await pool.fetch(data.Q["dismiss_matching"], *args, text(body, "reason"), BY_API)
    dismissed = [{"event_id": int(r["event_id"]), "dismissed_at": r["dismissed_at"].isoformat()} for r in rows]
    return json_response(200, {"dismissed": len(dismissed), "events": dismissed})


@guarded
async def stats(request: Request, state: AppState) -> Response:
    query(request)
    return json_response(200, await data.stats(await state.db.ensure()))


def today_utc() -> tuple[datetime, datetime]:
    start = datetime.now(UTC).replace(hour=0, minute=0, second=0, microsecond=0)
    return start, start + timedelta(days=1)


@guarded
async def cost(request: Request, state: AppState) -> Response:
    """Calls made in ``[since, until)``: neither given, today (UTC); ``since`` alone, up to now;
    ``until`` alone, from today 00:00 UTC."""
    p = query(request, *COST_QUERY)
    today, tomorrow = today_utc()
    since, until = parse_time("since", p.get("since")), parse_time("until", p.get("until"))
    if since is None and until is None:
        since, until = today, tomorrow
    since = since or today
    until = until or datetime.now(UTC)
    rows = await data.cost(await state.db.ensure(), since, until) if since < until else []
    total = round(sum(float(r["cost_usd"]) for r in rows), 8)
    return json_response(
        200, {"since": since.isoformat(), "until": until.isoformat(), "total_usd": total, "rows": rows}
    )


def routes() -> list[Route]:
    return [
        Route("/events", list_events, methods=["GET"]),
        Route("/events/{event_id}", event_detail, methods=["GET"]),
        Route("/events/{event_id}/replay", replay_one, methods=["POST"]),
        Route("/events/{event_id}/dismiss", dismiss_one, methods=["POST"]),
        Route("/dead-letters", dead_letters, methods=["GET"]),
        Route("/replay", replay_matching, methods=["POST"]),
        Route("/dismiss", dismiss_matching, methods=["POST"]),
        Route("/stats", stats, methods=["GET"]),
        Route("/cost", cost, methods=["GET"]),
    ]
