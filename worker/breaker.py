"""The circuit breaker of each model, shared by every worker process (``hookline.breakers``): whether a
call may go (closed, or the one half-open probe), and each call's outcome reported back to it."""

from __future__ import annotations

import datetime as dt
import logging

from worker.alerts import send_alert
from worker.limits import _seconds_until, one
from worker.runtime import Runtime

log = logging.getLogger("hookline.limits")
#: A half-open probe that has not reported back after this long is presumed lost; another may go.
PROBE_TIMEOUT_SECONDS = 120.0


def open_reason(model: str) -> str:
    """Why an event waits for the model's open breaker (its ``detail`` after ``throttled: ``)."""
    return f"circuit breaker of {model} is open; calls resume after its half-open probe"


async def breaker_gate(rt: Runtime, model: str) -> tuple[str, float, dt.datetime | None]:
    """("closed"|"probe", 0, probe_at) when a call may go, ("open", seconds to wait, None) otherwise.
    ``probe_at`` (a probe's only) says whose probe it is to ``breaker_release``."""
    if rt.config.model_limits(model).breaker is None:
        return "closed", 0.0, None
    row = await one(rt, "breaker_acquire", model=model, probe_timeout=PROBE_TIMEOUT_SECONDS)
    if row is None or row["verdict"] != "open":
        verdict = row["verdict"] if row else "closed"
        return verdict, 0.0, row["probe_at"] if row and verdict == "probe" else None
    return "open", _seconds_until(row["retry_at"]), None


async def release_probe(rt: Runtime, model: str, probe_at: dt.datetime | None) -> None:
    """Give back the half-open probe taken at ``probe_at`` (a call never sent, cut off by a shutdown, or
    answered 4xx/429: nothing said about the model's health). The breaker is due for a probe again, and
    the event its open state held longest runs now to take it (sql/queries/limits.sql breaker_release)."""
    row = await one(rt, "breaker_release", model=model, probe_at=probe_at, detail=f"throttled: {open_reason(model)}")
    if row is not None:
        log.info("half-open probe of %s given back; job %s takes the next one", model, row["woken_job"])


async def breaker_report(rt: Runtime, model: str, ok: bool, error: str | None = None) -> None:
    breaker = rt.config.model_limits(model).breaker
    if breaker is None:
        return
    row = await one(
        rt,
        "breaker_record",
        model=model,
        ok=ok,
        failures=breaker.failures,
        window_seconds=breaker.window_seconds,
        open_seconds=breaker.open_seconds,
        error=error,
    )
    if row and row["flipped"]:
        state = row["new_state"]
        log.warning("circuit breaker of %s is now %s%s", model, state, f" ({error})" if error else "")
        if state == "closed":  # the events it held run now, not when a probe would have been presumed lost
            await one(rt, "wake_breaker_waiters", detail=f"throttled: {open_reason(model)}")
        await send_alert(rt, "breaker", f"circuit breaker of {model} is {state}", {"model": model, "state": state})
