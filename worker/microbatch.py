"""``batch = { max_events, max_wait_ms }``: several events of one pipeline, one prompt.

Each event's job adds its request to hookline.batch_items (kind ``micro``) and waits ``throttled``
for at most ``max_wait_ms``. The job that sees ``max_events`` requests pending, or whose own request
has waited ``max_wait_ms``, leads: it claims up to ``max_events`` pending requests, asks the model once
for ``{"results": [{"event_id", "output"}, …]}``, validates each part against the pipeline's schema,
stores one hookline.llm_calls row per event (tokens and cost split evenly, the remainders on the leader's
row, so the rows add up to the call; the call counted once, ``calls = 1`` on one row and 0 on the
others; ``route = 'micro_batch:N'``) and wakes the other jobs. Under the
simulated model each event gets an example part, stored ``simulated`` with no cost. Each event then
runs its own actions from its stored answer; an event whose part is missing or invalid fails alone (its
retry policy; the next try goes in a later batch). A failed combined call costs each of its events one
attempt: the leader's at once, the others' when their jobs wake; every event's next try asks again, in
a later batch.

With ``[tenants]``, a micro-batch holds one tenant's events: the combined call is reserved and settled
against that tenant's day, so every event counts against its own tenant's caps. ``tokens_per_day`` and
``usd_per_day`` bound one event's request, not a batch's: the leader asks for as many of its claimed
events as could ever fit in its tenant's day (the others gather again), or, when not even a batch of one
could, asks alone with its own request.

A leader cancelled during the combined call (worker shutdown) puts its requests back to gather again.
One that could not (killed) leaves them ``submitting``: once that is older than
:data:`MICRO_RECLAIM_SECONDS`, each of their events' own jobs leads again, and ``micro_claim`` takes
the requests back, so the batch recovers without new events of its pipeline.

A combined answer that came back is paid for: every row it gives is stored through
:meth:`worker.db.WorkerDB.durable` (tried again while the database is away, shielded from a
cancellation) before its request is marked ``done``, so a database outage never makes it be asked again.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import json
from collections.abc import Awaitable
from decimal import Decimal
from functools import partial
from typing import Any, TypeVar

from app.core.config import Pipeline
from app.core.records import EventRow
from app.core.status import CallStatus
from worker import limits
from worker.answers import check_unread, observe, part_rows, simulating, simulating_parts, store_escalated
from worker.db import database_away
from worker.errors import PermanentError, TransientError, classify
from worker.gate import Gate
from worker.limits import Held, all_rows, one
from worker.llm import CallRecord, ask, call_row
from worker.prompt import build_request, output_spec
from worker.runtime import Runtime

#: A request ``submitting`` this long lost its leader: ``micro_claim`` takes it back (its interval in
#: sql/queries/limits.sql says the same 10 minutes).
MICRO_RECLAIM_SECONDS = 600.0

T = TypeVar("T")

BATCH_NOTE = (
    '\n\nSeveral events follow, in the user turn as {"events": [...]}. Answer every one of them: '
    "results[i].event_id is the event's event_id and results[i].output your answer for that event alone."
)


def combined_request(pipeline: Pipeline, requests: list[dict[str, Any]]) -> dict[str, Any]:
    """One request for several events: the pipeline's system prompt, every event, a results schema."""
    spec = output_spec(pipeline)
    first = requests[0]
    system = [dict(b) for b in first["system"]]
    system[0]["text"] = system[0]["text"] + BATCH_NOTE
    events = [json.loads(r["messages"][-1]["content"]) for r in requests]
    schema = {
        "type": "object",
        "properties": {
            "results": {
                "type": "array",
                "items": {
                    "type": "object",
                    "properties": {"event_id": {"type": "integer"}, "output": spec.schema},
                    "required": ["event_id", "output"],
                    "additionalProperties": False,
                },
            }
        },
        "required": ["results"],
        "additionalProperties": False,
    }
    return {
        "model": first["model"],
        "max_tokens": min(64000, int(first["max_tokens"]) * len(requests)),
        "system": system,
        "messages": [{"role": "user", "content": json.dumps({"events": events}, ensure_ascii=False)}],
        "output_config": {"format": {"type": "json_schema", "schema": schema}},
    }


