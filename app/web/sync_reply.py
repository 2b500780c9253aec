"""Synchronous replies: answer the webhook's own HTTP request with the model's verdict.

The ingest route has stored the event (same transaction, same job, same dedup as ever). For a
``respond = "sync"`` pipeline it then calls :func:`reply`, which waits on the process's one LISTEN
connection (:class:`app.web.listener.EventListener`) until the worker stores the answer, and renders
``respond_body`` over it; when ``respond_timeout_ms`` runs out first it renders ``respond_default``.
The model call stays in the worker; the waiting request holds no database connection (each check is
one short query on the pool).

The sender sees the answer exactly once: the reply claims it (``sync_reply = 'answer'``, so follow-up
actions skip it) only after ``respond_body`` has rendered over it; a reply that gives the default
records ``'default'`` instead, and the follow-up actions deliver the answer. Until one of them is
recorded the worker's follow-ups wait (up to the deadline, then the worker records ``'default'``
itself), so the claim of an answer well before the deadline is sent once the reply has gone out: the
reply waits for no second round trip.

* A duplicate (the sender's retry) is answered at once: it never waits and never causes a second
  model call. It gets the answer only where the HTTP reply carries it (``sync_reply = 'answer'``, or
  claimed by the duplicate itself when nothing is recorded yet); otherwise the default (no answer
  yet, or the sender got the default, or a replay recomputed the answer, and the follow-up actions
  deliver it).
* Under ``hookline dev --simulate-model`` the answer is the simulated one (status ``simulated``): the
  reply carries it as any answer, marked ``x-hookline-simulated: true``.
* A client that disconnects cancels its wait (its waiter is removed). A request still waiting when
  the server stops gets the default before uvicorn's drain (``HOOKLINE_SHUTDOWN_TIMEOUT``) would cut it.
* Anything that goes wrong while waiting (database gone, a template that fails on this output) gives
  the default: the event is stored, so a 2xx is the truth, and its processing goes on.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import re
from collections.abc import Coroutine
from dataclasses import dataclass, replace
from typing import Any

from starlette.requests import Request
from starlette.responses import Response

from app.core.config import Pipeline
from app.core.config.respond import escape_for
from app.core.errors import DatabaseUnavailable
from app.core.payload import template_fields
from app.core.querynames import IngestQuery
from app.core.redaction import masked_text
from app.core.sqlfiles import NamedQueries
from app.core.status import TERMINAL_EVENT_STATUSES
from app.core.templates import TemplateContext, TemplateRenderError, render, render_slack_blocks, render_value
from app.web.responses import DB_FAILURES
from app.web.state import AppState

log = logging.getLogger("hookline.sync")

Q: NamedQueries[IngestQuery] = NamedQueries("ingest", IngestQuery)

#: A rendered answer with at least this long left before the worker may record ``'default'`` itself
#: goes out at once, its claim just after; closer to that deadline the reply waits for its claim.
CLAIM_AFTER_MARGIN_S = 0.5


@dataclass(frozen=True)
class Delivery:
    """What the reply templates see of the stored event."""

    event_id: int
    source: str
    event_type: str | None
    tenant: str | None
    occurred_at: Any
    payload: Any
    duplicate: bool
    request_id: str
    #: the source's provider: a ``slack`` source's JSON reply is a Slack message, escaped as one
    provider: str = ""
    #: the event loop's time when the request reached the handler: ``respond_timeout_ms`` counts from
    #: it, as the sender's clock does (None: from the start of the wait)
    arrived: float | None = None


@dataclass(frozen=True)
class _Answer:
    """The stored answer, not claimed yet; ``remaining_s`` until the worker's deadline (database clock)."""

    output: Any
    remaining_s: float
    simulated: bool = False  # answered by ``hookline dev --simulate-model`` (status ``simulated``)


