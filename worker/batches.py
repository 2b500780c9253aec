"""``mode = "batch_api"``: events answered through the Message Batches API (half price, minutes late).

The event's job asks for an answer (a row in hookline.batch_items) and waits ``throttled``; the
``batch_poll`` periodic task submits every pending request as one batch, polls open batches, and when
one ended stores each answer in hookline.llm_calls (validated like any answer, batch-priced) and
wakes the event's job, which then runs the actions from the stored answer. A failed request is the
event's failure (retry policy; a refusal is permanent), and the next run asks again.
"""

from __future__ import annotations

import datetime as dt
import logging
import time
import weakref
from decimal import Decimal
from typing import Any

import anthropic
import procrastinate
from procrastinate import JobContext
from psycopg.rows import dict_row

from app.core.config import Pipeline
from app.core.jobs import QUEUE
from app.core.records import EventRow
from app.core.status import CallStatus
from worker.db import Q, WorkerDB, json_params
from worker.errors import InvalidOutput, PermanentError, TransientError
from worker.limits import LQ, Held, Reservation, all_rows, one, price, reserve, settle
from worker.llm import CallRecord, Refused, call_row, check_answer, storable_message
from worker.prompt import output_spec
from worker.runtime import Runtime

log = logging.getLogger("hookline.batches")

BATCH_POLL_SHORT = "batch_poll"
#: A waiting job wakes by itself after this long even if no poll woke it (a safety net).
WAIT_SECONDS = 300.0
MAX_REQUESTS = 10_000
#: A batch request's budget reservation is reclaimed after this long (a batch ends within 24 hours).
LEASE_SECONDS = 25 * 3600.0
#: How long a worker trusts what it read of the pipelines with open requests (:func:`leftover`).
OPEN_PIPELINES_SECONDS = 60.0
_open_pipelines: weakref.WeakKeyDictionary[WorkerDB, tuple[float, frozenset[str]]] = weakref.WeakKeyDictionary()


_RETIRED = 'its pipeline is no longer mode = "batch_api" (or no longer configured): never submitted'


def _left_batch_api(pipeline: str) -> str:
    return f'pipeline {pipeline} is no longer mode = "batch_api": asked the way it now says instead'


async def leftover(rt: Runtime, event: EventRow, pipeline: Pipeline) -> None:
    """A pipeline that is not (or no longer) ``mode = "batch_api"``, before it asks for an answer: a
    Message Batches request the event made while it was, and that is still open, is not paid for twice.
    One still pending (in no batch yet, nothing paid) is taken back and its reservation given back;
    one in a batch holds the event until the poller (registered in every worker) stores its answer,
    which the event's next run then uses (spend counted at batch price, the reservation settled).

    Costs a statement only for pipelines that had open requests when this worker last looked (at most
    every :data:`OPEN_PIPELINES_SECONDS`)."""
    now = time.monotonic()
    seen = _open_pipelines.get(rt.db)
    if seen is None or now - seen[0] >= OPEN_PIPELINES_SECONDS:
        rows = await rt.db.rows("open_batch_pipelines")
        seen = (now, frozenset(str(r["pipeline"]) for r in rows))
        _open_pipelines[rt.db] = seen
    if pipeline.name not in seen[1]:
        return
    taken = await rt.db.rows(
        "batch_item_cancel", event_id=event["id"], pipeline=pipeline.name, error=_left_batch_api(pipeline.name)
    )
    if taken:
        if taken[0]["reservation"]:
            await settle(rt, event, _load(taken[0]["reservation"]), None, None)
        return
    item = await one(rt, "batch_item_latest", event_id=event["id"], pipeline=pipeline.name)
    if item is not None and item["status"] in ("pending", "submitting", "submitted"):
        where = f" in batch {item['batch_id']}" if item["batch_id"] else ""
        raise Held(
            f"waiting for the Message Batches answer{where} it asked for while pipeline {pipeline.name} "
            'was mode = "batch_api" (never paid twice)',
            delay=WAIT_SECONDS,
        )


