"""One gated model call: breaker → fallback, shared rate limit, tenant budget, call, settle.

:class:`Gate` is the ``call`` that :func:`worker.llm.ask` makes every round trip through. It keeps a
record of every round trip (failed ones included) in ``records``, each saying which model answered
and why (``route``), for the pipeline to store before anything else happens.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import random
from dataclasses import dataclass, field
from typing import Any

import anthropic

from app.core.config import Pipeline
from app.core.config.pipelines import MAX_RETRY_AFTER_SECONDS
from app.core.records import EventRow
from app.core.status import CallStatus
from worker import breaker, limits
from worker.deadline import PIPELINE_DEADLINE
from worker.errors import classify
from worker.limits import Held
from worker.llm import CallRecord, one_call, then
from worker.runtime import Runtime


def _timed_out() -> bool:
    deadline = PIPELINE_DEADLINE.get()
    return deadline is not None and asyncio.get_running_loop().time() >= deadline


def rate_limited_reason(model: str, retry_after: float | None) -> str:
    """Why an event waits after the Messages API answered its call 429 (``detail`` after ``throttled: ``)."""
    after = f"its retry-after of {retry_after:g}s" if retry_after is not None else "a second"
    return f"the Messages API answered 429 (rate limited) for {model}; the call is asked again after {after}"


def after_429(retry_after: float | None) -> float:
    """How long an event waits after a 429: the API's ``retry-after`` as a floor (at least a second, at
    most MAX_RETRY_AFTER_SECONDS), plus up to a quarter more so the events it answered together spread."""
    floor = min(max(1.0, retry_after or 1.0), MAX_RETRY_AFTER_SECONDS)
    return floor * (1 + random.random() / 4)


#: 429s that hold one event (and pipeline) without using an attempt; each one after uses an attempt
RATE_LIMIT_HOLDS = 20


def _breaker_failure(exc: BaseException) -> bool:
    """Failures that say the model is unwell: overload, 5xx, timeouts, lost connections (not 4xx)."""
    if isinstance(exc, anthropic.APIStatusError):
        return exc.status_code >= 500
    return isinstance(exc, anthropic.APIConnectionError | TimeoutError)


@dataclass
class Gate:
    rt: Runtime
    event: EventRow
    pipeline: Pipeline
    records: list[CallRecord] = field(default_factory=list)

    async def _rate_limit_holds_left(self) -> bool:
        """Whether a 429 still holds this event rather than using an attempt: fewer than
        RATE_LIMIT_HOLDS of its calls for this pipeline were answered 429 (those stored: this one is
        not yet). Should the count fail, the 429 holds, as it did before the count existed."""
        try:
            found = await self.rt.db.rows("rate_limited_calls", event_id=self.event["id"], pipeline=self.pipeline.name)
        except Exception:
            return True
        return not found or int(found[0]["n"]) < RATE_LIMIT_HOLDS

    def _fallback(self, model: str, route: str) -> str | None:
        if "fallback:" in route:
            return None  # one hop: a fallback's own fallback is not chased
        return self.rt.config.model_limits(model).fallback

    async def _abandoned(
        self, res: limits.Reservation, model: str, failure: str | None, *, probe: dt.datetime | None
    ) -> None:
        """A call cut off by a cancellation: settled as a failed call; ``failure`` (a timeout) goes to the
        breaker. A worker shutdown (no ``failure``) says nothing about the model: a half-open ``probe`` it
        cut off (its ``probe_at``) is given back, or every call would wait PROBE_TIMEOUT_SECONDS for it."""
        await limits.settle(self.rt, self.event, res, None, None)
        if failure is not None:
            await breaker.breaker_report(self.rt, model, False, failure[:300])
        elif probe is not None:
            await breaker.release_probe(self.rt, model, probe)

    async def __call__(self, request: dict[str, Any], route: str) -> CallRecord:
        rt, model = self.rt, request["model"]
        assert rt.llm is not None
        verdict, wait, probe_at = await breaker.breaker_gate(rt, model)
        if verdict == "open":
            fallback = self._fallback(model, route)
            if fallback:
                return await self({**request, "model": fallback}, then(route, "fallback:breaker_open"))
            raise Held(breaker.open_reason(model), delay=wait)
        lease = self.pipeline.timeout_seconds + limits.LEASE_MARGIN_SECONDS  # a killed worker's call frees it
        try:
            res = await limits.reserve(rt, self.event, request, lease_seconds=lease)
        except BaseException:
            if verdict == "probe":  # never sent: give the probe back, or every call waits PROBE_TIMEOUT_SECONDS
                with contextlib.suppress(Exception):
                    await asyncio.shield(breaker.release_probe(rt, model, probe_at))
            raise
        try:
            rec = await one_call(rt.llm, request)
        except asyncio.CancelledError:
            # The pipeline's timeout_seconds fired (or the worker is shutting down) while the model was
            # asked: the call is recorded, its reservation given back and, on a timeout, the breaker told,
            # all shielded from the cancellation, which then goes on.
            timed_out = _timed_out()
            error = str(classify(TimeoutError())) if timed_out else "interrupted (worker shutdown)"
            self.records.append(
                CallRecord(
                    model=model,
                    status=CallStatus.FAILED,
                    request=request,
                    error=error,
                    route=route,
                    requested_model=self.pipeline.model,
                )
            )
            with contextlib.suppress(Exception):
                await asyncio.shield(self._abandoned(res, model, error if timed_out else None, probe=probe_at))
            raise
        except Exception as e:
            err = classify(e)
            response = getattr(e, "response", None)
            status = getattr(e, "status_code", None)
            await limits.settle(rt, self.event, res, None, None)
            await limits.observe_headers(rt, model, getattr(response, "headers", None), status, err.retry_after)
            if _breaker_failure(e):
                await breaker.breaker_report(rt, model, False, str(err)[:300])
            elif verdict == "probe":  # a 4xx or 429 says nothing about the model's health: give the probe
                # back (open, its open_seconds over), so the next call probes at once; closing here let every
                # waiting call go to a model that may still be failing
                await breaker.release_probe(rt, model, probe_at)
            self.records.append(
                CallRecord(
                    model=model,
                    status=CallStatus.FAILED,
                    request=request,
                    error=str(err),
                    route=route,
                    requested_model=self.pipeline.model,
                )
            )
            if status == 429 and not err.permanent and await self._rate_limit_holds_left():
                # too many requests: the event waits, not an attempt
                raise Held(rate_limited_reason(model, err.retry_after), delay=after_429(err.retry_after)) from e
            fallback = self._fallback(model, route)
            if status == 529 and fallback:
                return await self({**request, "model": fallback}, then(route, "fallback:overloaded"))
            raise err from e
        simulated = rec.status == CallStatus.SIMULATED  # made up locally: never priced
        rec.cost_usd = None if simulated else limits.price(rt, model, rec.usage)
        rec.route, rec.requested_model = route, self.pipeline.model
        self.records.append(rec)
        # paid for: its usage must reach the day budget even if the database is away right now (a
        # reservation that holds nothing skips the retrying task that would settle nothing)
        if not res.holds_nothing:
            await rt.db.durable(lambda: limits.settle(rt, self.event, res, rec.usage, rec.cost_usd), "a call's usage")
        await limits.observe_headers(rt, model, rec.headers, 200, None)
        await breaker.breaker_report(rt, model, True)
        return rec
