"""procrastinate tasks. Job arguments are ids; the worker reloads state from Postgres."""

from __future__ import annotations

import asyncio
import contextlib
import logging

import procrastinate
from procrastinate import JobContext, RetryDecision
from procrastinate.jobs import Job

from app.core.config import Pipeline
from app.core.jobs import PROCESS_EVENT_SHORT, QUEUE
from app.core.logs import bind_log_context, log_context
from app.core.records import EventRow
from app.core.status import EventStatus
from worker.errors import classify
from worker.limits import Held, admit, one
from worker.pipeline import run_pipeline
from worker.routing import route
from worker.runtime import Runtime

log = logging.getLogger("hookline.worker")


class RetryLater(Exception):
    """Raised by process_event after it recorded a transient failure: reschedule in ``delay`` s."""

    def __init__(self, delay: float, reason: str) -> None:
        super().__init__(reason)
        self.delay = delay


class HooklineRetry(procrastinate.BaseRetryStrategy):
    """The retry decision itself is made in :func:`handle_event` (per pipeline policy, with the
    event's own attempt count); this strategy only carries it out. A job interrupted by a worker
    shutdown is handed back at once."""

    def get_retry_decision(self, *, exception: BaseException, job: Job) -> RetryDecision | None:
        if isinstance(exception, RetryLater):
            return RetryDecision(retry_in={"milliseconds": int(exception.delay * 1000)})
        if isinstance(exception, asyncio.CancelledError | procrastinate.exceptions.JobAborted):
            return RetryDecision(retry_in={"seconds": 0})
        return None


def runtime_of(context: JobContext) -> Runtime:
    rt = (context.additional_context or {}).get("runtime")
    if not isinstance(rt, Runtime):
        raise RuntimeError("worker started without a hookline runtime in additional_context")
    return rt


#: Job runs that failed outside the pipelines' own error handling (database errors while claiming or
#: finishing the event) before the event is declared dead: with the backoff below, about 45 minutes.
MAX_INFRASTRUCTURE_ATTEMPTS = 50


async def process_event(
    context: JobContext, event_id: int, recompute: bool = False, force_actions: bool = False
) -> str:
    rt = runtime_of(context)
    rt.metrics.jobs_in_flight.inc()
    try:
        with log_context(event_id=event_id):
            await _observe_pickup(rt, context)
            status = await _process_event(rt, context, event_id, recompute=recompute, force_actions=force_actions)
        rt.metrics.jobs.labels(status=status).inc()
        return status
    finally:
        rt.metrics.jobs_in_flight.dec()


async def _observe_pickup(rt: Runtime, context: JobContext) -> None:
    """hookline_pickup_delay_seconds, when this worker serves metrics (one small query per job)."""
    if not rt.metrics.serving or context.job is None or context.job.id is None:
        return
    with contextlib.suppress(Exception):
        row = await rt.db.one("pickup_delay", job_id=context.job.id)
        if row is not None and row["seconds"] is not None:
            rt.metrics.pickup_delay.observe(max(0.0, float(row["seconds"])))


async def _process_event(
    rt: Runtime, context: JobContext, event_id: int, *, recompute: bool, force_actions: bool
) -> str:
    try:
        return await handle_event(rt, event_id, recompute=recompute, force_actions=force_actions)
    except RetryLater:
        raise
    except Exception as e:
        # The database failed us outside the pipeline's error handling (claiming, finishing or
        # recording the event). The event is not terminal: run the job again, or give up loudly.
        attempts = (context.job.attempts if context.job else 0) + 1
        reason = f"{e.__class__.__name__}: {e}"
        if attempts >= MAX_INFRASTRUCTURE_ATTEMPTS:
            with contextlib.suppress(Exception):
                await _finish(
                    rt,
                    event_id,
                    EventStatus.DEAD,
                    error=reason,
                    detail=f"gave up after {attempts} job runs failed outside the pipeline",
                )
            log.error("event %s is dead after %d failed job runs: %s", event_id, attempts, reason)
            return EventStatus.DEAD
        delay = float(min(60, 2 ** min(attempts, 6)))
        log.warning("event %s: job run failed outside the pipeline (%s); again in %.0fs", event_id, reason, delay)
        raise RetryLater(delay, reason) from e


def register(bp: procrastinate.Blueprint) -> None:
    """Add process_event to a fresh blueprint (each App gets its own Task objects)."""
    bp.task(name=PROCESS_EVENT_SHORT, queue=QUEUE, pass_context=True, retry=HooklineRetry())(process_event)


