"""Run a pipeline's actions for one answer, each under its ``hookline.action_runs`` row.

The row is claimed before the action starts (``running``) and finished after. What a claim finds
decides what happens:

* ``succeeded``: skipped (a retried or replayed job never repeats a side effect it knows happened;
  ``replay --force`` runs it again, except ``sql``, which runs exactly once, under a key of its own:
  ``…-replay-N``, kept by that run's retries, so a receiver that drops repeats by key takes it);
* ``running`` for an at-most-once type (``slack``): the last start died without an outcome, so the
  message may be out; it is not sent again, the action fails permanently saying so;
* ``sql``: the call and the ``succeeded`` record commit in one transaction.
"""

from __future__ import annotations

from typing import Any

from app.core.config import Pipeline, SqlAction
from app.core.config.followups import FOLLOWUP_TYPES, DiscordFollowupAction, SlackResponseAction
from app.core.records import EventRow
from app.core.status import ActionStatus
from worker.actions import AT_MOST_ONCE, IN_TRANSACTION, ActionContext, ActionDeps, run_action
from worker.actions import sql as sql_action
from worker.deadline import PIPELINE_DEADLINE
from worker.errors import PermanentError, PipelineError, classify
from worker.followups import reply_was_late, run_followup
from worker.prompt import trim
from worker.runtime import Runtime

#: Of a pipeline's ``timeout_seconds``, what an action leaves for recording its outcome: a tenth, at most 1 s.
RECORD_RESERVE = 0.1
RECORD_RESERVE_MAX = 1.0


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
    )


def interrupted(kind: str, key: str, event_id: int) -> PermanentError:
    return PermanentError(
        f"{kind} action {key}: its last attempt was interrupted with the outcome unknown (the worker stopped "
        f"mid-request), so it may have been delivered; {kind} has no idempotency key and hookline sends at most "
        f"once. Check the destination; `hookline replay {event_id}` sends it again."
    )


async def run_actions(
    rt: Runtime, event: EventRow, pipeline: Pipeline, output: Any, *, force_actions: bool = False
) -> int:
    """Run the pipeline's actions in order; returns how many ran. Raises the first failure."""
    ran = 0
    late: bool | None = None  # sync pipelines: did the HTTP reply miss the answer? (asked once)
    fields = trim(event.get("payload"), pipeline.fields)
    deps = deps_of(rt, pipeline)
    for index, action in enumerate(pipeline.actions):
        key = pipeline.action_key(index)
        claim = await rt.db.one(
            "claim_action",
            event_id=event["id"],
            pipeline=pipeline.name,
            action=key,
            action_type=action.type,
            idempotency_key=f"hookline-{event['id']}-{pipeline.name}-{key}",
            force=force_actions and action.type not in IN_TRANSACTION,
        )
        if claim is None:  # already succeeded: a retried job never repeats a side effect
            continue
        ctx = ActionContext(
            event_id=event["id"],
            source=event["source"],
            event_type=event.get("event_type"),
            pipeline=pipeline.name,
            action=key,
            idempotency_key=claim["idempotency_key"],  # a forced run's own key (claim_action)
            output=output,
            payload=event.get("payload"),
            tenant=event.get("tenant"),
            occurred_at=event.get("occurred_at") or event.get("received_at"),
            fields=fields if isinstance(fields, dict) else {"payload": fields},
        )
        try:
            at_most_once = action.type in AT_MOST_ONCE or action.type in FOLLOWUP_TYPES
            if at_most_once and claim["previous_status"] == ActionStatus.RUNNING:
                raise interrupted(action.type, key, event["id"])
            if isinstance(action, SqlAction):
                what = f"sql action {key}"
                timeout = deps.timeout_for(action.timeout_seconds or pipeline.timeout_seconds, what=what)
                async with rt.db.pool.connection() as conn:
                    result = await sql_action.call_and_record(conn, action, ctx, claim["id"], timeout)
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
                    result = await run_followup(action, ctx, ctx.template_context(), http=rt.http, timeout=timeout)
            else:
                result = await run_action(action, ctx, deps)
        except Exception as e:
            err = e if isinstance(e, PipelineError) else classify(e)
            await rt.db.run("finish_action", id=claim["id"], status=ActionStatus.FAILED, result=None, error=str(err))
            rt.metrics.actions.labels(pipeline=pipeline.name, type=action.type, outcome=ActionStatus.FAILED).inc()
            raise err from e
        await rt.db.run("finish_action", id=claim["id"], status=ActionStatus.SUCCEEDED, result=result, error=None)
        rt.metrics.actions.labels(pipeline=pipeline.name, type=action.type, outcome=ActionStatus.SUCCEEDED).inc()
        ran += 1
    return ran
