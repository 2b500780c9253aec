"""How a run of an event ends, when it is not the happy path's last write: a terminal outcome written
on its own (``hookline.finish_event``), a retry or a throttle hold (:class:`RetryLater`, which
procrastinate carries out), or a failure of the database itself outside the pipelines.

Each of those writes carries the run's claim (:func:`claim_of`: the claims value its claim returned) and
applies only while that claim is the event's current one (migrations 0047, 0048). A run whose job was
taken for stalled and handed to another worker while it lived, or whose event was finished by that
worker and replayed since, finds its write refused: it ends :data:`STALE`, saying so
in a warning, and leaves the event, and the procrastinate job, to the run that holds the claim."""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from typing import Any

from app.core.config import Pipeline
from app.core.records import EventRow
from app.core.redaction import masked_text
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


#: What a run returns when its claim was no longer current (another worker's run holds the event, or
#: wrote its outcome): it wrote nothing of its own outcome.
STALE = "stale"

#: Job runs that failed outside the pipelines' own error handling (database errors while claiming or
#: finishing the event) before the event is declared dead: with the backoff below, about 45 minutes.
#: Counted on the event (hookline.events.infra_failures), so throttle reschedules never count.
MAX_INFRASTRUCTURE_ATTEMPTS = 50
#: A give-up whose own write failed: the job runs again after this long (and gives up then).
GIVE_UP_RETRY_SECONDS = 2.0


def claim_of(event: EventRow) -> int:
    """The run's claim, the fencing token of its outcome writes: the event's claims after its claim
    (hookline.events.claims, migration 0048), which no replay or hold takes back, unlike attempts."""
    return int(event["claims"])


async def infrastructure_failure(
    rt: Runtime,
    event_id: int,
    attempts: int,
    e: Exception,
    *,
    job_id: int | None = None,
    claim: int | None = None,
    event: Mapping[str, Any] | None = None,
) -> str:
    """The database failed us outside the pipeline's error handling (claiming, finishing or recording
    the event). The event is not terminal: run the job again, or give up loudly. ``claim``: the run's
    claim, when it got one; ``event``: the event's claimed row, when it was read (its source and payload:
    the logged error masks the values the source's redact paths hide, as :func:`failed` does)."""
    reason = f"{e.__class__.__name__}: {e}"  # stored whole, masked when shown
    said = reason if event is None else masked_text(rt.config, str(event["source"]), event["payload"], reason)
    count = await count_infra_failure(rt, event_id, attempts - 1, claim)  # never throttle reschedules
    if count is None:
        return stale(rt, event_id, f"its failure ({said})", job_id)
    attempts, counted = count
    if counted and attempts >= MAX_INFRASTRUCTURE_ATTEMPTS:
        try:
            ended = await finish(
                rt,
                event_id,
                EventStatus.DEAD,
                claim=claim,
                error=reason,
                detail=f"gave up after {attempts} job runs failed outside the pipeline",
                job_id=job_id,
            )
        except Exception as e2:
            # Not recorded: returning "dead" would let procrastinate finish the job with the event left
            # unfinished and nothing to run it. The job runs again soon (the count just reached the
            # database), and gives up then, or runs the event if the database is well again.
            log.warning(
                "event %s: could not record giving up after %d failed job runs (%s); again in %.0fs",
                *(event_id, attempts, e2.__class__.__name__, GIVE_UP_RETRY_SECONDS),
            )
            raise RetryLater(GIVE_UP_RETRY_SECONDS, said) from e
        if ended == STALE:
            return STALE
        log.error("event %s is dead after %d failed job runs: %s", event_id, attempts, said)
        return EventStatus.DEAD
    delay = float(min(60, 2 ** min(attempts, 6)))
    log.warning("event %s: job run failed outside the pipeline (%s); again in %.0fs", event_id, said, delay)
    raise RetryLater(delay, said) from e