async def batch_answer(rt: Runtime, event: EventRow, pipeline: Pipeline, request: dict[str, Any]) -> None:
    """No stored answer yet: raise the failure of the last request, or ask (again) and wait."""
    item = await one(rt, "batch_item_latest", event_id=event["id"], pipeline=pipeline.name)
    if item is not None and item["status"] in ("pending", "submitting", "submitted"):
        where = f" in batch {item['batch_id']}" if item["batch_id"] else ""
        raise Held(f"waiting for its Message Batches answer{where}", delay=WAIT_SECONDS)
    if item is not None and item["status"] == "done":
        stored = await rt.db.one("succeeded_call", event_id=event["id"], pipeline=pipeline.name)
        if stored is not None:  # stored after this run's claim read the event: the next run uses it
            raise Held("its Message Batches answer was stored meanwhile", delay=0.0)
    if item is not None and item["status"] == "failed":
        await one(rt, "batch_item_retire", id=item["id"])
        error = f"Message Batches request failed: {item['error']}"
        raise (PermanentError(error) if item["permanent"] else TransientError(error))
    # budget and model bucket before the request is queued (Held: the event waits throttled, or dies)
    res = await reserve(rt, event, request, lease_seconds=LEASE_SECONDS, batch=True)
    added = await one(
        rt,
        "batch_item_add",
        event_id=event["id"],
        pipeline=pipeline.name,
        request=request,
        reservation=_dump(res),
    )
    if not added or not added["added"]:  # another run queued one meanwhile: give this reservation back
        await settle(rt, event, res, None, None)
    raise Held("waiting for its Message Batches answer (queued for the next batch)", delay=WAIT_SECONDS)


def _dump(res: Reservation) -> dict[str, Any]:
    return {
        "id": res.id,
        "model": res.model,
        "tenant": res.tenant,
        "day_start": res.day_start.isoformat() if res.day_start else None,
        "tokens": res.tokens,
        "usd": str(res.usd),
        "input_taken": res.input_taken,
        "output_taken": res.output_taken,
    }


def _load(doc: dict[str, Any]) -> Reservation:
    day = doc.get("day_start")
    return Reservation(
        model=str(doc.get("model") or ""),
        tenant=doc.get("tenant"),
        day_start=dt.datetime.fromisoformat(day) if day else None,
        tokens=int(doc.get("tokens") or 0),
        usd=Decimal(str(doc.get("usd") or 0)),
        input_taken=int(doc.get("input_taken") or 0),
        output_taken=int(doc.get("output_taken") or 0),
        id=doc.get("id"),
    )


async def poll(rt: Runtime) -> dict[str, int]:
    """Submit pending requests as one batch; read the results of ended batches."""
    client = rt.llm
    if not isinstance(client, anthropic.AsyncAnthropic):  # dry run, or the simulated model: no batches
        return {"submitted": 0, "results": 0}
    submitted = results = 0
    await _retire_left(rt)
    claimed = await all_rows(rt, "batch_claim_pending", limit=MAX_REQUESTS)
    if claimed:
        batch = await client.messages.batches.create(
            requests=[{"custom_id": r["custom_id"], "params": r["request"]} for r in claimed]
        )
        await one(rt, "batch_mark_submitted", ids=[r["id"] for r in claimed], batch_id=batch.id)
        submitted = len(claimed)
        log.info("submitted %d request(s) as Message Batch %s", submitted, batch.id)
    for row in await all_rows(rt, "batch_open"):
        batch = await client.messages.batches.retrieve(row["batch_id"])
        if batch.processing_status != "ended":
            continue
        async for item in await client.messages.batches.results(row["batch_id"]):
            results += await _store_result(rt, item.model_dump(mode="json"))
    return {"submitted": submitted, "results": results}


