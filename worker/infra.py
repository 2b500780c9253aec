"""Job runs that failed outside the pipelines (the database failed while claiming, finishing or recording
an event), counted on the event row: procrastinate's own ``attempts`` also counts every throttle
reschedule, so a long-throttled event must not be declared dead by it."""

from __future__ import annotations

import contextlib

from worker.limits import one
from worker.runtime import Runtime


async def count_infra_failure(
    rt: Runtime, event_id: int, job_attempts: int, claim: int | None = None
) -> tuple[int, bool] | None:
    """Count a job run that failed outside the pipelines on the event (throttle holds never count):
    ``(failures so far, counted)``; when the database cannot count it either, the job's own run count
    stands in for the backoff and nothing is counted. ``claim``: the run's claim, when it got one; None
    back when that claim is no longer the event's current one (nothing counted: the event, and its job,
    are the later run's)."""
    with contextlib.suppress(Exception):
        row = await one(rt, "count_infra_failure", event_id=event_id, claim=claim)
        if row is not None:
            return int(row["infra_failures"]), True
        if claim is not None:
            return None
    return job_attempts + 1, False