async def reply(request: Request, state: AppState, pipeline: Pipeline, d: Delivery) -> Response:
    """The HTTP reply of a sync pipeline: its rendered answer, or its default."""
    if d.duplicate:
        return await _duplicate(state, pipeline, d)
    waiting = asyncio.ensure_future(_wait(state, pipeline, d))
    gone = asyncio.ensure_future(_disconnected(request))
    cut = asyncio.ensure_future(_shutdown_cut(state))
    try:
        await asyncio.wait((waiting, gone, cut), return_when=asyncio.FIRST_COMPLETED)
    finally:
        for task in (gone, cut, waiting):
            if not task.done():
                task.cancel()
                with contextlib.suppress(asyncio.CancelledError, Exception):
                    await task
    if waiting.cancelled() and not cut.cancelled():  # the server stops: the default, while it can go out
        _mark_default_soon(state, d)
        return _respond(state, pipeline, d, None, "default")
    if waiting.cancelled():  # the client left first: nobody reads this; follow-ups deliver the answer
        state.metrics.inc(
            "hookline_sync_replies_total", source=d.source, pipeline=pipeline.name, outcome="disconnected"
        )
        _mark_default_soon(state, d)
        return Response(status_code=499)
    error = waiting.exception()
    answer: _Answer | None = None
    if error is not None:
        log.warning("sync reply for event %s: wait failed (%s)", d.event_id, error.__class__.__name__)
    else:
        answer = waiting.result()
    if answer is None:
        return _respond(state, pipeline, d, None, "default")
    body = _answer_body(state, pipeline, d, answer.output)
    if body is None:  # the sender gets the default: recorded, so the follow-up actions deliver the answer
        _mark_default_soon(state, d)
        return _respond(state, pipeline, d, None, "render_error")
    if answer.remaining_s >= CLAIM_AFTER_MARGIN_S:
        _soon(_claim_answer_after(state, d))
    elif not await _claim_answer(state, d):  # the worker recorded 'default' first: the follow-up delivers
        return _respond(state, pipeline, d, None, "default")
    return _respond(state, pipeline, d, body, "answer", simulated=answer.simulated)


def default(state: AppState, pipeline: Pipeline, d: Delivery) -> Response:
    """The reply to an event stored without a job (its payload failed the source's schema, with
    ``on_invalid = "store"``): no answer will come, so ``respond_default`` at once. Nothing is
    recorded: no follow-up action runs for it."""
    return _respond(state, pipeline, d, None, "default")


#: A request still waiting when the server stops gets the default this long before uvicorn's drain
#: (``HOOKLINE_SHUTDOWN_TIMEOUT``) ends, when it would cancel the request: a 500 for a stored event.
SHUTDOWN_MARGIN_S = 0.5


async def _shutdown_cut(state: AppState) -> None:
    """Returns when a request still waiting must be answered, or the server's drain would cut it."""
    await state.stopping.wait()
    await asyncio.sleep(max(0.0, state.settings.shutdown_timeout - SHUTDOWN_MARGIN_S))


async def drain(timeout: float) -> None:
    """Lets the bookkeeping writes in flight (claims, recorded defaults) finish before the pool closes."""
    if _BACKGROUND:
        await asyncio.wait(tuple(_BACKGROUND), timeout=timeout)


async def _disconnected(request: Request) -> None:
    """Returns when the client goes away (the body is fully read, so the next message says so)."""
    while True:
        message = await request.receive()
        if message["type"] == "http.disconnect":
            return


async def _wait(state: AppState, pipeline: Pipeline, d: Delivery) -> _Answer | None:
    """The answer once it is stored (not claimed yet: see :func:`reply`); None at the deadline or the end.
    The deadline bounds the reads too: a database that holds them up (a lock, a saturated pool) gives
    the default in time, not after ``HOOKLINE_DB_TIMEOUT``."""
    deadline = _deadline(pipeline, d)
    try:
        async with asyncio.timeout_at(deadline):
            return await _answer_by(state, pipeline, d, deadline)
    except TimeoutError:
        _mark_default_soon(state, d)
        return None


def _deadline(pipeline: Pipeline, d: Delivery) -> float:
    """When the reply gives the default: ``respond_timeout_ms`` after the request arrived (the time
    spent reading its body and storing its event counts, as it does for the sender)."""
    loop = asyncio.get_running_loop()
    return (loop.time() if d.arrived is None else d.arrived) + pipeline.respond_timeout_ms / 1000


async def _answer_by(state: AppState, pipeline: Pipeline, d: Delivery, deadline: float) -> _Answer | None:
    loop = asyncio.get_running_loop()
    listener = state.listener
    async with listener.watch(d.event_id) as waiter:
        if not listener.connected.is_set() and not await listener.wait_connected(deadline - loop.time()):
            return None  # no LISTEN connection: a NOTIFY could be missed; do not pretend
        while True:
            try:
                row = await _state_row(state, pipeline, d)
            except Exception as e:  # the event is stored: the default is still a true answer
                log.warning("sync reply for event %s: %s", d.event_id, e.__class__.__name__)
                return None
            if row is None:
                return None
            if row["has_answer"]:
                if row["sync_reply"] is not None:  # the worker already gave it to the follow-up actions
                    return None
                return _Answer(row["output"], float(row["remaining_s"]), bool(row["simulated"]))
            if row["sync_reply"] is not None:  # the worker recorded 'default': its sync pipeline does not run
                return None
            if row["status"] in TERMINAL_EVENT_STATUSES:  # dead, skipped or dry run: no answer will come
                _mark_default_soon(state, d)
                return None
            while True:
                remaining = deadline - loop.time()
                if remaining <= 0 or not await waiter.changed(remaining):
                    _mark_default_soon(state, d)
                    return None
                if waiter.answered or waiter.reconnected or waiter.status in TERMINAL_EVENT_STATUSES:
                    waiter.answered.clear()
                    waiter.reconnected = False
                    break  # read the database again


