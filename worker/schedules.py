"""Scheduled pipelines on procrastinate's periodic tasks.

Every worker registers one periodic task per ``[schedules.NAME]`` (``periodic_id`` = NAME), so each
scheduled time is deferred once however many workers run (procrastinate's
``procrastinate_periodic_defers`` is unique on task, periodic id and time). The job turns the firing
into an event row, source ``schedule``, type NAME, delivery id ``NAME@<scheduled time UTC>``; the
unique ``(source, delivery_id)`` makes a second firing of the same time a no-op even so. The row's
payload is the digest of the window's events, and the row is processed like any webhook: the
AFTER INSERT trigger defers ``process_event``, the schedule's pipeline gets the digest as its input.

procrastinate reads cron in UTC; for a schedule with a ``timezone`` the periodic record's croniter
is a :class:`~app.core.config.schedules.LocalCron` in that zone (daylight-saving changes included:
a local time that happens twice fires once).

A firing's job runs ahead of every queued event (:data:`FIRE_PRIORITY`); it waits only for a free
worker slot. However late it runs, its digest is of the window before its scheduled time.

A firing that fails (the database away, restarting, refusing the insert) is tried again with
exponential backoff (:class:`FiringRetry`: 1, 2, 4 … 60 s apart) for as long as it is less than
:data:`LATE_LIMIT` (10 minutes, procrastinate's own limit for deferring a missed time) after its
scheduled time; the tries stop there, as a worker that was down that long skips the time.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

import procrastinate
from procrastinate import JobContext
from procrastinate.jobs import Job
from procrastinate.periodic import MAX_DELAY
from procrastinate.retry import BaseRetryStrategy, RetryDecision
from psycopg.rows import dict_row
from psycopg.types.json import Jsonb

from app.core.config import Config, Schedule
from app.core.config.schedules import LocalCron
from app.core.jobs import FIRE_SCHEDULE, FIRE_SCHEDULE_SHORT, QUEUE
from app.core.querynames import SchedulesQuery
from app.core.sqlfiles import NamedQueries
from worker.prompt import trim
from worker.runtime import Runtime
from worker.tasks import runtime_of

log = logging.getLogger("hookline.schedules")
Q: NamedQueries[SchedulesQuery] = NamedQueries("schedules", SchedulesQuery)


#: How late a firing may still land: a missed time older than this is skipped (README), and a
#: failing firing is not tried again past it. procrastinate's periodic deferrer uses the same limit.
LATE_LIMIT = float(MAX_DELAY)
#: Job priority of a firing: above any pipeline's (-1000 … 1000) and sync replies' (1000), so a backlog of
#: queued events never holds a firing back (procrastinate hands out the highest priority first). A firing
#: is one digest query and one insert; the event it stores then runs at its pipeline's own priority.
FIRE_PRIORITY = 1001
#: The first pause between two tries of a failed firing, doubled each time up to FIRST_WAIT_MAX.
FIRST_WAIT = 1
FIRST_WAIT_MAX = 60


class FiringRetry(BaseRetryStrategy):
    """Retry a failed firing with exponential backoff until LATE_LIMIT after its scheduled time.

    Retries are safe: a firing is one ``INSERT … ON CONFLICT DO NOTHING`` keyed by the schedule and
    the scheduled time, so a try that landed before its error reached us is never a second firing.
    """

    def __init__(self, late_limit: float = LATE_LIMIT, clock: Callable[[], float] = time.time) -> None:
        self.late_limit = late_limit
        self.clock = clock

    def get_retry_decision(self, *, exception: BaseException, job: Job) -> RetryDecision | None:
        now = self.clock()
        stamp = job.task_kwargs.get("timestamp")
        deadline = (float(stamp) if isinstance(stamp, int | float) else now) + self.late_limit
        wait = min(FIRST_WAIT * 2 ** min(job.attempts, 16), FIRST_WAIT_MAX, deadline - now)
        what = f"schedule {job.task_kwargs.get('schedule')} at {stamp}"
        if deadline - now < 1:
            log.error(
                "%s: giving up after %d tries, the firing is now %d s late (%s)",
                *(what, job.attempts + 1, int(now - deadline + self.late_limit), exception.__class__.__name__),
            )
            return None
        log.warning("%s failed (%s); trying again in %.3g s", what, exception.__class__.__name__, wait)
        return RetryDecision(retry_at=datetime.fromtimestamp(now + wait, UTC))


def register(bp: procrastinate.Blueprint) -> None:
    """Add the fire_schedule task (the periodic records come from :func:`add_periodic`)."""
    bp.task(name=FIRE_SCHEDULE_SHORT, queue=QUEUE, pass_context=True, retry=FiringRetry())(fire_schedule)


def add_periodic(app: procrastinate.App, config: Config) -> None:
    """One periodic record per schedule on the app (after its tasks were added)."""
    task = app.tasks[FIRE_SCHEDULE]
    for name, sched in config.schedules.items():
        pt: Any = app.periodic_registry.register_task(
            task=task,
            cron=sched.cron,
            periodic_id=name,
            configure_kwargs={"task_kwargs": {"schedule": name}, "priority": FIRE_PRIORITY},
        )
        if sched.timezone != "UTC":
            # PeriodicTask.croniter is a cached property built without a zone (so UTC); fill it with
            # one built in the schedule's zone (tests/unit/test_actions_config.py checks the ticks)
            pt.__dict__["croniter"] = LocalCron(sched.cron, datetime.now(sched.zone))


async def fire_schedule(context: JobContext, timestamp: int, schedule: str) -> dict[str, Any]:
    rt = runtime_of(context)
    sched = rt.config.schedules.get(schedule)
    if sched is None:
        log.warning("schedule %s fired but is no longer configured; nothing to do", schedule)
        return {"event_id": None}
    scheduled = datetime.fromtimestamp(timestamp, UTC)
    return {"event_id": await fire(rt, sched, scheduled)}


async def fire(rt: Runtime, sched: Schedule, scheduled: datetime) -> int | None:
    """Store the firing of ``sched`` at ``scheduled`` as an event; None if it was already stored."""
    digest = await build_digest(rt, sched, scheduled - sched.window_delta, scheduled)
    async with rt.db.pool.connection() as conn, conn.cursor() as cur:
        await cur.execute(
            Q["insert_firing"],
            {
                "delivery_id": sched.delivery_id(scheduled),
                "schedule": sched.name,
                "scheduled_at": scheduled,
                "payload": Jsonb(digest),
            },
        )
        row = await cur.fetchone()
    if row is None:
        log.info("schedule %s at %s was already fired", sched.name, scheduled.isoformat())
        return None
    log.info(
        "schedule %s fired for %s: event %s (%s events in the window)", sched.name, scheduled, row[0], digest["total"]
    )
    return int(row[0])


def _like(pattern: str) -> str:
    """An ``events`` entry as a LIKE pattern: a trailing ``*`` matches any rest; everything else is
    literal (``_`` and ``%`` in ``invoice.payment_failed`` match only themselves)."""
    prefix, star = (pattern[:-1], "%") if pattern.endswith("*") else (pattern, "")
    return prefix.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_") + star


def _iso(t: datetime) -> str:
    return t.astimezone(UTC).isoformat().replace("+00:00", "Z")


async def build_digest(rt: Runtime, sched: Schedule, since: datetime, until: datetime) -> dict[str, Any]:
    """Counts by source, type and status, plus the newest ``examples`` events trimmed."""
    f = sched.filter
    params = {
        "since": since,
        "until": until,
        "sources": list(f.source),
        "statuses": list(f.status),
        "types": [_like(t) for t in f.events],
    }
    async with rt.db.pool.connection() as conn, conn.cursor(row_factory=dict_row) as cur:
        await cur.execute(Q["window_counts"], params)
        counts = await cur.fetchall()
        examples: list[dict[str, Any]] = []
        if sched.examples:
            await cur.execute(Q["window_examples"], {**params, "limit": sched.examples})
            examples = await cur.fetchall()
    by_status: dict[str, int] = {}
    for c in counts:
        by_status[c["status"]] = by_status.get(c["status"], 0) + int(c["n"])
    return {
        "schedule": sched.name,
        "scheduled_at": _iso(until),
        "window": {"from": _iso(since), "to": _iso(until), "length": sched.window},
        "filter": f.model_dump(exclude_defaults=True),
        "total": sum(by_status.values()),
        "by_status": by_status,
        "counts": [
            {"source": c["source"], "event_type": c["event_type"], "status": c["status"], "count": int(c["n"])}
            for c in counts
        ],
        "examples": [
            {
                "event_id": e["id"],
                "source": e["source"],
                "event_type": e["event_type"],
                "status": e["status"],
                "tenant": e["tenant"],
                "received_at": _iso(e["received_at"]),
                "last_error": (e["last_error"] or "")[:500] or None,
                "fields": trim(e["payload"], sched.example_fields) if e["payload"] is not None else None,
            }
            for e in examples
        ],
    }
