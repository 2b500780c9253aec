"""``concurrency = { per_tenant, per_key }``: events of one tenant / one ordering key in flight, capped
across every worker process.

A slot is a row of hookline.concurrency_slots (migration 0012) with a lease: the job takes the slots of
all its pipelines at admission, in one round trip and all or none, and gives them back when the run
ends (finished, failed or held). A worker killed mid-run leaves its slots until their lease ends (the
sum of the pipelines' ``timeout_seconds`` plus a minute); the next acquire deletes them. An event that
finds a slot taken is held (``throttled``) and its job rescheduled about a second later: it never waits
in a worker slot. Pipelines without ``concurrency`` pay nothing: no query at all.
"""

from __future__ import annotations

import asyncio
import logging
import random

from app.core.config import Pipeline
from app.core.records import EventRow
from worker.limits import LEASE_MARGIN_SECONDS, Held, one, tenant_key
from worker.runtime import Runtime

log = logging.getLogger("hookline.concurrency")
#: A held event asks again after about this long (jittered by ±50 %, so waiters do not stampede).
RETRY_SECONDS = 1.0


def wanted(event: EventRow, pipelines: list[Pipeline]) -> list[tuple[str, str, str, int]]:
    """(pipeline, scope, subject, cap) of every slot the event needs, sorted (the lock order)."""
    out: list[tuple[str, str, str, int]] = []
    for p in pipelines:
        c = p.concurrency
        if c is None:
            continue
        if c.per_tenant is not None:
            out.append((p.name, "tenant", tenant_key(event), c.per_tenant))
        if c.per_key is not None and event.get("ordering_key"):
            out.append((p.name, "key", f"{event['source']}:{event['ordering_key']}", c.per_key))
    return sorted(out)


async def acquire(rt: Runtime, event: EventRow, pipelines: list[Pipeline]) -> None:
    """Take the event's slots, or raise :class:`Held` naming the cap that is full."""
    slots = wanted(event, pipelines)
    if not slots:
        return
    lease = sum(p.timeout_seconds for p in pipelines) + LEASE_MARGIN_SECONDS
    row = await one(
        rt,
        "acquire_slots",
        event_id=event["id"],
        pipelines=[s[0] for s in slots],
        scopes=[s[1] for s in slots],
        subjects=[s[2] for s in slots],
        caps=[s[3] for s in slots],
        lease_seconds=lease,
    )
    if row is None or row["granted"]:
        return
    name, scope, subject, cap = slots[int(row["blocked"]) - 1]
    what = f"tenant {subject!r}" if scope == "tenant" else f"ordering key {subject!r}"
    key = "per_tenant" if scope == "tenant" else "per_key"
    raise Held(
        f"concurrency of pipeline {name}: {what} has {row['in_flight']} event(s) in flight "
        f"({key} = {cap}); rescheduled shortly",
        delay=RETRY_SECONDS * (0.5 + random.random()),
    )


async def release(rt: Runtime, event: EventRow, pipelines: list[Pipeline]) -> None:
    """Give the event's slots back (also while the job is being cancelled); a failure leaves them to
    their lease."""
    if not any(p.concurrency is not None for p in pipelines):
        return
    try:
        await asyncio.shield(one(rt, "release_slots", event_id=event["id"]))
    except (Exception, asyncio.CancelledError) as e:
        log.warning("event %s: concurrency slots not released (%s); their lease frees them", event["id"], e)
        if isinstance(e, asyncio.CancelledError):
            raise
