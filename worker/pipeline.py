"""Run one pipeline for one event: reuse or make the model call, store it, then run the actions."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from dataclasses import dataclass
from functools import partial
from typing import Any

from app.core.config import Pipeline
from app.core.records import EventRow
from app.core.status import CallStatus
from worker import limits
from worker.action_runs import InFlight, run_actions
from worker.answers import check_unread, observe, simulating, store_escalated
from worker.batches import batch_answer, leftover
from worker.closing import Closing
from worker.db import database_away
from worker.errors import PipelineError, classify
from worker.gate import Gate
from worker.limits import Held
from worker.llm import Answer, CallRecord, ask, call_row
from worker.microbatch import escalate_batched, micro_answer
from worker.prompt import build_request, output_spec, trim
from worker.runtime import Runtime

log = logging.getLogger("hookline.pipeline")


@dataclass
class PipelineOutcome:
    pipeline: str
    dry_run: bool = False


async def answer_for(
    rt: Runtime, event: EventRow, pipeline: Pipeline, *, recompute: bool = False, closing: Closing | None = None
) -> tuple[Any, bool]:
    """The validated output for (event, pipeline): the stored one if any, else a new model call.

    Returns ``(output, reused)``; ``output`` is None for a dry run. Every call is stored before the
    caller runs any action. With ``closing`` (the event's last pipeline), the statement that stores a
    dry run, or an answer no action follows, also finishes the event.

    ``escalate``: the first answer stays the stored one until the escalated answer replaces it, so a
    retry after a failed or held escalated call reuses it and asks only the escalation model.
    """
    eid = event["id"]
    if not recompute:
        found, output = await _stored_answer(rt, event, pipeline)
        if found:
            if _escalates(pipeline, output) and pipeline.batch is None and pipeline.mode != "batch_api":
                output = await _escalate_stored(rt, event, pipeline, output)
            return output, True
    if recompute:  # before the call: a failed call must not leave the old answer in place for the retry
        await rt.db.run("supersede_calls", event_id=eid, pipeline=pipeline.name)
    history = await _history(rt, event, pipeline) if pipeline.history else None
    request = build_request(pipeline, event, history)
    if rt.llm is None:
        await rt.db.store_call(
            call_row(
                eid,
                pipeline.name,
                CallRecord(
                    model=pipeline.model,
                    status=CallStatus.DRY_RUN,
                    request=request,
                    error="dry run: ANTHROPIC_API_KEY is not set; the request was stored, not sent",
                ),
                closing,
                dry=True,
            ),
            closing,
            inline=pipeline.sync,
        )
        return None, False
    if pipeline.mode == "batch_api":
        await batch_answer(rt, event, pipeline, request)  # raises: waiting, or the request's failure
    else:  # a request still open from when the pipeline was batch_api: used, never paid twice
        await leftover(rt, event, pipeline)
    if pipeline.batch is not None:
        return await micro_answer(rt, event, pipeline, request), False
    gate = Gate(rt, event, pipeline)
    try:
        with simulating(rt, pipeline):
            answer = await ask(gate, request, output_spec(pipeline), max_tokens_cap=pipeline.max_tokens_cap)
            if _escalates(pipeline, answer.output):
                base = [rec for rec in answer.calls if rec.status == CallStatus.SUCCEEDED]
                answer = await _ask_escalated(gate, pipeline, request)
                for rec in base:  # only now: a failed or held escalation leaves the base answer for the retry
                    rec.status = CallStatus.SUPERSEDED  # the escalated answer takes the one succeeded slot
            output = answer.output
    except asyncio.CancelledError:  # the pipeline's timeout_seconds, or a shutdown
        await _store_cut_off(rt, eid, pipeline, gate.records)
        raise
    except Exception as e:
        if database_away(e):  # not the pipeline's failure: the job runs again (worker.outcomes.infrastructure_failure)
            await _store_paid(rt, eid, pipeline, gate.records)
            raise
        err = classify(e)
        await _store_failure(rt, eid, pipeline, gate.records, request, err)
        raise err from e
    await _store(rt, eid, pipeline.name, gate.records, None if pipeline.actions else closing, inline=pipeline.sync)
    return output, False


def _escalates(pipeline: Pipeline, output: Any) -> bool:
    """``escalate``: this answer's boolean field ``when`` is true."""
    esc = pipeline.escalate
    return esc is not None and isinstance(output, dict) and output.get(esc.when) is True


async def _ask_escalated(gate: Gate, pipeline: Pipeline, request: dict[str, Any]) -> Answer:
    """The same request, to ``escalate.model`` (route ``escalate:FIELD``)."""
    assert pipeline.escalate is not None
    esc = pipeline.escalate
    return await ask(
        gate,
        {**request, "model": esc.model},
        output_spec(pipeline),
        max_tokens_cap=pipeline.max_tokens_cap,
        route=f"escalate:{esc.when}",
    )


async def _stored_answer(rt: Runtime, event: EventRow, pipeline: Pipeline) -> tuple[bool, Any]:
    """``(True, output)`` of the succeeded answer stored for (event, pipeline), if any."""
    answers = event.get("answers")
    if answers is not None:  # loaded with the event by start_events: no round trip
        if pipeline.name in answers:
            return True, answers[pipeline.name]["output"]
        return False, None
    stored = await rt.db.one("succeeded_call", event_id=event["id"], pipeline=pipeline.name)
    return (True, stored["output"]) if stored is not None else (False, None)


async def _escalate_stored(rt: Runtime, event: EventRow, pipeline: Pipeline, output: Any) -> Any:
    """A stored answer that ``escalate`` has not re-asked yet: its escalated call failed or was held in
    an earlier run. Only the escalated call is made now (the stored answer is reused, never paid
    again); the escalated answer supersedes it in the statement that stores it."""
    if rt.llm is None:
        return output
    due = await limits.one(rt, "escalation_due", event_id=event["id"], pipeline=pipeline.name)
    if due is None:  # the stored answer is the escalated one
        return output
    history = await _history(rt, event, pipeline) if pipeline.history else None
    request = build_request(pipeline, event, history)
    gate = Gate(rt, event, pipeline)
    try:
        with simulating(rt, pipeline):
            answer = await _ask_escalated(gate, pipeline, request)
    except asyncio.CancelledError:
        with contextlib.suppress(Exception):
            stored = store_escalated(rt, event["id"], pipeline, gate.records, due["id"], _store, unread=True)
            await asyncio.shield(stored)
        raise
    except Exception as e:
        await store_escalated(rt, event["id"], pipeline, gate.records, due["id"], _store, unread=True)
        if database_away(e):  # not the pipeline's failure: the job runs again
            raise
        raise classify(e) from e
    await store_escalated(rt, event["id"], pipeline, gate.records, due["id"], _store)
    return answer.output


async def _store_failure(
    rt: Runtime,
    event_id: int,
    pipeline: Pipeline,
    records: list[CallRecord],
    request: dict[str, Any],
    err: PipelineError,
) -> None:
    """The round trips of a failed run; with none, the failure itself as a ``failed`` call. A hold
    (rate limit, budget, open breaker: :class:`Held`) before any call stores nothing: no call was sent."""
    await _store_paid(rt, event_id, pipeline, records)
    if not records and not isinstance(err, Held):
        await rt.db.store_call(
            call_row(
                event_id,
                pipeline.name,
                CallRecord(model=pipeline.model, status=CallStatus.FAILED, request=request, error=str(err)),
            )
        )


async def _store_cut_off(rt: Runtime, event_id: int, pipeline: Pipeline, records: list[CallRecord]) -> None:
    """A run cut off by a cancellation still stores the calls it made (a cut-off one as ``failed``),
    shielded from the cancellation, which goes on: a retry reuses a stored answer, never pays twice.
    While the database is away it waits for it (:meth:`worker.db.WorkerDB.durable`), unless the
    worker is stopping."""
    with contextlib.suppress(Exception):
        await asyncio.shield(_store_paid(rt, event_id, pipeline, records))


async def _store_paid(rt: Runtime, event_id: int, pipeline: Pipeline, records: list[CallRecord]) -> None:
    """The round trips of a run that did not get to its answer's own store (a failure, a cut-off),
    an answer among them checked first (:func:`worker.answers.check_unread`)."""
    check_unread(pipeline, records)
    await _store(rt, event_id, pipeline.name, records)


async def _store(
    rt: Runtime,
    event_id: int,
    pipeline: str,
    records: list[CallRecord],
    closing: Closing | None = None,
    *,
    inline: bool = False,
) -> None:
    """Every round trip of this run, in order, before any action (a limit hold stores none); the
    last one finishes the event when ``closing`` is given. ``inline``: a synchronous request waits
    for the answer (its flush notifies inside its transaction)."""
    for i, rec in enumerate(records):
        last = i == len(records) - 1
        closes = closing if last else None
        row = call_row(event_id, pipeline, rec, closes)
        store = partial(rt.db.store_call, row, closes, inline=inline and last)
        await rt.db.durable(store, "a model call", one_statement=True)
        observe(rt, rec)


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
    rt: Runtime,
    event: EventRow,
    pipeline: Pipeline,
    *,
    recompute: bool = False,
    force_actions: bool = False,
    closing: Closing | None = None,
) -> PipelineOutcome:
    """Answer, then act. ``closing``: this is the event's last pipeline; when no action follows the
    answer, the statement that stores it also finishes the event. An action's outcome is recorded on
    its own (a failure to finish the event must not lose the record that a side effect happened)."""
    outcome = PipelineOutcome(pipeline.name)
    output, _reused = await answer_for(rt, event, pipeline, recompute=recompute, closing=closing)
    if output is None:
        outcome.dry_run = True
        return outcome
    output = await escalate_batched(rt, event, pipeline, output)  # batched answers: escalate after the batch
    try:
        await run_actions(rt, event, pipeline, output, force_actions=force_actions)
    except InFlight as e:  # another worker's run of an action may still be sending: wait, not an attempt
        raise Held(str(e), delay=e.delay) from None
    return outcome
