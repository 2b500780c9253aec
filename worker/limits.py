"""Limits shared by every worker process, kept in Postgres (sql/migrations/0007_limits.sql).

- admission: a tenant's ``events_per_hour`` and the pipeline's ``loop_guard``, once per event;
- per call: the model's circuit breaker (fallback while open), its shared token bucket
  (``requests/input/output_tokens_per_minute``), the tenant's day budget (reserve, then settle).

Whatever must wait raises :class:`Held`: the task marks the event ``throttled`` and reschedules its
job for when the window reopens (never a sleep in a worker slot), or, with ``on_cap = "dead"``,
sends it to the dead letters.
"""

from __future__ import annotations

import datetime as dt
import json
import logging
import random
from dataclasses import dataclass
from decimal import Decimal
from typing import Any, NoReturn

from psycopg.rows import dict_row
from psycopg.types.json import Jsonb

from app.core.config import Pipeline, Tenant
from app.core.config.pipelines import LoopGuard
from app.core.querynames import LimitsQuery
from app.core.records import EventRow
from app.core.sqlfiles import NamedQueries
from worker.alerts import send_alert
from worker.errors import PermanentError, PipelineError
from worker.pricing import cost_usd
from worker.runtime import Runtime

log = logging.getLogger("hookline.limits")
LQ: NamedQueries[LimitsQuery] = NamedQueries("limits", LimitsQuery)


class Held(PipelineError):
    """The event must wait ``delay`` seconds (throttled), or die at once when ``dead``."""

    permanent = False

    def __init__(self, reason: str, *, delay: float, dead: bool = False) -> None:
        super().__init__(reason)
        self.reason = reason
        self.delay = max(0.05, delay)
        self.dead = dead


def _adapt(params: dict[str, Any]) -> dict[str, Any]:
    return {k: Jsonb(v) if isinstance(v, dict) else v for k, v in params.items()}


async def one(rt: Runtime, name: LimitsQuery, **params: Any) -> dict[str, Any] | None:
    """The first row of a sql/queries/limits.sql block (None when it returns none)."""
    async with rt.db.pool.connection() as conn, conn.cursor(row_factory=dict_row) as cur:
        await cur.execute(LQ[name], _adapt(params))
        return await cur.fetchone() if cur.description else None


async def all_rows(rt: Runtime, name: LimitsQuery, **params: Any) -> list[dict[str, Any]]:
    """Every row of a sql/queries/limits.sql block."""
    async with rt.db.pool.connection() as conn, conn.cursor(row_factory=dict_row) as cur:
        await cur.execute(LQ[name], _adapt(params))
        return list(await cur.fetchall()) if cur.description else []


def _seconds_until(when: dt.datetime | None) -> float:
    if when is None:
        return 1.0
    return max(0.05, (when - dt.datetime.now(dt.UTC)).total_seconds())


def tenant_key(event: EventRow) -> str:
    return str(event.get("tenant") or "")


# ------------------------------------------------------------------------------------------- admission
async def admit(rt: Runtime, event: EventRow, pipelines: list[Pipeline]) -> None:
    """Count the event once against ``events_per_hour`` and hold it while a loop guard trips."""
    cfg = rt.config
    caps = cfg.tenant(event.get("tenant")) if cfg.tenants else None
    guarded = [(p, p.loop_guard) for p in pipelines if p.loop_guard is not None]
    if guarded or (caps is not None and any(p.loop_guard for p in cfg.pipelines.values())):
        # count and admit in one function, under a lock per ordering key and tenant: events started
        # together must not all count the same admitted ones (an unguarded event too, when a guard counts it)
        row = await one(
            rt,
            "admit_guarded",
            event_id=event["id"],
            max_events=[g.max_events for _, g in guarded],
            window_seconds=[g.window_seconds for _, g in guarded],
            count_hour=caps is not None,
            cap=caps.events_per_hour if caps is not None else None,
        )
        if row is not None and row["blocked"] is not None:
            pipeline, guard = guarded[int(row["blocked"]) - 1]
            await _loop_guard_held(rt, event, pipeline, guard, int(row["n"]), row["frees_at"])
    elif caps is not None:
        row = await one(rt, "admit_event", event_id=event["id"], tenant=tenant_key(event), cap=caps.events_per_hour)
    else:
        return
    reopens = row["reopens_at"] if row else None
    if reopens is not None:
        assert caps is not None
        what = f"events_per_hour ({caps.events_per_hour})"
        await _cap_alert(rt, event, caps, "hour", reopens - dt.timedelta(hours=1), what, reopens)
        raise _over_cap(caps, f"tenant {tenant_key(event)!r} is at events_per_hour = {caps.events_per_hour}", reopens)