async def handle_event(rt: Runtime, event_id: int, *, recompute: bool = False, force_actions: bool = False) -> str:
    """Process one event; returns the status it ended in (or ``noop`` for a terminal event)."""
    event = await rt.db.one("start_event", event_id=event_id)
    if event is None:
        log.info("event %s is already terminal; nothing to do", event_id)
        return "noop"
    bind_log_context(request_id=event.get("request_id"))
    # a sync pipeline first: a sender waits for its answer
    pipelines = sorted(rt.config.pipelines_for(event["source"], event["event_type"]), key=lambda p: not p.sync)
    if not pipelines:
        await _finish(
            rt,
            event_id,
            EventStatus.SKIPPED,
            detail=f"no pipeline matches source {event['source']!r} and event type {event['event_type']!r}",
        )
        return EventStatus.SKIPPED
    pipelines, filtered = route(pipelines, event)
    if not pipelines:  # routing without the model: no pipeline's `when` lets the event through
        await _finish(rt, event_id, EventStatus.SKIPPED, detail="; ".join(filtered)[:2000])
        return EventStatus.SKIPPED
    if int(event["attempts"]) > 1:
        # a retry of a replayed job: the answer it recomputed and the actions it forced are done
        recompute = force_actions = False
    current: Pipeline | None = None
    dry = False
    superseded_by = await _superseded(rt, event, pipelines)
    if superseded_by is not None:
        pipelines = [p for p in pipelines if not p.latest_wins]
        if not pipelines:
            await _finish(
                rt,
                event_id,
                EventStatus.SKIPPED,
                detail=f"superseded: event {superseded_by} of the same ordering key is newer and already processed",
            )
            return EventStatus.SKIPPED
    try:
        await admit(rt, event, pipelines)
    except Held as held:
        return await _hold(rt, event, held)
    try:
        for pipeline in pipelines:
            current = pipeline
            async with asyncio.timeout(pipeline.timeout_seconds):
                outcome = await run_pipeline(rt, event, pipeline, recompute=recompute, force_actions=force_actions)
            dry = dry or outcome.dry_run
    except asyncio.CancelledError:
        with contextlib.suppress(Exception):
            await asyncio.shield(
                rt.db.run(
                    "retry_event",
                    event_id=event_id,
                    error="interrupted (worker shutdown)",
                    detail="handed back to the queue",
                )
            )
        raise
    except Held as held:
        return await _hold(rt, event, held)
    except Exception as e:
        assert current is not None
        return await _failed(rt, event, current, e)
    detail = (
        ("dry run: ANTHROPIC_API_KEY is not set; the request is stored in hookline.llm_calls, no action fired")
        if dry
        else ("simulated model: answers made up from the output schema, no API call" if rt.simulated else None)
    )
    await _finish(rt, event_id, EventStatus.SUCCEEDED, dry_run=dry, detail=detail)
    return EventStatus.SUCCEEDED


async def _superseded(rt: Runtime, event: EventRow, pipelines: list[Pipeline]) -> int | None:
    """latest_wins: the id of a newer (sender's clock) event of the same key already processed."""
    if not any(p.latest_wins for p in pipelines) or not event.get("ordering_key") or not event.get("occurred_at"):
        return None
    row = await rt.db.one(
        "newer_processed",
        source=event["source"],
        ordering_key=event["ordering_key"],
        event_id=event["id"],
        occurred_at=event["occurred_at"],
    )
    return int(row["id"]) if row else None


async def _failed(rt: Runtime, event: EventRow, pipeline: Pipeline, exc: BaseException) -> str:
    err = classify(exc)
    attempt = int(event["attempts"])
    policy = pipeline.retry
    where = f"pipeline {pipeline.name}: {err}"
    if err.permanent or attempt >= policy.max_attempts:
        why = "permanent error" if err.permanent else f"gave up after {attempt} attempt(s)"
        await _finish(rt, event["id"], EventStatus.DEAD, error=where, detail=why)
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


async def _hold(rt: Runtime, event: EventRow, held: Held) -> str:
    """Over a cap or limit: ``throttled`` and rescheduled (the run is not an attempt), or dead."""
    if held.dead:
        await _finish(rt, event["id"], EventStatus.DEAD, error=held.reason, detail="over a tenant cap (on_cap = dead)")
        log.warning("event %s is dead: %s", event["id"], held.reason)
        return EventStatus.DEAD
    await one(rt, "throttle_event", event_id=event["id"], detail=f"throttled: {held.reason}")
    log.info("event %s throttled for %.1fs: %s", event["id"], held.delay, held.reason)
    raise Throttled(held.delay, held.reason)


async def _finish(
    rt: Runtime,
    event_id: int,
    status: str,
    *,
    dry_run: bool = False,
    detail: str | None = None,
    error: str | None = None,
) -> None:
    await rt.db.run("finish_event", event_id=event_id, status=status, dry_run=dry_run, detail=detail, error=error)
    log.info("event %s %s", event_id, status, extra={"status": str(status)})