async def micro_answer(rt: Runtime, event: EventRow, pipeline: Pipeline, request: dict[str, Any]) -> Any:
    """This event's answer from a micro-batch: lead one, or raise Held while one gathers."""
    assert pipeline.batch is not None
    wait = pipeline.batch.max_wait_ms / 1000
    item = await one(rt, "micro_item_latest", event_id=event["id"], pipeline=pipeline.name)
    if item is not None and item["status"] == "done" and rt.simulated:
        part = await one(rt, "micro_simulated_part", id=item["id"])
        if part is not None:  # its part of a simulated answer (never reused by a later run, as no simulated answer is)
            return part["output"]
    if item is not None and item["status"] == "failed":
        await one(rt, "batch_item_retire", id=item["id"])
        error = f"micro-batch: {item['error']}"
        raise (PermanentError(error) if item["permanent"] else TransientError(error))
    if item is not None and item["status"] == "done":
        # answered, with the answer stored after this run's claim read the event: used, never asked again
        stored = await rt.db.one("succeeded_call", event_id=event["id"], pipeline=pipeline.name)
        if stored is not None:
            return stored["output"]
    if item is None or item["status"] in ("retired", "done"):
        await one(rt, "micro_item_add", event_id=event["id"], pipeline=pipeline.name, request=request)
        item = await one(rt, "micro_item_latest", event_id=event["id"], pipeline=pipeline.name)
        assert item is not None
    if item["status"] == "submitting":
        stuck = await rt.db.one("micro_item_stuck", id=item["id"], reclaim_s=MICRO_RECLAIM_SECONDS)
        if stuck is None:
            raise Held("its micro-batch is being answered", delay=max(1.0, wait))
        return await _lead(rt, event, pipeline)  # its leader is gone: micro_claim takes the batch back
    pending = await one(rt, "micro_pending", pipeline=pipeline.name, tenant=_batch_tenant(rt, event))
    age = (dt.datetime.now(dt.UTC) - item["created_at"]).total_seconds()
    if int(pending["n"] if pending else 0) < pipeline.batch.max_events and age < wait:
        raise Held(f"gathering a micro-batch (up to {pipeline.batch.max_events} events)", delay=wait - age)
    return await _lead(rt, event, pipeline)


def _batch_tenant(rt: Runtime, event: EventRow) -> str | None:
    """Whose events a micro-batch of this event holds: with ``[tenants]``, its tenant's only (the
    combined call is reserved and settled against one tenant's day); None (any tenant) without."""
    return limits.tenant_key(event) if rt.config.tenants else None


def _could_fit(rt: Runtime, event: EventRow, request: dict[str, Any]) -> bool:
    """Whether ``request``'s worst case could ever be reserved in the event's tenant's day (what
    :func:`worker.limits.reserve` refuses as a dead letter when not)."""
    if not rt.config.tenants:
        return True
    est_in, est_out = limits.estimate_input_tokens(request), int(request["max_tokens"])
    usd = limits.price(rt, request["model"], {"input_tokens": est_in, "output_tokens": est_out}) or Decimal(0)
    return limits._never_fits(rt.config.tenant(event.get("tenant")), est_in + est_out, usd) is None


def _fitting(
    rt: Runtime, event: EventRow, pipeline: Pipeline, claimed: list[dict[str, Any]]
) -> tuple[int, dict[str, Any] | None]:
    """How many of ``claimed`` (the leader first) one combined call asks for, and that request: the
    most whose combined worst case could fit in the tenant's day. ``(1, None)`` when not even a batch
    of one could: the leader asks alone, with its own request."""
    for n in range(len(claimed), 0, -1):
        combined = combined_request(pipeline, [c["request"] for c in claimed[:n]])
        if _could_fit(rt, event, combined):
            return n, combined
    return 1, None


