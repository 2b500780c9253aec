"""Run one pipeline for one event: reuse or make the model call, store it, then run the actions."""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any

from app.core.config import Pipeline
from app.core.records import EventRow
from app.core.status import CallStatus
from worker.action_runs import run_actions
from worker.errors import InvalidOutput, classify
from worker.llm import CallRecord, ask
from worker.prompt import build_request, output_spec, trim
from worker.runtime import Runtime

log = logging.getLogger("hookline.pipeline")


@dataclass
class PipelineOutcome:
    pipeline: str
    dry_run: bool = False


def _call_row(event_id: int, pipeline: str, rec: CallRecord) -> dict[str, Any]:
    usage = rec.usage or {}
    return {
        "event_id": event_id,
        "pipeline": pipeline,
        "model": rec.model,
        "status": rec.status,
        "request": rec.request,
        "response": rec.response,
        "output": rec.output,
        "error": rec.error,
        "input_tokens": usage.get("input_tokens"),
        "output_tokens": usage.get("output_tokens"),
        "cache_creation_input_tokens": usage.get("cache_creation_input_tokens"),
        "cache_read_input_tokens": usage.get("cache_read_input_tokens"),
        "cost_usd": rec.cost_usd,
        "latency_ms": rec.latency_ms,
        "request_id": rec.request_id,
    }


async def answer_for(rt: Runtime, event: EventRow, pipeline: Pipeline, *, recompute: bool = False) -> tuple[Any, bool]:
    """The validated output for (event, pipeline): the stored one if any, else a new model call.

    Returns ``(output, reused)``; ``output`` is None for a dry run. Every call is stored before the
    caller runs any action.
    """
    eid = event["id"]
    if not recompute:
        answers = event.get("answers")
        if answers is not None:  # loaded with the event by start_event: no round trip
            if pipeline.name in answers:
                return answers[pipeline.name]["output"], True
        else:
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
            **_call_row(
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
    try:
        answer = await ask(rt.llm, request, output_spec(pipeline))
    except InvalidOutput as e:
        for rec in getattr(e, "calls", []):
            await rt.db.one("insert_call", **_call_row(eid, pipeline.name, rec))
        raise
    except Exception as e:
        err = classify(e)
        await rt.db.one(
            "insert_call",
            **_call_row(
                eid,
                pipeline.name,
                CallRecord(model=pipeline.model, status=CallStatus.FAILED, request=request, error=str(err)),
            ),
        )
        raise err from e
    for rec in answer.calls:
        await rt.db.one("insert_call", **_call_row(eid, pipeline.name, rec))
    return answer.output, False


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
    await run_actions(rt, event, pipeline, output, force_actions=force_actions)
    return outcome
