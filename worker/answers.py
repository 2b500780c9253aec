"""What a pipeline run and a micro-batch both do with the answers their calls got back: check an answer
the run never read, store an escalated answer in the statement that supersedes the first one, record the
call's latency, split a micro-batch's usage among its events and build its rows (its one call counted
once), and let the simulated model answer from the pipeline's own schema."""

from __future__ import annotations

import contextlib
import json
from collections.abc import Awaitable, Callable
from decimal import ROUND_DOWN, Decimal
from typing import Any

from app.core.config import Pipeline
from app.core.status import CallStatus
from worker import limits
from worker.errors import InvalidOutput
from worker.llm import CallRecord, call_row, check_answer
from worker.prompt import output_spec
from worker.runtime import Runtime
from worker.simulated import SimulatedModel, example

#: Stores a run's round trips in order, each through :meth:`worker.db.WorkerDB.durable`.
StoreCalls = Callable[[Runtime, int, str, list[CallRecord]], Awaitable[None]]


def check_unread(pipeline: Pipeline, records: list[CallRecord]) -> bool:
    """An answer that came back, but whose run failed or was cut off before :func:`worker.llm.ask` read
    it (the database went away, or a cancellation came, while its usage was settled): checked here, so
    that it is stored as the answer a retry reuses (never paid twice), or as ``invalid_output``. Of two
    answers (an escalation's), the later keeps the succeeded slot. True when one succeeded answer is
    among ``records``."""
    spec = output_spec(pipeline)
    for rec in records:
        if rec.status == CallStatus.SUCCEEDED and rec.output is None:
            try:
                rec.output = check_answer(rec.response or {}, spec)
            except (InvalidOutput, ValueError) as e:
                rec.status, rec.error = CallStatus.INVALID_OUTPUT, str(e)
    answered = [rec for rec in records if rec.status == CallStatus.SUCCEEDED]
    for rec in answered[:-1]:
        rec.status = CallStatus.SUPERSEDED
    return bool(answered)


async def store_escalated(
    rt: Runtime,
    event_id: int,
    pipeline: Pipeline,
    records: list[CallRecord],
    due_id: int,
    store: StoreCalls,
    *,
    unread: bool = False,
) -> None:
    """The round trips of an escalation of a stored answer; the last one, the escalated answer, takes the
    succeeded slot from the stored one (``store_escalated``) in the statement that stores it, so no
    failure between the two leaves the event without a stored answer. ``unread``: the run failed or was
    cut off; an answer is checked first (:func:`check_unread`), and only a succeeded one takes the slot."""
    answered: CallRecord | None = records[-1] if records else None
    if unread:
        check_unread(pipeline, records)
        answered = answered if answered is not None and answered.status == CallStatus.SUCCEEDED else None
    await store(rt, event_id, pipeline.name, records[:-1] if answered is not None else records)
    if answered is not None:
        row = call_row(event_id, pipeline.name, answered)
        await rt.db.durable(lambda: limits.one(rt, "store_escalated", superseded_id=due_id, **row), "an answer")
        observe(rt, answered)


def observe(rt: Runtime, rec: CallRecord) -> None:
    """The call's latency, by model and outcome."""
    if rec.latency_ms is not None:
        rt.metrics.call_latency(rec.model, rec.status, rec.latency_ms / 1000)


def simulating(rt: Runtime, pipeline: Pipeline) -> contextlib.AbstractContextManager[None]:
    """A simulated model answers from the pipeline's own schema (hookline dev --simulate-model)."""
    if isinstance(rt.llm, SimulatedModel):
        return rt.llm.answering(output_spec(pipeline).raw_schema)
    return contextlib.nullcontext()


def simulating_parts(rt: Runtime, pipeline: Pipeline, event_ids: list[int]) -> contextlib.AbstractContextManager[None]:
    """A simulated model answers a micro-batch's combined call with one part per event it asks for,
    each an example of the pipeline's own output schema."""
    if isinstance(rt.llm, SimulatedModel):
        output = example(output_spec(pipeline).raw_schema)
        return rt.llm.answering_with({"results": [{"event_id": i, "output": output} for i in event_ids]})
    return contextlib.nullcontext()


#: The precision of hookline.llm_calls.cost_usd (numeric(14, 8)).
CENT_FRACTION = Decimal("0.00000001")


def shares(rec: CallRecord, n: int) -> list[tuple[dict[str, int], Decimal | None]]:
    """A combined call's usage and cost split evenly among its ``n`` events: ``(usage, cost)`` per
    event, the first (the leader's) with the remainders, so that the shares add up to exactly what the
    call used and cost. The cost stays None (a simulated call's) when the call has none."""
    totals = {k: v for k, v in (rec.usage or {}).items() if isinstance(v, int) and not isinstance(v, bool)}
    out: list[tuple[dict[str, int], Decimal | None]] = []
    cost = rec.cost_usd.quantize(CENT_FRACTION) if rec.cost_usd is not None else None
    each = (cost / n).quantize(CENT_FRACTION, rounding=ROUND_DOWN) if cost is not None else None
    for i in range(n):
        usage = {k: v // n + (v % n if i == 0 else 0) for k, v in totals.items()}
        share = None if cost is None or each is None else (cost - each * (n - 1) if i == 0 else each)
        out.append((usage, share))
    return out


def part_rows(
    pipeline: Pipeline, claimed: list[dict[str, Any]], combined: dict[str, Any], rec: CallRecord, answered: CallStatus
) -> list[CallRecord]:
    """Each claimed event's row of the combined answer ``rec``: its part, validated (``answered``, or
    ``invalid_output``), with its share of the usage and cost. The one round trip is counted once
    (``calls = 1``): on the first row with a valid part (the leader's when its own is valid), else on
    the leader's; the other rows count 0, so every count of calls sees one call."""
    parts = _parts(rec.response or {})
    spec = output_spec(pipeline)
    rows: list[CallRecord] = []
    for c, (usage, cost) in zip(claimed, shares(rec, len(claimed)), strict=True):
        part = parts.get(int(c["event_id"]))
        row = CallRecord(
            model=rec.model,
            status=answered,
            request=combined,
            response=rec.response,
            usage=usage,
            cost_usd=cost,
            latency_ms=rec.latency_ms,
            request_id=rec.request_id,
            route=rec.route,
            requested_model=pipeline.model,
            calls=0,
        )
        try:
            if part is None:
                raise ValueError("the answer has no part for this event")
            row.output = spec.validate(part)
        except ValueError as e:
            row.status, row.error, row.output = CallStatus.INVALID_OUTPUT, str(e), part
        rows.append(row)
    counted = next((r for r in rows if r.status == answered), rows[0])
    counted.calls = 1
    return rows


def _parts(message: dict[str, Any]) -> dict[int, Any]:
    """event_id → output, from the combined answer (empty when it is not the expected JSON)."""
    text = next((b.get("text") for b in message.get("content") or [] if b.get("type") == "text"), None)
    try:
        doc = json.loads(text or "")
        return {int(r["event_id"]): r.get("output") for r in doc.get("results") or [] if isinstance(r, dict)}
    except (ValueError, TypeError, KeyError, AttributeError):
        return {}
