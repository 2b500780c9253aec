"""``hookline dismiss``: clear dead letters that were handled by hand or can no longer be replayed.

A dismissed event keeps its status (dead) but leaves ``hookline.dead_letters``, ``hookline status``'s
dead-letter count, the dashboard and the ``hookline_dead_letters`` metric; its timeline shows who
dismissed it and why. The SQL side is ``hookline.dismiss(...)`` (see README), usable from psql; a replay
clears the dismissal.
"""

from __future__ import annotations

import argparse
import getpass
import sys
from collections.abc import Callable
from datetime import datetime

import psycopg
from psycopg.rows import dict_row

from app.cli import embedded
from app.cli.args import when
from app.cli.replay import Q, ReplayError
from app.core.db import libpq_dsn
from app.core.settings import Settings

Handler = Callable[[Settings, argparse.Namespace], int]
#: How many ids the summary line names; past that, only the count.
SHOWN = 20


def who() -> str:
    """hookline.events.dismissed_by of a dismissal made here: the command and the operating-system user."""
    try:
        return f"hookline dismiss ({getpass.getuser()})"
    except (KeyError, OSError):  # no user name (a container's bare uid)
        return "hookline dismiss"


def dismiss(
    url: str,
    *,
    event_ids: list[int],
    source: str | None = None,
    event_type: str | None = None,
    since: datetime | None = None,
    until: datetime | None = None,
    reason: str | None = None,
    by: str | None = None,
) -> list[int]:
    """Dismiss the dead letters named and those matching the filters (one transaction); returns the
    ids dismissed now (one dismissed before is left as it was)."""
    params = {
        "ids": list(dict.fromkeys(event_ids)) or None,
        "source": source,
        "event_type": event_type,
        "since": since,
        "until": until,
        "reason": reason,
        "by": by or who(),
    }
    try:
        with psycopg.connect(libpq_dsn(url)) as conn, conn.cursor(row_factory=dict_row) as cur:
            cur.execute(Q["dismiss"], params)
            return [int(r["event_id"]) for r in cur.fetchall()]
    except (
        psycopg.errors.NoDataFound,
        psycopg.errors.ObjectNotInPrerequisiteState,
        psycopg.errors.InvalidParameterValue,
    ) as e:
        raise ReplayError(e.diag.message_primary or str(e)) from None


def summary(ids: list[int]) -> str:
    named = f": {', '.join(str(i) for i in ids)}" if 0 < len(ids) <= SHOWN else ""
    return f"dismissed {len(ids)} dead letter(s){named}"


def cmd_dismiss(settings: Settings, args: argparse.Namespace) -> int:
    if not (args.event_ids or args.source or args.type or args.since or args.until):
        print(
            "hookline dismiss: name event ids or at least one filter (--source, --type, --since, --until)",
            file=sys.stderr,
        )
        return 2
    url, _server = embedded.resolve_database_url(settings.dsn(), settings.home)
    ids = dismiss(
        url,
        event_ids=args.event_ids,
        source=args.source,
        event_type=args.type,
        since=args.since,
        until=args.until,
        reason=args.reason,
    )
    print(summary(ids))
    return 0


def add_cli(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> dict[str, Handler]:
    d = subparsers.add_parser(
        "dismiss", help="clear dead letters handled by hand or past replaying (they stay dead, uncounted)"
    )
    d.add_argument("event_ids", nargs="*", type=int, metavar="EVENT_ID")
    d.add_argument("--source")
    d.add_argument("--type", help="event type")
    d.add_argument("--since", type=when, help="received at or after: ISO-8601 time, or 30m / 2h / 7d ago")
    d.add_argument("--until", type=when, help="received before: ISO-8601 time, or 30m / 2h / 7d ago")
    d.add_argument("--reason", help="why (kept with the event, shown on its timeline)")
    return {"dismiss": cmd_dismiss}