async def _state_row(state: AppState, pipeline: Pipeline, d: Delivery) -> Any:
    pool = await state.db.ensure()
    return await pool.fetchrow(
        Q["reply_state"], d.event_id, pipeline.name, pipeline.respond_timeout_ms / 1000, d.duplicate
    )


#: Bookkeeping writes that must not hold up a reply (a reference keeps each task alive).
_BACKGROUND: set[asyncio.Task[None]] = set()


def _soon(work: Coroutine[Any, Any, None]) -> None:
    task = asyncio.create_task(work)
    _BACKGROUND.add(task)
    task.add_done_callback(_BACKGROUND.discard)


def _mark_default_soon(state: AppState, d: Delivery) -> None:
    """The default goes out at once; recording it follows without delaying the reply."""
    _soon(_mark_default(state, d))


async def _claim_answer(state: AppState, d: Delivery) -> bool:
    """Record that the HTTP reply carries the answer; False when the worker recorded 'default' first
    (or the database failed: the worker then records 'default' at the deadline)."""
    try:
        pool = await state.db.ensure()
        return await pool.fetchval(Q["reply_answer"], d.event_id) is not None
    except Exception as e:
        log.warning("sync reply for event %s: could not record the answer (%s)", d.event_id, e.__class__.__name__)
        return False


async def _claim_answer_after(state: AppState, d: Delivery) -> None:
    """The claim of an answer that went out before its deadline: it lands long before the worker may
    decide by the clock (the follow-ups wait for it meanwhile)."""
    if not await _claim_answer(state, d):
        log.warning("sync reply for event %s: the answer went out unrecorded; a follow-up may repeat it", d.event_id)


async def _mark_default(state: AppState, d: Delivery) -> None:
    """Record that the sender got the default, so follow-up actions deliver the answer at once."""
    try:
        pool = await state.db.ensure()
        await pool.execute(Q["reply_default"], d.event_id)
    except Exception as e:  # the worker decides by the clock then (received_at + respond_timeout_ms)
        log.warning("sync reply for event %s: could not record the default (%s)", d.event_id, e.__class__.__name__)


async def _duplicate(state: AppState, pipeline: Pipeline, d: Delivery) -> Response:
    """The sender's retry of a delivery, at once: the answer only where the HTTP reply carries it
    (``sync_reply = 'answer'``, or claimed now when nothing is recorded yet), so the sender never gets
    it both in a reply and as a follow-up; the default otherwise (no answer yet, or the default went
    out, or a replay recomputed the answer, and the follow-up actions deliver it). Its templates read the
    stored event (type, tenant, time, payload: what the model saw), not the retry's own body, unless
    the database cannot be read."""
    try:
        async with asyncio.timeout_at(_deadline(pipeline, d)):  # TimeoutError is one of DB_FAILURES
            row = await _state_row(state, pipeline, d)
    except (*DB_FAILURES, DatabaseUnavailable) as e:  # type: ignore[misc]  # stored: the default is a true answer
        log.warning("sync reply for duplicate of event %s: %s", d.event_id, e.__class__.__name__)
        row = None
    if row is not None:  # the stored delivery, not the retry's body (which may differ, or not be UTF-8)
        d = replace(
            d,
            event_type=row["event_type"],
            tenant=row["tenant"],
            occurred_at=row["occurred_at"],
            payload=row["payload"] if row["payload"] is not None else d.payload,  # None: pruned
        )
    if row is None or not row["has_answer"] or row["sync_reply"] == "default" or row["recomputed"]:
        return _respond(state, pipeline, d, None, "duplicate_default")
    body = _answer_body(state, pipeline, d, row["output"])
    if body is None:  # the first reply gives (or gave) the default over this answer too, and records it
        return _respond(state, pipeline, d, None, "render_error")
    if row["sync_reply"] is None and not await _claim_answer(state, d):  # the worker recorded 'default'
        return _respond(state, pipeline, d, None, "duplicate_default")
    return _respond(state, pipeline, d, body, "duplicate_answer", simulated=bool(row["simulated"]))