async def _loop_guard_held(
    rt: Runtime, event: EventRow, p: Pipeline, guard: LoopGuard, n: int, frees_at: dt.datetime | None
) -> NoReturn:
    what = f"ordering key {event['ordering_key']!r}" if event.get("ordering_key") else f"tenant {tenant_key(event)!r}"
    reason = (
        f"loop guard of pipeline {p.name}: {what} had {n} events in {guard.window_seconds:g}s "
        f"(max_events = {guard.max_events}); held until the window has room"
    )
    claim = await one(rt, "claim_once", kind="loop_guard", subject=f"{p.name} {what}")
    if claim and claim["claimed"]:  # logged once per key and hour, with or without [[alerts]]
        data = {"pipeline": p.name, "event_id": event["id"], "key": what}
        await send_alert(rt, "loop_guard", reason, data, once=f"{p.name}-{event['id']}")
    raise Held(reason, delay=_seconds_until(frees_at))


def _over_cap(caps: Tenant, what: str, reopens: dt.datetime) -> Held:
    if caps.on_cap == "dead":
        return Held(f"{what} (on_cap = dead)", delay=0, dead=True)
    return Held(f"{what}; waits for the window to reopen at {reopens.isoformat()}", delay=_seconds_until(reopens))


# ------------------------------------------------------------------------------------------- per call
#: A call's reservation is reclaimed this long after its pipeline's timeout (its worker was killed).
LEASE_MARGIN_SECONDS = 60.0
#: A day cap full only of reservations of calls in flight: try again after about this long (jittered).
IN_FLIGHT_RETRY_SECONDS = 2.0


@dataclass
class Reservation:
    model: str
    tenant: str | None = None  # None: no budget reserved
    day_start: dt.datetime | None = None
    tokens: int = 0
    usd: Decimal = Decimal(0)
    input_taken: int = 0
    output_taken: int = 0
    id: int | None = None  # hookline.budget_reservations.id

    @property
    def holds_nothing(self) -> bool:
        """Nothing taken from the model's bucket and no budget reserved: :func:`settle` has nothing to do."""
        return not (self.input_taken or self.output_taken) and (self.tenant is None or self.day_start is None)


