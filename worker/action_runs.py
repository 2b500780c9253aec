"""Run a pipeline's actions for one answer, each under its ``hookline.action_runs`` row.

The row is claimed before the action starts (``running``) and finished after. What a claim finds
decides what happens:

* ``succeeded``: skipped (a retried or replayed job never repeats a side effect it knows happened;
  ``replay --force`` runs it again, except ``sql``, which runs exactly once, under a key of its own:
  ``…-replay-N``, kept by that run's retries, so a receiver that drops repeats by key takes it);
* ``running`` for an at-most-once type (``slack``, follow-ups): the last start died without an
  outcome, so the message may be out; it is not sent again, the action fails permanently saying so.
  A run younger than the longest a live one lasts (:func:`in_flight_for`) may be another worker's,
  still posting: the event waits for it (a hold) instead;
* ``sql``: the call and the ``succeeded`` record commit in one transaction.

An action cancelled before it returned is recorded ``failed`` saying why (:func:`cut_off`), so no
run stays ``running`` after its event ended; only an at-most-once type cut off by a worker shutdown
stays ``running`` for the next run to find (its event is handed back).
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable
from typing import Any, TypeVar

from app.core.config import Action, Pipeline, SqlAction
from app.core.config.followups import FOLLOWUP_TYPES, DiscordFollowupAction, SlackResponseAction
from app.core.payload import template_fields
from app.core.records import EventRow
from app.core.status import ActionStatus
from worker.actions import AT_MOST_ONCE, IN_TRANSACTION, ActionContext, ActionDeps, run_action
from worker.actions import sql as sql_action
from worker.deadline import PIPELINE_DEADLINE
from worker.errors import PermanentError, PipelineError, classify
from worker.followups import reply_was_late, run_followup
from worker.runtime import Runtime

T = TypeVar("T")

#: Of a pipeline's ``timeout_seconds``, what an action leaves for recording its outcome: a tenth, at most 1 s.
RECORD_RESERVE = 0.1
RECORD_RESERVE_MAX = 1.0
#: Beyond its bound (:func:`in_flight_for`), what a live worker's run of an action may take: the claim's
#: round trip, rendering, the record of its outcome.
IN_FLIGHT_MARGIN = 5.0
#: At-most-once types whose own timeout bounds their whole call (worker.actions.outbound.send).
SELF_TIMED = frozenset({"slack"})


class InFlight(PipelineError):
    """Another worker's run of this action may still be in flight: the event waits ``delay`` seconds
    (a hold, not an attempt; worker.pipeline makes it a :class:`worker.limits.Held`)."""

    def __init__(self, message: str, *, delay: float) -> None:
        super().__init__(message)
        self.delay = delay


def in_flight_for(action: Action, pipeline: Pipeline, deps: ActionDeps) -> float:
    """For an at-most-once type, the longest its run lasts from its claim while its worker lives: its
    own timeout, for a type that bounds its whole call by it, else its pipeline's ``timeout_seconds``
    (which cuts it off and records it, :func:`cut_off`), plus :data:`IN_FLIGHT_MARGIN`. A run
    ``running`` for longer has no live worker: it was interrupted. A younger one may be another
    worker's, still posting (its job was taken for stalled while it lived: a heartbeat that could not
    reach Postgres, a paused process), so it is waited for, not declared interrupted. 0 for the other
    types: they run again anyway (same idempotency key; ``sql`` rolls a second call back)."""
    if action.type not in AT_MOST_ONCE and action.type not in FOLLOWUP_TYPES:
        return 0.0
    bound = pipeline.timeout_seconds
    if action.type in SELF_TIMED:
        bound = min(bound, getattr(action, "timeout_seconds", None) or deps.timeout)
    return bound + IN_FLIGHT_MARGIN


def deps_of(rt: Runtime, pipeline: Pipeline | None = None) -> ActionDeps:
    """With ``pipeline``: actions end a little before its timeout (ActionDeps.deadline)."""
    end = PIPELINE_DEADLINE.get() if pipeline is not None else None
    if end is not None and pipeline is not None:
        end -= min(RECORD_RESERVE_MAX, RECORD_RESERVE * pipeline.timeout_seconds)
    return ActionDeps(
        http=rt.http,
        environ=rt.settings.environ,
        timeout=rt.settings.outbound_timeout,
        slack_api_url=rt.settings.slack_api_url,
        deadline=end,
        config=rt.config,
    )


def interrupted(kind: str, key: str, event_id: int, why: str = "the worker stopped mid-request") -> PermanentError:
    return PermanentError(
        f"{kind} action {key}: its last attempt was interrupted with the outcome unknown ({why}), so it may "
        f"have been delivered; {kind} has no idempotency key and hookline sends at most once. Check the "
        f"destination; `hookline replay {event_id}` sends it again."
    )


async def settle(write: Awaitable[T]) -> T:
    """Await ``write`` to its end even when this task is cancelled meanwhile (the cancellation then
    goes on): the record of what an action did is never dropped halfway."""
    task = asyncio.ensure_future(write)
    try:
        return await asyncio.shield(task)
    except asyncio.CancelledError:
        await asyncio.wait([task])
        raise


async def _outcome(rt: Runtime, run_id: int, status: str, result: Any, error: str | None) -> int:
    """Record a run's outcome, tried again while the database is away (as a paid answer is: an outcome
    known here must not become "interrupted", a Slack post that went out would be dead-lettered as
    "may have been posted" and a replay would post it twice). Returns the rows changed: 0 when the
    run is no longer ``running`` (another run of the event recorded its own outcome)."""
    return await settle(
        rt.db.durable(
            lambda: rt.db.run("finish_action", id=run_id, status=status, result=result, error=error),
            "an action's outcome",
            one_statement=True,
        )
    )


async def _succeeded(rt: Runtime, run_id: int) -> bool:
    async with rt.db.pool.connection() as conn:
        row = await (await conn.execute(sql_action.Q["action_run_status"], {"id": run_id})).fetchone()
    return row is not None and row[0] == ActionStatus.SUCCEEDED


async def cut_off(
    rt: Runtime, event: EventRow, pipeline: Pipeline, run_id: int, kind: str, key: str, *, sent: bool
) -> Exception | None:
    """An action cancelled before it returned (``sent``: after its call began): record its run
    ``failed`` with why, unless its outcome is recorded already (a ``sql`` action's commit). Returns
    what to raise instead of the cancellation: an at-most-once type cut off mid-call by the pipeline's
    ``timeout_seconds`` fails permanently at once, as the next attempt would (its message may be out).
    Cut off mid-call by a worker shutdown, such a run stays ``running`` for the run that takes the
    handed-back event to find."""
    deadline = PIPELINE_DEADLINE.get()
    task = asyncio.current_task()
    timed_out = deadline is not None and asyncio.get_running_loop().time() >= deadline
    timed_out = timed_out and (task is None or task.cancelling() <= 1)  # not a shutdown at the same moment
    why = f"pipeline {pipeline.name}'s timeout_seconds ran out" if timed_out else "the worker shut down"
    instead: Exception | None = None
    if not sent:
        error = f"{kind} action {key}: cut off before it started ({why}); nothing was sent"
    elif kind in AT_MOST_ONCE or kind in FOLLOWUP_TYPES:
        if not timed_out:
            return None
        instead = interrupted(kind, key, event["id"], why)
        error = str(instead)
    else:
        error = (
            f"{kind} action {key}: cut off before it returned ({why}), outcome unknown; a retry or replay runs it again"
        )
    await settle(rt.db.run("cut_off_action", id=run_id, error=error))
    rt.metrics.actions.labels(pipeline=pipeline.name, type=kind, outcome=ActionStatus.FAILED).inc()
    return instead


async def run_actions(
    rt: Runtime, event: EventRow, pipeline: Pipeline, output: Any, *, force_actions: bool = False
) -> int:
    """Run the pipeline's actions in order; returns how many ran. Raises the first failure."""
    if not pipeline.actions:  # nothing to trim the payload for
        return 0
    ran = 0
    late: bool | None = None  # sync pipelines: did the HTTP reply miss the answer? (asked once)
    fields = template_fields(event.get("payload"), pipeline.fields)
    deps = deps_of(rt, pipeline)
    for index, action in enumerate(pipeline.actions):
        key = pipeline.action_key(index)
        in_flight = in_flight_for(action, pipeline, deps)
        claim = await rt.db.one(
            "claim_action",
            event_id=event["id"],
            pipeline=pipeline.name,
            action=key,
            action_type=action.type,
            idempotency_key=f"hookline-{event['id']}-{pipeline.name}-{key}",
            force=force_actions and action.type not in IN_TRANSACTION,
            in_flight_s=in_flight,
        )
        if claim is None:  # already succeeded: a retried job never repeats a side effect
            continue
        run_id, idem = claim["id"], claim["idempotency_key"]
        if run_id is None or idem is None:
            held = float(claim["held_s"] or 0.0)
            raise InFlight(
                f"{action.type} action {key}: a run of it started less than {in_flight:g}s "
                f"ago (the longest a run lasts) may still be in flight on another worker; the event waits "
                f"{held:.1f}s, then decides",
                delay=held,
            )
        ctx = ActionContext(
            event_id=event["id"],
            source=event["source"],
            event_type=event.get("event_type"),
            pipeline=pipeline.name,
            action=key,
            idempotency_key=idem,  # a forced run's own key (claim_action)
            output=output,
            payload=event.get("payload"),
            tenant=event.get("tenant"),
            occurred_at=event.get("occurred_at") or event.get("received_at"),
            fields=fields,
        )
        sending = False  # the action's call began: what it sent is unknown if it is cancelled now
        try:
            at_most_once = action.type in AT_MOST_ONCE or action.type in FOLLOWUP_TYPES
            if at_most_once and claim["previous_status"] == ActionStatus.RUNNING:
                raise interrupted(action.type, key, event["id"])
            if isinstance(action, SqlAction):
                what = f"sql action {key}"
                timeout = deps.timeout_for(action.timeout_seconds or pipeline.timeout_seconds, what=what)
                sending = True
                async with rt.db.pool.connection() as conn:
                    result = await sql_action.call_and_record(conn, action, ctx, run_id, timeout)
                rt.metrics.actions.labels(
                    pipeline=pipeline.name, type=action.type, outcome=ActionStatus.SUCCEEDED
                ).inc()
                ran += 1
                continue
            if isinstance(action, SlackResponseAction | DiscordFollowupAction):  # worker/followups.py
                if pipeline.sync and action.late_only and late is None:
                    late = await reply_was_late(rt, event["id"], pipeline)
                if pipeline.sync and action.late_only and not late:
                    result = {"skipped": "the answer went out in the HTTP reply"}
                else:
                    timeout = deps.timeout_for(action.timeout_seconds, what=f"{action.type} action {key}")
                    sending = True
                    result = await run_followup(action, ctx, ctx.template_context(), http=rt.http, timeout=timeout)
            else:
                sending = True
                result = await run_action(action, ctx, deps)
        except asyncio.CancelledError:
            instead = await cut_off(rt, event, pipeline, run_id, action.type, key, sent=sending)
            if instead is None:
                raise
            raise instead from None  # the pipeline's timeout scope takes this in place of its cancellation
        except Exception as e:
            err = e if isinstance(e, PipelineError) else classify(e)
            if not await _outcome(rt, run_id, ActionStatus.FAILED, None, str(err)) and await _succeeded(rt, run_id):
                continue  # another run of the event recorded it succeeded (a sql action's call waited on it)
            rt.metrics.actions.labels(pipeline=pipeline.name, type=action.type, outcome=ActionStatus.FAILED).inc()
            raise err from e
        await _outcome(rt, run_id, ActionStatus.SUCCEEDED, result, None)
        rt.metrics.actions.labels(pipeline=pipeline.name, type=action.type, outcome=ActionStatus.SUCCEEDED).inc()
        ran += 1
    return ran
