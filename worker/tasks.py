"""procrastinate tasks. Job arguments are ids; the worker reloads state from Postgres."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from typing import cast

import procrastinate
from procrastinate import JobContext, RetryDecision
from procrastinate.jobs import Job

from app.core.config import Pipeline
from app.core.jobs import PROCESS_EVENT_SHORT, QUEUE
from app.core.logs import bind_log_context, log_context
from app.core.records import EventRow, StartRow
from app.core.status import EventStatus
from worker import concurrency, limits
from worker.closing import Closing, success_detail
from worker.db import database_away
from worker.deadline import PIPELINE_DEADLINE
from worker.limits import Held, admit
from worker.outcomes import RetryLater as RetryLater
from worker.outcomes import Throttled, claim_of, failed, finish, hold, infrastructure_failure
from worker.pipeline import run_pipeline
from worker.routing import route
from worker.runtime import Runtime

log = logging.getLogger("hookline.worker")


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


async def process_event(
    context: JobContext, event_id: int, recompute: bool = False, force_actions: bool = False
) -> str:
    """Run the event of this job and, when a backlog waits and this process has free concurrency,
    up to ``HOOKLINE_WORKER_CLAIM_BATCH - 1`` more claimed in the same round trip (each finishes its
    own procrastinate job in its last write). Returns the status this job's event ended in."""
    rt = runtime_of(context)
    job = context.job
    job_id = job.id if job else None
    attempts = (job.attempts if job else 0) + 1
    # the fetch that handed this job over claimed its event already when nothing else was runnable
    fetched = rt.db.handover.claimed(job_id) if job_id is not None else None
    await rt.slots.acquire()
    more = 0
    if job_id is not None:
        rt.db.handover.begin(job_id)
    try:
        if fetched is not None:
            rows = [fetched]
        else:
            if job is not None and job_id is not None and not (recompute or force_actions):
                more = rt.slots.grab(rt.settings.worker_claim_batch - 1)
            with log_context(event_id=event_id):
                try:
                    rows = await rt.db.start(
                        event_id=event_id,
                        job_id=job_id,
                        more=more,
                        queue=job.queue if job else None,
                        task=job.task_name if job else None,
                        pickup=rt.metrics.serving,
                    )
                except Exception as e:
                    return await _start_failed(rt, event_id, attempts, e, job_id)
        mine = [r for r in rows if r["job_id"] is None]
        extras = [r for r in rows if r["job_id"] is not None]
        rt.slots.release(more - len(extras))
        more = 0
        seen = {event_id}
        runs = [asyncio.create_task(_run_claimed(rt, r, seen)) for r in extras]
        try:
            return await _run_job(rt, mine[0] if mine else None, event_id, attempts, recompute, force_actions, job_id)
        except asyncio.CancelledError:
            for run in runs:
                run.cancel()
            raise
        finally:
            if runs:
                await asyncio.gather(*runs, return_exceptions=True)
    finally:
        rt.slots.release(1 + more)
        if job_id is not None:
            rt.db.handover.end(job_id)


async def _start_failed(rt: Runtime, event_id: int, attempts: int, exc: Exception, job_id: int | None) -> str:
    """The claim itself failed (the database away, a lock timeout): the job's outcome, counted in
    ``hookline_worker_jobs_total`` as a job whose event ran is."""
    try:
        status = await infrastructure_failure(rt, event_id, attempts, exc, job_id=job_id)
    except RetryLater as later:
        rt.metrics.jobs.labels(status=rescheduled(later)).inc()
        raise
    rt.metrics.job_done(status)
    return status


async def _run_job(
    rt: Runtime,
    row: StartRow | None,
    event_id: int,
    attempts: int,
    recompute: bool,
    force_actions: bool,
    job_id: int | None,
) -> str:
    """The event of the job procrastinate handed over. A terminal outcome finishes job ``job_id`` in the
    event's last write (procrastinate then skips its own finish: worker.handover); otherwise
    procrastinate finishes or retries the job."""
    rt.metrics.jobs_in_flight.inc()
    try:
        with log_context(event_id=event_id):
            _observe_pickup(rt, row)
            try:
                status = await handle_event(
                    rt,
                    event_id,
                    recompute=recompute,
                    force_actions=force_actions,
                    claimed=row,
                    preloaded=True,
                    job_id=job_id,
                )
            except RetryLater:
                raise
            except Exception as e:
                claim = _claim_of(row)
                read = row if claim is not None else None  # the event's row: its payload was read
                status = await infrastructure_failure(rt, event_id, attempts, e, job_id=job_id, claim=claim, event=read)
        rt.metrics.job_done(status)
        return status
    except RetryLater as later:  # procrastinate runs the job again: counted by why
        rt.metrics.jobs.labels(status=rescheduled(later)).inc()
        raise
    finally:
        rt.metrics.jobs_in_flight.dec()


