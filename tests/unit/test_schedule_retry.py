"""A failed schedule firing is tried again with backoff until 10 minutes after its scheduled time."""

from __future__ import annotations

from procrastinate.jobs import Job

from worker.schedules import LATE_LIMIT, FiringRetry

STAMP = 1_800_000_000


def job(attempts: int) -> Job:
    return Job(
        id=1,
        queue="hookline",
        lock=None,
        queueing_lock=None,
        task_name="hookline:fire_schedule",
        task_kwargs={"timestamp": STAMP, "schedule": "daily"},
        attempts=attempts,
    )


def test_the_pauses_double_up_to_a_minute() -> None:
    strategy = FiringRetry(clock=lambda: STAMP + 5.0)
    got = []
    for attempts in range(9):
        d = strategy.get_retry_decision(exception=OSError("away"), job=job(attempts))
        assert d is not None and d.retry_at is not None
        got.append(round(d.retry_at.timestamp() - (STAMP + 5.0)))
    assert got[:7] == [1, 2, 4, 8, 16, 32, 60] and got[7:] == [60, 60]


def test_a_firing_is_tried_until_ten_minutes_late_and_never_after() -> None:
    assert LATE_LIMIT == 600
    near = FiringRetry(clock=lambda: STAMP + LATE_LIMIT - 10).get_retry_decision(exception=OSError("away"), job=job(30))
    assert near is not None and near.retry_at is not None
    assert near.retry_at.timestamp() <= STAMP + LATE_LIMIT  # the last try is still inside the limit
    late = FiringRetry(clock=lambda: STAMP + LATE_LIMIT + 1).get_retry_decision(exception=OSError("away"), job=job(30))
    assert late is None
