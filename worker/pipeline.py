"""Run one pipeline for one event: reuse or make the model call, store it, then run the actions."""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any

from app.core.config import Pipeline
from app.core.records import EventRow
from app.core.status import ActionStatus, CallStatus
from worker.actions import ActionContext, run_action
from worker.batches import batch_answer
from worker.errors import PipelineError, classify
from worker.gate import Gate
from worker.llm import CallRecord, ask, call_row
from worker.microbatch import micro_answer
from worker.prompt import build_request, output_spec, trim
from worker.runtime import Runtime

log = logging.getLogger("hookline.pipeline")


@dataclass
class PipelineOutcome:
    pipeline: str
    dry_run: bool = False


async def answer_for(rt: Runtime, event: EventRow, pipeline: Pipeline, *, recompute: bool = False) -> tuple[Any, bool]:
    """The validated output for (event, pipeline): the stored one if any, else a new model call.

    Returns ``(output, reused)``; ``output`` is None for a dry run. Every call is stored before the
    caller runs any action.
    """
    eid = event["id"]
    if not recompute:
        stored = await rt.db.one("succeeded_call", event_id=eid, pipeline=pipeline.name)
        if stored is not None:
            return stored["output"], True
    if recompute:  # before the call: a failed call must not leave the old answer in place for the retry
        await rt.db.run("supersede_calls", event_id=eid, pipeline=pipeline.name)
    history = await _history(rt, event, pipeline) if pipeline.history else None
    request = build_request(pipeline, event, history)
    if rt.llm is None:
        await rt.db.one(
            "insert_call",
            **call_row(
                eid,
                pipeline.name,
                CallRecord(
                    model=pipeline.model,
                    status=CallStatus.DRY_RUN,
                    request=request,
                    error="dry run: ANTHROPIC_API_KEY is not set; the request was stored, not sent",
                ),
            ),
        )
        return None, False
    if pipeline.mode == "batch_api":
        await batch_answer(rt, event, pipeline, request)  # raises: waiting, or the request's failure
    if pipeline.batch is not None:
        return await micro_answer(rt, event, pipeline, request), False
    gate = Gate(rt, event, pipeline)
    try:
        answer = await ask(gate, request, output_spec(pipeline), max_tokens_cap=pipeline.max_tokens_cap)
        output = answer.output
        esc = pipeline.escalate
        if esc is not None and isinstance(output, dict) and output.get(esc.when) is True:
            for rec in answer.calls:  # the escalated answer takes the one succeeded slot
                if rec.status == CallStatus.SUCCEEDED:
                    rec.status = CallStatus.SUPERSEDED
            stronger = {**request, "model": esc.model}
            answer = await ask(
                gate,
                stronger,
                output_spec(pipeline),
                max_tokens_cap=pipeline.max_tokens_cap,
                route=f"escalate:{esc.when}",
            )
            output = answer.output
    except Exception as e:
        err = classify(e)
        await _store(rt, eid, pipeline.name, gate.records)
        if not gate.records:
            await rt.db.one(
                "insert_call",
                **call_row(
                    eid,
                    pipeline.name,
                    CallRecord(model=pipeline.model, status=CallStatus.FAILED, request=request, error=str(err)),
                ),
            )
        raise err from e
    await _store(rt, eid, pipeline.name, gate.records)
    return output, False


async def _store(rt: Runtime, event_id: int, pipeline: str, records: list[CallRecord]) -> None:
    """Every round trip of this run, in order, before any action (a limit hold stores none)."""
    for rec in records:
        await rt.db.one("insert_call", **call_row(event_id, pipeline, rec))


async def _history(rt: Runtime, event: EventRow, pipeline: Pipeline) -> list[dict[str, Any]] | None:
    """The last ``pipeline.history`` events of the same entity, oldest first, trimmed like the event."""
    if not event.get("ordering_key"):
        return None
    recent = await rt.db.history(
        source=event["source"],
        ordering_key=event["ordering_key"],
        event_id=event["id"],
        limit=pipeline.history,
    )
    return [
        {
            "event_id": r["id"],
            "event_type": r["event_type"],
            "status": r["status"],
            "occurred_at": (r["occurred_at"] or r["received_at"]).isoformat(),
            "fields": trim(r["payload"], pipeline.fields),
        }
        for r in reversed(recent)
    ]


async def run_pipeline(
    rt: Runtime, event: EventRow, pipeline: Pipeline, *, recompute: bool = False, force_actions: bool = False
) -> PipelineOutcome:
    outcome = PipelineOutcome(pipeline.name)
    output, _reused = await answer_for(rt, event, pipeline, recompute=recompute)
    if output is None:
        outcome.dry_run = True
        return outcome
    for index, action in enumerate(pipeline.actions):
        key = pipeline.action_key(index)
        idem = f"hookline-{event['id']}-{pipeline.name}-{key}"
        claim = await rt.db.one(
            "claim_action",
            event_id=event["id"],
            pipeline=pipeline.name,
            action=key,
            action_type=action.type,
            idempotency_key=idem,
            force=force_actions,
        )
        if claim is None:  # already succeeded: a retried job never repeats a side effect
            continue
        ctx = ActionContext(
            event_id=event["id"],
            source=event["source"],
            event_type=event.get("event_type"),
            pipeline=pipeline.name,
            action=key,
            idempotency_key=idem,
            output=output,
            payload=event.get("payload"),
        )
        try:
            result = await run_action(
                action, ctx, http=rt.http, environ=rt.settings.environ, timeout=rt.settings.outbound_timeout
            )
        except Exception as e:
            err = e if isinstance(e, PipelineError) else classify(e)
            await rt.db.run("finish_action", id=claim["id"], status=ActionStatus.FAILED, result=None, error=str(err))
            raise err from e
        await rt.db.run("finish_action", id=claim["id"], status=ActionStatus.SUCCEEDED, result=result, error=None)
    return outcome