async def _run_claimed(rt: Runtime, row: StartRow, seen: set[int]) -> None:
    """An event claimed with another job's (batch claim). This worker owns its procrastinate job: a
    terminal outcome finishes it in the event's last write; a retry or hold hands it back."""
    event_id, job_id = int(row["event_id"]), row["job_id"]
    assert job_id is not None
    rt.metrics.jobs_in_flight.inc()
    status = "noop"
    try:
        with log_context(event_id=event_id):
            _observe_pickup(rt, row)
            try:
                if row["id"] is None or event_id in seen:  # already terminal, or run by another job here
                    await rt.db.run(
                        "finish_event",
                        event_id=None,
                        status=None,
                        dry_run=False,
                        detail=None,
                        error=None,
                        job_id=job_id,
                        claim=None,
                    )
                    return
                seen.add(event_id)
                try:
                    status = await handle_event(rt, event_id, claimed=row, preloaded=True, job_id=job_id)
                except RetryLater:
                    raise
                except Exception as e:
                    claim = _claim_of(row)
                    status = await infrastructure_failure(
                        rt,
                        event_id,
                        (row["job_attempts"] or 0) + 1,
                        e,
                        job_id=job_id,
                        claim=claim,
                        event=row if claim is not None else None,
                    )
            except RetryLater as later:
                status = rescheduled(later)
                await _hand_back(rt, job_id, later.delay)
            except asyncio.CancelledError:
                await asyncio.shield(_hand_back(rt, job_id, 0.0))
                raise
    finally:
        rt.metrics.job_done(status)
        rt.metrics.jobs_in_flight.dec()
        rt.slots.release()


def rescheduled(later: RetryLater) -> str:
    """The ``status`` label of a job run that ends rescheduled: ``throttled`` (held by a limit, not an
    attempt) or ``retrying`` (failed, tried again)."""
    return EventStatus.THROTTLED if isinstance(later, Throttled) else EventStatus.RETRYING


async def _hand_back(rt: Runtime, job_id: int, delay: float) -> None:
    """Reschedule a job this worker claimed itself. Retried for a while if Postgres is away: a job
    left ``doing`` under a live worker would wait for that worker to stop."""
    for attempt in range(8):
        try:
            await rt.db.run("retry_job", job_id=job_id, delay=delay)
            return
        except Exception as e:
            if attempt == 7:
                log.error("could not hand job %s back (%s); it runs again once this worker stops", job_id, e)
                return
            await asyncio.sleep(min(10.0, 0.25 * 2**attempt))


def _claim_of(row: StartRow | None) -> int | None:
    """The claim a start row made (:func:`claim_of`), None without one."""
    return claim_of(cast(EventRow, row)) if row is not None and row["id"] is not None else None


def _observe_pickup(rt: Runtime, row: StartRow | None) -> None:
    """hookline_pickup_delay_seconds, when this worker serves metrics (measured by the claim)."""
    if row is not None and row.get("pickup_s") is not None:
        rt.metrics.pickup_delay.observe(max(0.0, float(row["pickup_s"] or 0.0)))


def register(bp: procrastinate.Blueprint) -> None:
    """Add process_event to a fresh blueprint (each App gets its own Task objects)."""
    bp.task(name=PROCESS_EVENT_SHORT, queue=QUEUE, pass_context=True, retry=HooklineRetry())(process_event)