async def failed(rt: Runtime, event: EventRow, pipeline: Pipeline, exc: BaseException, job_id: int | None) -> str:
    err = classify(exc)
    attempt = int(event["attempts"])
    policy = pipeline.retry
    where = f"pipeline {pipeline.name}: {err}"
    # as logged: the values the source's redact paths hide read [redacted] (stored whole, masked when shown)
    said = masked_text(rt.config, str(event["source"]), event["payload"], where)
    if err.permanent or attempt >= policy.max_attempts:
        why = "permanent error" if err.permanent else f"gave up after {attempt} attempt(s)"
        if (
            await finish(
                rt, event["id"], EventStatus.DEAD, claim=claim_of(event), error=where, detail=why, job_id=job_id
            )
            == STALE
        ):
            return STALE
        log.warning("event %s is dead (%s): %s", event["id"], why, said)
        return EventStatus.DEAD
    delay = policy.delay(attempt, err.retry_after)
    retried = await rt.db.run(
        "retry_event",
        event_id=event["id"],
        claim=claim_of(event),
        error=where,
        detail=f"attempt {attempt} of {policy.max_attempts} failed; next in {delay:.1f}s",
    )
    if not retried:
        return stale(rt, event["id"], f"its retry ({said})", job_id)
    log.info("event %s attempt %s failed, retrying in %.1fs: %s", event["id"], attempt, delay, said)
    raise RetryLater(delay, said) from exc


class Throttled(RetryLater):
    """The event waits for a limit (window, bucket, breaker, loop guard); its job runs again later."""


async def hold(rt: Runtime, event: EventRow, held: Held, job_id: int | None, *, replayed: Sequence[str] = ()) -> str:
    """Over a cap or limit: ``throttled`` and rescheduled (the run is not an attempt), or dead.
    ``replayed``: the pipelines of a replay with recompute/force this run finished before the hold; the
    next run does not recompute or force them again (``hookline.events.replay_applied``)."""
    claim = claim_of(event)
    if held.dead:
        ended = await finish(
            rt,
            event["id"],
            EventStatus.DEAD,
            claim=claim,
            error=held.reason,
            detail="over a tenant cap (on_cap = dead)",
            job_id=job_id,
        )
        if ended != STALE:
            log.warning("event %s is dead: %s", event["id"], held.reason)
        return ended
    throttled = await one(
        rt,
        "throttle_event",
        event_id=event["id"],
        claim=claim,
        detail=f"throttled: {held.reason}",
        replayed=list(replayed),
    )
    if throttled is None:
        return stale(rt, event["id"], f"its hold ({held.reason})", job_id)
    log.info("event %s throttled for %.1fs: %s", event["id"], held.delay, held.reason)
    raise Throttled(held.delay, held.reason)


async def finish(
    rt: Runtime,
    event_id: int,
    status: str,
    *,
    claim: int | None,
    dry_run: bool = False,
    detail: str | None = None,
    error: str | None = None,
    job_id: int | None = None,
) -> str:
    """Record the event's terminal ``status`` for the run holding ``claim``; returns ``status``, or
    :data:`STALE` when that claim is no longer current (nothing was written)."""
    row = await rt.db.one(
        "finish_event",
        event_id=event_id,
        claim=claim,
        status=status,
        dry_run=dry_run,
        detail=detail,
        error=error,
        job_id=job_id,
    )
    if row is not None and row["finished"] is False:
        return stale(rt, event_id, f"its outcome ({status})", job_id)
    rt.db.handover.finished(job_id)
    log.info("event %s %s", event_id, status, extra={"status": str(status)})
    return status


def stale(rt: Runtime, event_id: int, what: str, job_id: int | None) -> str:
    """The run's claim is no longer current: another worker took its job for stalled and claimed the
    event since (or wrote its outcome). Nothing of ``what`` was written; procrastinate does not settle
    the job either (it is the later run's now: :class:`worker.handover.Handover`)."""
    rt.db.handover.finished(job_id)
    log.warning(
        "event %s: %s was not recorded: another run claimed the event since (this run's job was taken "
        "for stalled while it ran); that run's outcome stands",
        event_id,
        what,
    )
    return STALE