def _context(pipeline: Pipeline, d: Delivery, output: Any) -> TemplateContext:
    return TemplateContext.of(
        output=output,
        event_id=d.event_id,
        source=d.source,
        event_type=d.event_type,
        tenant=d.tenant,
        occurred_at=d.occurred_at,
        fields=template_fields(d.payload, pipeline.fields),
    )


def _answer_body(state: AppState, pipeline: Pipeline, d: Delivery, output: Any) -> str | None:
    """``respond_body`` rendered over the answer; None when it fails on this output (logged)."""
    try:
        return _render(pipeline, pipeline.respond_body, _context(pipeline, d, output), output, d.provider)
    except TemplateRenderError as e:
        log.warning("respond_body of pipeline %s failed on event %s: %s", pipeline.name, d.event_id, _said(state, d, e))
        return None


def _said(state: AppState, d: Delivery, error: Exception) -> str:
    """A render error as logged: a value of the source's ``redact`` paths it quotes reads ``[redacted]``."""
    return masked_text(state.config, d.source, d.payload, str(error))


#: The reply when ``respond_default`` itself fails to render: an empty TwiML (or XML) document, an
#: empty text; JSON replies get the ack (``{"status":"accepted","event_id":…}``).
_FALLBACK: dict[str, str] = {"application/xml": "<Response/>", "text/xml": "<Response/>", "text/plain": ""}


def _respond(
    state: AppState,
    pipeline: Pipeline,
    d: Delivery,
    body: str | None,
    outcome: str,
    *,
    simulated: bool = False,
) -> Response:
    """The reply: ``body`` (the rendered answer), or ``respond_default`` when it is None. ``simulated``:
    the answer is the simulated model's (``hookline dev --simulate-model``), which the reply says in
    ``x-hookline-simulated: true``, as its stored call says ``simulated``."""
    ctype = pipeline.respond_content_type
    headers = {"x-request-id": d.request_id, "x-hookline-event-id": str(d.event_id)}
    if body is None:
        ack = {"status": "duplicate" if d.duplicate else "accepted", "event_id": d.event_id}
        try:
            # output null, as documented, whatever answer came: a default that showed it would hand the
            # sender the answer the follow-up actions then deliver again
            body = _render(pipeline, pipeline.respond_default, _context(pipeline, d, None), ack, d.provider)
        except TemplateRenderError as e:  # a fixed body the sender can still read, in its own content type
            said = _said(state, d, e)
            log.warning("respond_default of pipeline %s failed on event %s: %s", pipeline.name, d.event_id, said)
            fallback = _FALLBACK.get(ctype)
            body = fallback if fallback is not None else json.dumps(ack, separators=(",", ":"))
        headers["x-hookline-reply"] = "default"
    else:
        headers["x-hookline-reply"] = "answer"
        if simulated:
            headers["x-hookline-simulated"] = "true"
    state.metrics.inc("hookline_sync_replies_total", source=d.source, pipeline=pipeline.name, outcome=outcome)
    return Response(_utf8(body), status_code=200, media_type=ctype, headers=headers)


_SURROGATE = re.compile("[\ud800-\udfff]")


def _utf8(text: str) -> bytes:
    """The reply's bytes. A retry is answered without Postgres ever reading its body, so the values it
    brings into a template (when the stored event cannot be read) can hold an unpaired surrogate,
    which has no UTF-8 form: it goes out as U+FFFD (a 500 from encoding it would tell the sender its
    delivery failed)."""
    try:
        return text.encode("utf-8")
    except UnicodeEncodeError:
        return _SURROGATE.sub("\ufffd", text).encode("utf-8")


def _render(pipeline: Pipeline, template: Any, ctx: TemplateContext, fallback: Any, provider: str) -> str:
    """A JSON reply is rendered leaf by leaf (so a value can never break the JSON around it); a Slack
    source's is a Slack message, whose ``text`` values are escaped for Slack (``&``, ``<``, ``>``: a
    value can never ``<!channel>``, mention or disguise a link), as the ``slack`` action's are; an XML
    or text reply is one template, autoescaped for XML. No template: ``fallback`` as JSON."""
    escape = escape_for(pipeline.respond_content_type)
    if template is None:
        return json.dumps(fallback, ensure_ascii=False, separators=(",", ":"), default=str)
    if pipeline.respond_content_type == "application/json":
        value = render_slack_blocks(template, ctx) if provider == "slack" else render_value(template, ctx, escape)
        return json.dumps(value, ensure_ascii=False, separators=(",", ":"))
    return render(str(template), ctx, escape)