async def _lead(rt: Runtime, event: EventRow, pipeline: Pipeline) -> Any:
    assert pipeline.batch is not None
    claimed = await all_rows(
        rt, "micro_claim", pipeline=pipeline.name, tenant=_batch_tenant(rt, event), limit=pipeline.batch.max_events
    )
    mine = [c for c in claimed if c["event_id"] == event["id"]]
    if not mine:  # another job leads the batch this event is in
        await one(rt, "micro_release", ids=[c["id"] for c in claimed])
        raise Held("its micro-batch is being answered", delay=1.0)
    claimed = mine + [c for c in claimed if c["event_id"] != event["id"]]
    n, fitting = _fitting(rt, event, pipeline, claimed)
    if n < len(claimed):  # the rest gather again, for a later batch
        await one(rt, "micro_release", ids=[c["id"] for c in claimed[n:]])
        claimed = claimed[:n]
    if fitting is None:
        return await _solo(rt, event, pipeline, claimed[0])
    requests = [c["request"] for c in claimed]
    combined = fitting
    gate = Gate(rt, event, pipeline)
    try:
        with simulating_parts(rt, pipeline, [int(c["event_id"]) for c in claimed]):
            rec = await gate(combined, f"micro_batch:{len(claimed)}")
    except Held:  # a round trip sent before the hold (a 529, then the fallback's open breaker) is kept
        await one(rt, "micro_release", ids=[c["id"] for c in claimed])
        await _store(rt, event["id"], pipeline.name, gate.records)
        raise
    except asyncio.CancelledError:  # shutdown mid-call: the requests gather again, not stuck for 10 minutes
        answered = _answered(gate.records)
        with contextlib.suppress(Exception):  # the database is gone too: micro_item_stuck reclaims them later
            if answered is not None:  # cut off after the answer came back: it is paid for, its parts are kept
                await asyncio.shield(_store_parts(rt, event, pipeline, claimed, combined, answered, gate.records))
            else:  # the round trips made (the cut-off one as failed) are kept under the leader, as below
                await asyncio.shield(one(rt, "micro_release", ids=[c["id"] for c in claimed]))
                await asyncio.shield(_store(rt, event["id"], pipeline.name, gate.records))
        raise
    except Exception as e:
        answered = _answered(gate.records)
        if answered is None:
            # the failed round trips, under the leader's event (route micro_batch:N), as a pipeline's own
            # failed calls are: what they cost, the error rates and the metrics count them
            await _store(rt, event["id"], pipeline.name, gate.records)
            others = [c["id"] for c in claimed if c["event_id"] != event["id"]]
            if not gate.records and others:  # nothing was sent: not the others' failure; they gather again
                await one(rt, "micro_release", ids=others)
                claimed = mine
            for c in claimed:
                await one(rt, "micro_item_fail", id=c["id"], error=str(e)[:500], permanent=False)
                if c["event_id"] != event["id"]:
                    await one(rt, "wake_event_job", event_id=c["event_id"])
                else:  # the leader fails with it now, this attempt: its next try asks again, not raises it again
                    await one(rt, "batch_item_retire", id=c["id"])
            raise
        # the answer came back, then the database went away while its usage was settled: paid for, so
        # its parts are stored (once the database is back) as if nothing had happened
        rec = answered
    await _to_the_end(_store_parts(rt, event, pipeline, claimed, combined, rec, gate.records))
    stored = await rt.db.one("succeeded_call", event_id=event["id"], pipeline=pipeline.name)
    if stored is None:  # its simulated part, or this event's failure raised
        return await micro_answer(rt, event, pipeline, requests[0])
    return stored["output"]


def _answered(records: list[CallRecord]) -> CallRecord | None:
    """The combined call's answer among the gate's round trips, if one came back."""
    got = [r for r in records if r.status in (CallStatus.SUCCEEDED, CallStatus.SIMULATED) and r.response is not None]
    return got[-1] if got else None


async def _to_the_end(work: Awaitable[T]) -> T:
    """``work``, shielded from a cancellation (the pipeline's ``timeout_seconds``, a shutdown): it runs
    to its end, then the cancellation goes on."""
    task = asyncio.ensure_future(work)
    try:
        return await asyncio.shield(task)
    except asyncio.CancelledError:
        with contextlib.suppress(Exception):
            await task
        raise


async def _store_parts(
    rt: Runtime,
    event: EventRow,
    pipeline: Pipeline,
    claimed: list[dict[str, Any]],
    combined: dict[str, Any],
    rec: CallRecord,
    records: list[CallRecord],
) -> None:
    """One hookline.llm_calls row per claimed event, from the combined answer ``rec`` (paid for): each
    row is stored first, through :meth:`worker.db.WorkerDB.durable` (tried again while the database is
    away), and only then is the event's request marked ``done`` (or ``failed``) and its job woken. A
    request is never ``done`` without its stored answer, and no answer is lost, or asked again, to a
    database that went away for a moment. The gate's other round trips (``records``: a primary's 529
    before its fallback answered) are stored first, under the leader, as a pipeline's own are."""
    await _store(rt, event["id"], pipeline.name, [r for r in records if r is not rec])
    observe(rt, rec)  # the one combined call, once
    answered = CallStatus.SIMULATED if rec.status == CallStatus.SIMULATED else CallStatus.SUCCEEDED
    rows = part_rows(pipeline, claimed, combined, rec, answered)
    # the row that counts the call first: a worker killed while storing the parts never leaves it uncounted
    for c, row in sorted(zip(claimed, rows, strict=True), key=lambda cr: cr[1].calls == 0):
        params = call_row(int(c["event_id"]), pipeline.name, row)
        await rt.db.durable(partial(rt.db.one, "insert_call", **params), "a micro-batch answer")
        if row.status == answered:
            mark = partial(one, rt, "micro_item_done", id=c["id"])
        else:
            mark = partial(one, rt, "micro_item_fail", id=c["id"], error=str(row.error)[:500], permanent=False)
        await rt.db.durable(mark, "a micro-batch request's outcome")
        if c["event_id"] != event["id"]:
            await rt.db.durable(partial(one, rt, "wake_event_job", event_id=c["event_id"]), "a wake-up")


