"""How a run of an event ends, when it is not the happy path's last write: a terminal outcome written
on its own (``hookline.finish_event``), a retry or a throttle hold (:class:`RetryLater`, which
procrastinate carries out), or a failure of the database itself outside the pipelines."""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Sequence

from app.core.config import Pipeline
from app.core.records import EventRow
from app.core.status import EventStatus
from worker.errors import classify
from worker.infra import count_infra_failure
from worker.limits import Held, one
from worker.runtime import Runtime

log = logging.getLogger("hookline.worker")


class RetryLater(Exception):
    """Raised by process_event after it recorded a transient failure: reschedule in ``delay`` s."""

    def __init__(self, delay: float, reason: str) -> None:
        super().__init__(reason)
        self.delay = delay


#: Job runs that failed outside the pipelines' own error handling (database errors while claiming or
#: finishing the event) before the event is declared dead: with the backoff below, about 45 minutes.
#: Counted on the event (hookline.events.infra_failures), so throttle reschedules never count.
MAX_INFRASTRUCTURE_ATTEMPTS = 50


async def infrastructure_failure(
    rt: Runtime, event_id: int, attempts: int, e: Exception, *, job_id: int | None = None
) -> str:
    """The database failed us outside the pipeline's error handling (claiming, finishing or recording
    the event). The event is not terminal: run the job again, or give up loudly."""
    reason = f"{e.__class__.__name__}: {e}"
    attempts, counted = await count_infra_failure(rt, event_id, attempts - 1)  # never throttle reschedules
    if counted and attempts >= MAX_INFRASTRUCTURE_ATTEMPTS:
        with contextlib.suppress(Exception):
            await finish(
                rt,
                event_id,
                EventStatus.DEAD,
                error=reason,
                detail=f"gave up after {attempts} job runs failed outside the pipeline",
                job_id=job_id,
            )
        log.error("event %s is dead after %d failed job runs: %s", event_id, attempts, reason)
        return EventStatus.DEAD
    delay = float(min(60, 2 ** min(attempts, 6)))
    log.warning("event %s: job run failed outside the pipeline (%s); again in %.0fs", event_id, reason, delay)
    raise RetryLater(delay, reason) from e


async def failed(rt: Runtime, event: EventRow, pipeline: Pipeline, exc: BaseException, job_id: int | None) -> str:
    err = classify(exc)
    attempt = int(event["attempts"])
    policy = pipeline.retry
    where = f"pipeline {pipeline.name}: {err}"
    if err.permanent or attempt >= policy.max_attempts:
        why = "permanent error" if err.permanent else f"gave up after {attempt} attempt(s)"
        await finish(rt, event["id"], EventStatus.DEAD, error=where, detail=why, job_id=job_id)
        log.warning("event %s is dead (%s): %s", event["id"], why, where)
        return EventStatus.DEAD
    delay = policy.delay(attempt, err.retry_after)
    await rt.db.run(
        "retry_event",
        event_id=event["id"],
        error=where,
        detail=f"attempt {attempt} of {policy.max_attempts} failed; next in {delay:.1f}s",
    )
    log.info("event %s attempt %s failed, retrying in %.1fs: %s", event["id"], attempt, delay, where)
    raise RetryLater(delay, where) from exc


class Throttled(RetryLater):
    """The event waits for a limit (window, bucket, breaker, loop guard); its job runs again later."""


async def hold(rt: Runtime, event: EventRow, held: Held, job_id: int | None, *, replayed: Sequence[str] = ()) -> str:
    """Over a cap or limit: ``throttled`` and rescheduled (the run is not an attempt), or dead.
    ``replayed``: the pipelines of a replay with recompute/force this run finished before the hold; the
    next run does not recompute or force them again (``hookline.events.replay_applied``)."""
    if held.dead:
        await finish(
            rt,
            event["id"],
            EventStatus.DEAD,
            error=held.reason,
            detail="over a tenant cap (on_cap = dead)",
            job_id=job_id,
        )
        log.warning("event %s is dead: %s", event["id"], held.reason)
        return EventStatus.DEAD
    await one(rt, "throttle_event", event_id=event["id"], detail=f"throttled: {held.reason}", replayed=list(replayed))
    log.info("event %s throttled for %.1fs: %s", event["id"], held.delay, held.reason)
    raise Throttled(held.delay, held.reason)


async def finish(
    rt: Runtime,
    event_id: int,
    status: str,
    *,
    dry_run: bool = False,
    detail: str | None = None,
    error: str | None = None,
    job_id: int | None = None,
) -> None:
    await rt.db.run(
        "finish_event", event_id=event_id, status=status, dry_run=dry_run, detail=detail, error=error, job_id=job_id
    )
    rt.db.handover.finished(job_id)
    log.info("event %s %s", event_id, status, extra={"status": str(status)})