def estimate_input_tokens(request: dict[str, Any]) -> int:
    """A deliberately high estimate (3 characters per token) of the request's input tokens."""
    parts = {k: request.get(k) for k in ("system", "messages", "output_config", "tools")}
    return max(1, len(json.dumps(parts, default=str)) // 3)


def price(rt: Runtime, model: str, usage: dict[str, Any]) -> Decimal | None:
    prices = rt.config.model_limits(model).prices
    return cost_usd(model, usage, prices.model_dump() if prices is not None else None)


async def reserve(
    rt: Runtime, event: EventRow, request: dict[str, Any], *, lease_seconds: float, batch: bool = False
) -> Reservation:
    """Take the call's share of the model's bucket and reserve its worst case in the tenant's day
    (at batch price for a Message Batches request), leased for ``lease_seconds``."""
    model = request["model"]
    limits = rt.config.model_limits(model)
    est_out = int(request["max_tokens"])
    # the estimate serializes the whole request: only a model with limits or a tenant budget reads it
    est_in = estimate_input_tokens(request) if model in rt.config.models or rt.config.tenants else 0
    res = Reservation(model)
    if model in rt.config.models:  # also honours a 429's hold on a model without per-minute limits
        row = await one(
            rt,
            "take_model_capacity",
            model=model,
            rpm=limits.requests_per_minute,
            itpm=limits.input_tokens_per_minute,
            otpm=limits.output_tokens_per_minute,
            input=est_in,
            output=est_out,
        )
        wait = float(row["wait"]) if row else 0.0
        if wait > 0:
            raise Held(f"model {model} is at its shared rate limit; next call in {wait:.1f}s", delay=wait)
        res.input_taken, res.output_taken = est_in, est_out
    if rt.config.tenants:
        caps = rt.config.tenant(event.get("tenant"))
        worst: dict[str, Any] = {"input_tokens": est_in, "output_tokens": est_out}
        priced = price(rt, model, {**worst, "service_tier": "batch"} if batch else worst)
        usd = priced or Decimal(0)
        never = _never_fits(caps, est_in + est_out, usd)
        if priced is None and caps.usd_per_day is not None and not rt.simulated:
            never = (  # its calls would count $0: the dollar cap would never be reached, whatever they cost
                f"model {model} has no price, so its calls cannot be counted against usd_per_day; "
                f'set [models."{model}"].prices'
            )
        if never:  # held, it would wait for a day that never comes, every day
            await settle_model(rt, res, None)
            raise PermanentError(f"tenant {tenant_key(event)!r}: {never}")
        row = await one(
            rt,
            "reserve_budget",
            tenant=tenant_key(event),
            tokens=est_in + est_out,
            usd=usd,
            tokens_cap=caps.tokens_per_day,
            usd_cap=Decimal(str(caps.usd_per_day)) if caps.usd_per_day is not None else None,
            event_id=event["id"],
            kind="batch_api" if batch else "call",
            lease_seconds=lease_seconds,
        )
        assert row is not None
        if not row["granted"]:
            await settle_model(rt, res, None)
            if row["reserved_only"]:  # not the cap: calls in flight settle at a fraction of their reservation
                raise _in_flight_hold(tenant_key(event), int(row["in_flight"]), row["frees_at"])
            await _cap_alert(rt, event, caps, "day", row["day_start"], "day budget", row["reopens_at"])
            raise _over_cap(caps, f"tenant {tenant_key(event)!r} is at its daily token or USD cap", row["reopens_at"])
        res.tenant, res.day_start, res.tokens, res.usd = tenant_key(event), row["day_start"], est_in + est_out, usd
        res.id = row["reservation_id"]
    return res


def _in_flight_hold(tenant: str, in_flight: int, frees_at: dt.datetime | None) -> Held:
    """Settled spend leaves room, reservations (worst cases) of calls in flight fill the cap: wait for them
    to settle or their lease to end, not for the window, whatever ``on_cap`` says (the cap is not reached)."""
    wait = min(_seconds_until(frees_at), IN_FLIGHT_RETRY_SECONDS * (0.5 + random.random()))
    return Held(
        f"tenant {tenant!r}: its daily token or USD cap is full only of the reservations of {in_flight} "
        f"call(s) in flight; waits for calls in flight to settle (rescheduled shortly), not for the window",
        delay=wait,
    )


def _never_fits(caps: Tenant, tokens: int, usd: Decimal) -> str | None:
    """Why one call's worst case (estimated input + ``max_tokens``) can never be reserved: it is more
    than the tenant's whole day cap. None when it fits in an empty day."""
    if caps.tokens_per_day is not None and tokens > caps.tokens_per_day:
        return (
            f"one call's worst case ({tokens} tokens: estimated input + max_tokens) is more than the whole "
            f"tokens_per_day ({caps.tokens_per_day}); raise the cap or lower the pipeline's max_tokens"
        )
    if caps.usd_per_day is not None and usd > Decimal(str(caps.usd_per_day)):
        return (
            f"one call's worst case (${usd:.4f}: estimated input + max_tokens) is more than the whole "
            f"usd_per_day (${caps.usd_per_day}); raise the cap or lower the pipeline's max_tokens"
        )
    return None


async def settle_model(rt: Runtime, res: Reservation, usage: dict[str, Any] | None) -> None:
    if not (res.input_taken or res.output_taken):
        return
    limits = rt.config.model_limits(res.model)
    used_in = _input_tokens(usage) if usage else 0
    used_out = int((usage or {}).get("output_tokens") or 0)
    await one(
        rt,
        "settle_model_capacity",
        model=res.model,
        input_delta=used_in - res.input_taken,
        output_delta=used_out - res.output_taken,
        itpm=limits.input_tokens_per_minute,
        otpm=limits.output_tokens_per_minute,
    )
    res.input_taken = res.output_taken = 0


def _input_tokens(usage: dict[str, Any]) -> int:
    keys = ("input_tokens", "cache_creation_input_tokens", "cache_read_input_tokens")
    return sum(int(usage.get(k) or 0) for k in keys)


async def settle(
    rt: Runtime, event: EventRow, res: Reservation, usage: dict[str, Any] | None, cost: Decimal | None
) -> None:
    """After the call (answered or failed): actual usage replaces the reservation."""
    await settle_model(rt, res, usage)
    if res.tenant is None or res.day_start is None:
        return
    tokens = (_input_tokens(usage) + int(usage.get("output_tokens") or 0)) if usage else 0
    row = await one(
        rt,
        "settle_budget",
        reservation_id=res.id,
        tenant=res.tenant,
        day_start=res.day_start,
        tokens=tokens,
        usd=cost or Decimal(0),
    )
    if row is None:
        return
    caps = rt.config.tenant(event.get("tenant"))
    fractions = []
    if caps.tokens_per_day:
        fractions.append(int(row["day_tokens"]) / caps.tokens_per_day)
    if caps.usd_per_day:
        fractions.append(float(row["day_usd"]) / caps.usd_per_day)
    if fractions and max(fractions) >= caps.alert_at:
        await _alert_at(rt, event, caps, res.day_start, max(fractions))


async def observe_headers(rt: Runtime, model: str, headers: Any, status: int | None, retry_after: float | None) -> None:
    """Feed the API's rate-limit headers and 429s back into the shared bucket (configured models)."""
    if model not in rt.config.models or headers is None:
        return

    def num(name: str) -> float | None:
        value = headers.get(f"anthropic-ratelimit-{name}-remaining")
        try:
            return float(value) if value is not None else None
        except ValueError:
            return None

    blocked: dt.datetime | None = None
    reason = None
    if status == 429:
        blocked = dt.datetime.now(dt.UTC) + dt.timedelta(seconds=retry_after or 1.0)
        reason = "429 from the API"
    elif num("requests") == 0:
        reset = headers.get("anthropic-ratelimit-requests-reset")
        try:
            blocked = dt.datetime.fromisoformat(reset.replace("Z", "+00:00")) if reset else None
        except ValueError:
            blocked = None
        reason = "anthropic-ratelimit-requests-remaining: 0"
    await one(
        rt,
        "observe_model_limits",
        model=model,
        requests=num("requests"),
        input=num("input-tokens"),
        output=num("output-tokens"),
        blocked_until=blocked,
        reason=reason,
    )


# ------------------------------------------------------------------------------------------- alerts
async def _alert_at(rt: Runtime, event: EventRow, caps: Tenant, day_start: dt.datetime, fraction: float) -> None:
    """The day's settled spend crossed ``alert_at``: alert once per tenant and day (budget_windows.alerted_at)."""
    row = await one(rt, "claim_alert", tenant=tenant_key(event), period="day", window_start=day_start)
    if not (row and row["claimed"]):
        return
    text = f"tenant {tenant_key(event)!r} reached {fraction:.0%} of its day budget (alert_at = {caps.alert_at:g})"
    data = {"tenant": tenant_key(event), "period": "day", "window_start": str(day_start), "fraction": fraction}
    await send_alert(rt, "budget", text, {**data, "reached": "alert_at"}, once=f"{tenant_key(event)}-day-{day_start}")


async def _cap_alert(
    rt: Runtime, event: EventRow, caps: Tenant, period: str, window_start: dt.datetime, what: str, reopens: Any
) -> None:
    """An event is held (or dead) at the cap: alert once per tenant and window, apart from :func:`_alert_at`'s
    claim (a row of hookline.alerts_sent, kind budget_cap)."""
    row = await one(rt, "claim_cap_alert", tenant=tenant_key(event), period=period, window_start=window_start)
    if not (row and row["claimed"]):
        return
    until = f"until {reopens.isoformat()}" if isinstance(reopens, dt.datetime) else "until the window reopens"
    then = "go to the dead letters (on_cap = dead)" if caps.on_cap == "dead" else "are held"
    text = f"tenant {tenant_key(event)!r} reached its {what}; its events {then} {until}"
    data = {"tenant": tenant_key(event), "period": period, "window_start": str(window_start), "fraction": 1.0}
    once = f"{tenant_key(event)}-{period}-{window_start}-cap"
    await send_alert(rt, "budget", text, {**data, "reached": "cap", "reopens_at": str(reopens)}, once=once)