async def _retire_left(rt: Runtime) -> None:
    """Requests not in a batch yet of pipelines that left ``mode = "batch_api"`` (or the config) are
    never submitted: their reservations are given back, and their events asked again the new way."""
    batch_api = [name for name, p in rt.config.pipelines.items() if p.mode == "batch_api"]
    retired = await rt.db.rows("batch_retire_pending", pipelines=batch_api, error=_RETIRED)
    for row in retired:
        if row["reservation"]:
            res = _load(row["reservation"])
            owner: Any = {"id": row["event_id"], "tenant": res.tenant}
            await settle(rt, owner, res, None, None)
        await one(rt, "wake_event_job", event_id=row["event_id"])
    if retired:
        log.info("retired %d Message Batches request(s) of pipelines no longer in batch_api mode", len(retired))


async def _store_result(rt: Runtime, item: dict[str, Any]) -> int:
    result = item.get("result") or {}
    kind = result.get("type")
    message = result.get("message") if kind == "succeeded" else None
    if isinstance(message, dict):  # what jsonb refuses, as a Messages API answer's (worker.llm)
        message = storable_message(message)
    status, error, permanent = "done", None, False
    if message is None:
        err = ((result.get("error") or {}).get("error") or {}) if kind == "errored" else {}
        error = f"{kind}: {err.get('type', '')} {err.get('message', '')}".strip()
        permanent = err.get("type") == "invalid_request_error"
        status = "failed"
    # The result is marked read and its call stored in one transaction: a failed store leaves the result
    # for the next poll instead of dropping a paid answer (the event's next run would then ask again).
    async with rt.db.pool.connection() as conn, conn.transaction(), conn.cursor(row_factory=dict_row) as cur:
        await cur.execute(
            LQ["batch_item_finish"],
            {"custom_id": item.get("custom_id"), "status": status, "error": error, "permanent": permanent},
        )
        finished = await cur.fetchone()
        if finished is None:
            return 0  # another poll read it first
        pipeline_name = finished["pipeline"]
        pipeline = rt.config.pipelines.get(pipeline_name)
        request = finished["request"]
        rec = CallRecord(
            model=request.get("model", ""), status=CallStatus.FAILED, request=request, route="batch_api", error=error
        )
        rec.requested_model = pipeline.model if pipeline else rec.model
        if message is not None:  # paid for: its usage and cost are stored and settled, whatever became of the pipeline
            rec.response, rec.usage = message, message.get("usage") or {}
            rec.cost_usd = price(rt, rec.model, {**rec.usage, "service_tier": "batch"})  # batch price, always
            rec.error = f"pipeline {pipeline_name} is no longer configured: the answer is kept for its usage only"
        if message is not None and pipeline is not None:
            rec.error = None
            try:
                output = check_answer(message, output_spec(pipeline))
                rec.status, rec.output = CallStatus.SUCCEEDED, output
            except (InvalidOutput, ValueError) as e:
                rec.status, rec.error = CallStatus.INVALID_OUTPUT, str(e)
                await cur.execute(
                    LQ["batch_item_finish_fail"],
                    {"id": finished["id"], "error": str(e), "permanent": isinstance(e, Refused)},
                )
        await cur.execute(Q["insert_call"], json_params(call_row(finished["event_id"], pipeline_name, rec)))
    if finished.get("reservation"):  # the result's usage at batch price replaces the reservation
        res = _load(finished["reservation"])
        owner: Any = {"id": finished["event_id"], "tenant": res.tenant}
        await settle(rt, owner, res, rec.usage if message is not None else None, rec.cost_usd)
    await one(rt, "wake_event_job", event_id=finished["event_id"])
    return 1


async def batch_poll(context: JobContext, timestamp: int) -> dict[str, int]:
    rt = (context.additional_context or {}).get("runtime")
    if not isinstance(rt, Runtime):
        raise RuntimeError("worker started without a hookline runtime in additional_context")
    return await poll(rt)


def register(bp: procrastinate.Blueprint, every_seconds: int) -> None:
    """The poller, every ``every_seconds`` (one run per tick across workers; never a lock)."""
    task = bp.task(name=BATCH_POLL_SHORT, queue=QUEUE, pass_context=True, queueing_lock="hookline:batch_poll")(
        batch_poll
    )
    bp.periodic(cron=f"* * * * * */{max(1, every_seconds)}", periodic_id="batch_poll")(task)