async def handle_event(
    rt: Runtime,
    event_id: int,
    *,
    recompute: bool = False,
    force_actions: bool = False,
    claimed: StartRow | None = None,
    preloaded: bool = False,
    job_id: int | None = None,
) -> str:
    """Process one event; returns the status it ended in (or ``noop`` for a terminal event).

    ``preloaded``: ``claimed`` is the event's row from :func:`process_event`'s claim (None: the event
    was already terminal); otherwise it is claimed here. ``job_id``: the event's procrastinate job (handed
    over, or claimed by this worker itself), finished with the event's terminal write."""
    if not preloaded:
        rows = await rt.db.start(event_id=event_id, job_id=None, more=0, queue=None, task=None, pickup=False)
        claimed = rows[0] if rows else None
    if claimed is None or claimed["id"] is None:
        log.info("event %s is already terminal; nothing to do", event_id)
        return "noop"
    event = cast(EventRow, claimed)
    claim = claim_of(event)  # the fencing token of this run's writes (migrations 0047, 0048)
    bind_log_context(request_id=event.get("request_id"))
    # a sync pipeline first: a sender waits for its answer
    pipelines = rt.pipelines_for(event["source"], event["event_type"])
    if not pipelines:
        return await finish(
            rt,
            event_id,
            EventStatus.SKIPPED,
            claim=claim,
            detail=f"no pipeline matches source {event['source']!r} and event type {event['event_type']!r}",
            job_id=job_id,
        )
    matched = pipelines
    pipelines, filtered = route(pipelines, event)
    if not pipelines:  # routing without the model: no pipeline's `when` lets the event through
        detail = "; ".join(filtered)[:2000]
        return await finish(rt, event_id, EventStatus.SKIPPED, claim=claim, detail=detail, job_id=job_id)
    if int(event["attempts"]) > 1:
        # a retry of a replayed job: the answer it recomputed and the actions it forced are done
        recompute = force_actions = False
    # a hold gives its attempt back: the run after it is the replay's first attempt again, and the
    # pipelines that run finished before the hold are done (hookline.events.replay_applied); so is the
    # recompute of the pipeline held itself ("NAME:answer"): it superseded the old answers first, and
    # what it stored since (a first answer before its escalation, a batch's) must not be superseded again
    applied = await _replay_applied(rt, event_id) if recompute or force_actions else ()
    replayed: list[str] = []  # pipelines this run recomputed / forced, recorded if a later one is held
    current: Pipeline | None = None
    recomputing = False  # the current pipeline's old answers were superseded by this run
    closing = Closing(event_id, job_id, simulated=rt.simulated, claim=claim)
    superseded_by = await _superseded(rt, event, pipelines)
    if superseded_by is not None:
        pipelines = [p for p in pipelines if not p.latest_wins]
        if not pipelines:
            return await finish(
                rt,
                event_id,
                EventStatus.SKIPPED,
                claim=claim,
                detail=f"superseded: event {superseded_by} of the same ordering key is newer and already processed",
                job_id=job_id,
            )
    if matched[0].sync and not pipelines[0].sync:  # the sender's reply need not wait for the others
        await rt.db.run("reply_no_answer", event_id=event_id)
    try:
        await admit(rt, event, pipelines)
        await concurrency.acquire(rt, event, pipelines)
    except Held as held:
        return await hold(rt, event, held, job_id)
    try:
        for i, pipeline in enumerate(pipelines):
            current = pipeline
            last = i == len(pipelines) - 1
            done = pipeline.name in applied
            recomputing = recompute and not done and f"{pipeline.name}:answer" not in applied
            forcing = force_actions and not done
            async with asyncio.timeout(pipeline.timeout_seconds) as scope:
                PIPELINE_DEADLINE.set(scope.when())  # a model call cut off by it tells the breaker
                outcome = await run_pipeline(
                    rt,
                    event,
                    pipeline,
                    recompute=recomputing,
                    force_actions=forcing,
                    closing=closing if last else None,
                )
            recomputing = False
            if (recompute or force_actions) and not done:
                replayed.append(pipeline.name)
            closing.dry_so_far = closing.dry_so_far or outcome.dry_run
    except asyncio.CancelledError:
        if not closing.done:  # finished already: nothing to hand back
            with contextlib.suppress(Exception):
                await asyncio.shield(
                    rt.db.run(
                        "retry_event",
                        event_id=event_id,
                        claim=claim,
                        error="interrupted (worker shutdown)",
                        detail="handed back to the queue",
                    )
                )
        raise
    except Held as held:
        if recomputing and current is not None:
            replayed.append(f"{current.name}:answer")
        return await hold(rt, event, held, job_id, replayed=replayed)
    except Exception as e:
        if closing.done:  # the outcome is recorded; what failed came after it (a timeout at the very end)
            return EventStatus.SUCCEEDED
        if database_away(e):  # not the pipeline's attempt: the job runs again (infrastructure_failure)
            raise
        assert current is not None
        return await failed(rt, event, current, e, job_id)
    finally:
        await concurrency.release(rt, event, pipelines)
    if not closing.done:  # no write carried the outcome (a reused answer, a micro-batch, a sql action)
        dry = closing.dry_so_far
        said = success_detail(dry=dry, simulated=rt.simulated)
        return await finish(rt, event_id, EventStatus.SUCCEEDED, claim=claim, dry_run=dry, detail=said, job_id=job_id)
    log.info("event %s %s", event_id, EventStatus.SUCCEEDED, extra={"status": str(EventStatus.SUCCEEDED)})
    return EventStatus.SUCCEEDED


async def _replay_applied(rt: Runtime, event_id: int) -> tuple[str, ...]:
    """The pipelines whose part of the event's latest replay (recompute / force) is done already."""
    row = await limits.one(rt, "replay_applied", event_id=event_id)
    return tuple(row["replay_applied"] or ()) if row else ()


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
