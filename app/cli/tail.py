"""``hookline tail``: events as they arrive and change status, one line per transition, through LISTEN.

``hookline dev`` runs the same follower beside the web and worker, so a newcomer sees each event go
event → pipeline → model (tokens, cost) → actions → status. Migration 0005 NOTIFYs channel
``hookline_events`` per INSERT statement and per status change; the rows are read by id.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import sys
from collections import deque
from collections.abc import Callable
from typing import Any

import asyncpg

from app.cli.failures import OutputClosed
from app.core import db
from app.core.config import Config
from app.core.logs import escape
from app.core.querynames import ObserveQuery
from app.core.redaction import load_shown_story
from app.core.sqlfiles import NamedQueries
from app.core.status import TERMINAL_EVENT_STATUSES, CallStatus
from app.core.timeline import EventStory, jsonable

Q: NamedQueries[ObserveQuery] = NamedQueries("observe", ObserveQuery)
CHANNEL = "hookline_events"


class _Arrived:
    """The ids already printed as received, the last ``limit`` of them. An insert notice names a range of
    ids (min_id .. max_id), and the ranges of batches committed at the same time interleave (two web
    processes, or two flushes of one, draw ids from one sequence), so one event can fall in two notices'
    ranges: it is printed once."""

    def __init__(self, limit: int = 100_000) -> None:
        self._ids: set[int] = set()
        self._order: deque[int] = deque()
        self._limit = limit

    def first_time(self, event_id: int) -> bool:
        if event_id in self._ids:
            return False
        self._ids.add(event_id)
        self._order.append(event_id)
        if len(self._order) > self._limit:
            self._ids.discard(self._order.popleft())
        return True


def _name(row: dict[str, Any]) -> str:  # escaped with the whole line, by the callers
    return f"event {row['id']} {row['source']}" + (f"/{row['event_type']}" if row.get("event_type") else "")


def format_brief(row: dict[str, Any]) -> str:
    tenant = f" (tenant {row['tenant']})" if row.get("tenant") else ""
    return escape(f"{_name(row)}{tenant} → {row['status']}")


def format_story(story: EventStory) -> str:
    """``event 12 stripe/invoice.payment_failed → recovery → claude-haiku-5-5 (1200+80 tokens, $0.000170)
    → http#0 succeeded, log#1 succeeded → succeeded``

    The event type, tenant, detail and last error come from the sender (or from what its payload made
    an action fail with): control characters in them are printed as escapes (``\\x1b``), never sent to
    the terminal, which would run them (erase and forge lines, set the clipboard with OSC 52)."""
    ev = story.event
    parts = [_name(ev)]
    pipelines = list(dict.fromkeys([c["pipeline"] for c in story.calls] + [a["pipeline"] for a in story.actions]))
    if not pipelines:
        parts.append("no pipeline")
    for pipeline in pipelines:
        calls = [c for c in story.calls if c["pipeline"] == pipeline]
        segment = [pipeline]
        if calls:
            segment.append(_model(calls))
        actions = [f"{a['action']} {a['status']}" for a in story.actions if a["pipeline"] == pipeline]
        if actions:
            segment.append(", ".join(actions))
        parts.append(" → ".join(segment))
    status = str(ev["status"])
    if status == "dead" and ev.get("last_error"):
        status += f" ({ev['last_error']})"
    elif status == "skipped" and ev.get("detail"):
        status += f" ({ev['detail']})"
    parts.append(status)
    return escape(" → ".join(parts))


def _model(calls: list[dict[str, Any]]) -> str:
    last = calls[-1]
    if last["status"] == CallStatus.SIMULATED:
        return f"{last['model']} (simulated)"
    if last["status"] == CallStatus.DRY_RUN:
        return f"{last['model']} (dry run, not sent)"
    tokens_in = sum(int(c["input_tokens"] or 0) for c in calls)
    tokens_out = sum(int(c["output_tokens"] or 0) for c in calls)
    cost = sum(float(c["cost_usd"] or 0) for c in calls)
    extra = "" if last["status"] == CallStatus.SUCCEEDED else f", {last['status']}"
    return f"{last['model']} ({tokens_in}+{tokens_out} tokens, ${cost:.6f}{extra})"


#: Connection refusals no retry can cure (a refused login or password, a database that does not exist):
#: they end ``hookline tail`` (and ``hookline dev``'s follower) whenever they come, not only at start.
_FATAL = (asyncpg.InvalidAuthorizationSpecificationError, asyncpg.InvalidCatalogNameError)


async def follow(
    url: str,
    emit: Callable[[str], None],
    *,
    config: Config,
    stop: asyncio.Event | None = None,
    as_json: bool = False,
    warn: Callable[[str], None] | None = None,
    retry_at_start: bool = True,
    on_listening: Callable[[], None] | None = None,
) -> None:
    """Print one line per insert and status change until ``stop`` (or forever); connection troubles
    go to ``warn`` (default: ``emit``) and are retried, once a session was up (from the start too with
    ``retry_at_start``). A refused password or a missing database is raised, whenever it comes. A
    finished event's story masks what it repeats of its source's ``redact`` paths (``config``).
    ``on_listening`` is called once, when the first session LISTENs."""
    stop = stop or asyncio.Event()
    warn = warn or emit
    up = False

    def listening() -> None:
        nonlocal up
        if not up and on_listening is not None:
            on_listening()
        up = True

    while not stop.is_set():
        try:
            await _follow_once(url, config, emit, stop, as_json, listening)
        except Exception as e:
            if isinstance(e, _FATAL) or not (up or retry_at_start):
                raise
            if isinstance(e, (OSError, TimeoutError)):
                warn(f"tail: database unreachable ({e.__class__.__name__}); retrying")
            elif e.__class__.__module__.startswith("asyncpg"):
                warn(f"tail: connection lost ({e.__class__.__name__}); reconnecting")
            else:
                raise
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(stop.wait(), 1.0)


async def _follow_once(
    url: str,
    config: Config,
    emit: Callable[[str], None],
    stop: asyncio.Event,
    as_json: bool,
    listening: Callable[[], None],
) -> None:
    notices: asyncio.Queue[dict[str, Any]] = asyncio.Queue()
    arrived = _Arrived()
    conns: list[Any] = []
    try:
        listen = await db.connect(url, application_name="hookline-tail")
        conns.append(listen)
        reader = await db.connect(url, application_name="hookline-tail")
        conns.append(reader)
        await listen.add_listener(CHANNEL, lambda _c, _pid, _ch, payload: notices.put_nowait(json.loads(payload)))
        listening()
        while not stop.is_set():
            try:
                notice = await asyncio.wait_for(notices.get(), 0.5)
            except TimeoutError:
                if listen.is_closed():
                    raise ConnectionError("LISTEN connection closed") from None
                continue
            for line in await _lines(reader, config, notice, as_json, arrived):
                emit(line)
    finally:
        for conn in conns:
            with contextlib.suppress(Exception):
                await conn.close()


async def _lines(conn: Any, config: Config, notice: dict[str, Any], as_json: bool, arrived: _Arrived) -> list[str]:
    if notice.get("op") == "insert":
        # the row may already be further on; its own status notices follow, so say only that it arrived
        rows = [
            dict(r) | {"status": "received"}
            for r in await conn.fetch(Q["events_between"], notice["min_id"], notice["max_id"])
            if arrived.first_time(int(r["id"]))
        ]
        return [json.dumps(jsonable(r)) if as_json else format_brief(r) for r in rows]
    if notice.get("op") != "status":
        return []
    event_id = int(notice["id"])
    if notice.get("status") in TERMINAL_EVENT_STATUSES:
        story = await load_shown_story(conn, config, event_id)
        if story is None:
            return []
        return [json.dumps(story.as_json()) if as_json else format_story(story)]
    row = await conn.fetchrow(Q["event_brief"], event_id)
    if row is None:
        return []
    brief = dict(row) | {"status": notice.get("status", row["status"])}
    return [json.dumps(jsonable(brief)) if as_json else format_brief(brief)]


def run_tail(url: str, *, config: Config, as_json: bool = False) -> int:
    def warn(line: str) -> None:  # never on stdout: --json promises one JSON object per line there
        print(line, file=sys.stderr, flush=True)

    def emit(line: str) -> None:
        try:
            sys.stdout.write(line + "\n")
            sys.stdout.flush()
        except BrokenPipeError as e:  # its reader went away (`| head`): no database trouble to retry
            raise OutputClosed from e

    def listening() -> None:
        print(f"hookline tail: listening on {CHANNEL} (Ctrl-C stops)", file=sys.stderr, flush=True)

    # the first connection fails as every command does (one line, exit 1: app/cli/failures.py); later
    # troubles are retried, except a refused login or a missing database
    with contextlib.suppress(KeyboardInterrupt):
        asyncio.run(
            follow(url, emit, config=config, as_json=as_json, warn=warn, retry_at_start=False, on_listening=listening)
        )
    return 0