async def _solo(rt: Runtime, event: EventRow, pipeline: Pipeline, item: dict[str, Any]) -> Any:
    """The leader's own request, asked alone (route ``primary``): not even a batch of one (the batch
    note and results schema around it) could ever be reserved in its tenant's day; its own request may."""
    gate = Gate(rt, event, pipeline)
    try:
        with simulating(rt, pipeline):
            answer = await ask(gate, item["request"], output_spec(pipeline), max_tokens_cap=pipeline.max_tokens_cap)
    except asyncio.CancelledError:
        with contextlib.suppress(Exception):
            await asyncio.shield(_give_back(rt, event["id"], pipeline, gate.records, item["id"]))
        raise
    except Held:
        await _give_back(rt, event["id"], pipeline, gate.records, item["id"])
        raise
    except Exception as e:
        if database_away(e):  # not the event's failure: the job runs again; an answer that came back is kept
            await _give_back(rt, event["id"], pipeline, gate.records, item["id"])
            raise
        err = classify(e)
        check_unread(pipeline, gate.records)
        await _store(rt, event["id"], pipeline.name, gate.records)
        await one(rt, "micro_item_fail", id=item["id"], error=str(err)[:500], permanent=err.permanent)
        await one(rt, "batch_item_retire", id=item["id"])  # raised here: the next try asks again
        raise err from e
    await _store(rt, event["id"], pipeline.name, gate.records)
    await rt.db.durable(partial(one, rt, "micro_item_done", id=item["id"]), "a micro-batch request's outcome")
    return answer.output


async def _give_back(rt: Runtime, event_id: int, pipeline: Pipeline, records: list[CallRecord], item_id: int) -> None:
    """A run of :func:`_solo` that did not get to its answer: its round trips are stored; the request
    is ``done`` when an answer among them came back (the retry reuses it), else it gathers again."""
    answered = check_unread(pipeline, records)
    await _store(rt, event_id, pipeline.name, records)
    if answered:
        mark = partial(one, rt, "micro_item_done", id=item_id)
    else:
        mark = partial(one, rt, "micro_release", ids=[item_id])
    await rt.db.durable(mark, "a micro-batch request's outcome")


async def escalate_batched(rt: Runtime, event: EventRow, pipeline: Pipeline, output: Any) -> Any:
    """``escalate`` for batched answers (micro-batch or Message Batches): when this event's part says
    so, re-ask ``escalate.model`` with the event's own request (the one that went into the batch),
    as the Messages API path does; the escalated answer supersedes the batched one. Free unless the
    pipeline batches, escalates, and this output's ``when`` field is true."""
    esc = pipeline.escalate
    if esc is None or (pipeline.batch is None and pipeline.mode != "batch_api"):
        return output
    if not (isinstance(output, dict) and output.get(esc.when) is True) or rt.llm is None:
        return output
    due = await one(rt, "escalation_due", event_id=event["id"], pipeline=pipeline.name)
    if due is None:  # already escalated (or not a batched answer)
        return output
    request = due["request"] or build_request(pipeline, event)
    gate = Gate(rt, event, pipeline)
    try:
        with simulating(rt, pipeline):
            answer = await ask(
                gate,
                {**request, "model": esc.model},
                output_spec(pipeline),
                max_tokens_cap=pipeline.max_tokens_cap,
                route=f"escalate:{esc.when}",
            )
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


async def _store(rt: Runtime, event_id: int, pipeline: str, records: list[CallRecord]) -> None:
    """Every round trip of the run, in order, each through :meth:`worker.db.WorkerDB.durable`: what was
    paid for is kept through a database outage."""
    for rec in records:
        row = call_row(event_id, pipeline, rec)
        await rt.db.durable(partial(rt.db.one, "insert_call", **row), "a model call")
        observe(rt, rec)
