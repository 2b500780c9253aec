"""``hookline replay``: re-run finished events through their pipelines, with a progress bar.

Stored model answers are reused unless ``--recompute``; actions that already succeeded are not
repeated unless ``--force``. The SQL side is ``hookline.replay(...)`` (see README), usable from psql.
"""

from __future__ import annotations

import sys
import time
from dataclasses import dataclass
from datetime import datetime
from typing import TextIO

import psycopg
from psycopg.rows import dict_row

from app.core.db import libpq_dsn
from app.core.errors import HooklineError
from app.core.querynames import ReplayQuery
from app.core.sqlfiles import NamedQueries

Q: NamedQueries[ReplayQuery] = NamedQueries("replay", ReplayQuery)


class ReplayError(HooklineError):
    code = "replay_error"


@dataclass
class ReplayResult:
    event_ids: list[int]
    done: int = 0
    dead: int = 0


def start_replay(
    url: str,
    *,
    event_ids: list[int],
    source: str | None = None,
    event_type: str | None = None,
    status: str | None = None,
    since: datetime | None = None,
    until: datetime | None = None,
    recompute: bool = False,
    force: bool = False,
) -> ReplayResult:
    """Defer the replay jobs (one transaction); returns the replayed event ids."""
    ids: list[int] = []
    try:
        with psycopg.connect(libpq_dsn(url)) as conn, conn.cursor(row_factory=dict_row) as cur:
            for event_id in dict.fromkeys(event_ids):  # an id named twice is replayed once
                cur.execute(Q["replay_one"], {"event_id": event_id, "recompute": recompute, "force": force})
                ids.append(event_id)
            if source or event_type or status or since or until:
                cur.execute(
                    Q["replay_matching"],
                    {
                        "source": source,
                        "event_type": event_type,
                        "status": status,
                        "since": since,
                        "until": until,
                        "recompute": recompute,
                        "force": force,
                    },
                )
                ids.extend(int(r["event_id"]) for r in cur.fetchall())
    except psycopg.errors.RaiseException as e:
        raise ReplayError(e.diag.message_primary or str(e)) from None
    except (
        psycopg.errors.NoDataFound,
        psycopg.errors.ObjectNotInPrerequisiteState,
        psycopg.errors.InvalidParameterValue,
    ) as e:
        raise ReplayError(e.diag.message_primary or str(e)) from None
    return ReplayResult(sorted(set(ids)))


def wait_for(
    url: str, result: ReplayResult, *, timeout: float, out: TextIO = sys.stderr, interval: float = 0.25
) -> ReplayResult:
    """Poll until every replayed event is finished, drawing a progress bar on ``out``."""
    deadline = time.monotonic() + timeout
    total = len(result.event_ids)
    tty = out.isatty()
    last = ""
    with psycopg.connect(libpq_dsn(url), autocommit=True) as conn, conn.cursor(row_factory=dict_row) as cur:
        while True:
            cur.execute(Q["progress"], {"ids": result.event_ids})
            row = cur.fetchone() or {"done": 0, "dead": 0}
            result.done, result.dead = int(row["done"]), int(row["dead"])
            line = progress_bar(result.done, total, result.dead)
            if tty:
                out.write("\r" + line)
            elif line != last:
                out.write(line + "\n")
            out.flush()
            last = line
            if result.done >= total or time.monotonic() > deadline:
                break
            time.sleep(interval)
    if tty:
        out.write("\n")
    return result


def progress_bar(done: int, total: int, dead: int, width: int = 30) -> str:
    filled = int(width * done / total) if total else width
    return f"[{'#' * filled}{'.' * (width - filled)}] {done}/{total} finished" + (f", {dead} dead" if dead else "")
