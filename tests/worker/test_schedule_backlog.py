"""A schedule's firing is not held back by a backlog of queued events: the worker's periodic deferrer
defers it at a priority above any pipeline's, and the worker's fetch hands it out first."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import psycopg
from procrastinate.periodic import PeriodicDeferrer

from app.core import jobs as jobnames
from tests.harness import config_from
from tests.integration.test_key_order import _event, _fetch, cur, worker  # noqa: F401  (fixtures)
from worker.main import build_app

CONFIG = {
    "sources": {"stripe": {"provider": "stripe", "secrets_env": ["HL_STRIPE_SECRET"]}},
    "pipelines": {
        "digest": {
            "source": "schedule",
            "instructions": "Summarize the day.",
            "output_schema": {"type": "object", "properties": {"summary": {"type": "string"}}},
        },
    },
    "schedules": {"daily": {"cron": "0 9 * * *", "pipeline": "digest"}},
}


async def test_a_firing_is_fetched_ahead_of_a_backlog_of_events(
    db_url: str,
    cur: psycopg.Cursor[Any],  # noqa: F811
    worker: int,  # noqa: F811
) -> None:
    # routine events and events of a pipeline of the highest priority a pipeline may have
    backlog = [_event(cur, f"evt_{i}", key=None, priority=p) for i, p in enumerate([0, 1000] * 20)]
    cur.connection.commit()
    app = build_app(db_url, pool_size=2, config=config_from(CONFIG))
    async with app.open_async():
        deferrer = PeriodicDeferrer(app.periodic_registry)
        periodic = app.periodic_registry.periodic_tasks[(jobnames.FIRE_SCHEDULE, "daily")]
        at = int(datetime(2026, 12, 2, 9, tzinfo=UTC).timestamp())
        await deferrer.defer_jobs([(periodic, at)])  # what the worker's periodic loop does at 09:00
    firing = cur.execute("SELECT id FROM procrastinate_jobs WHERE task_name = %s", (jobnames.FIRE_SCHEDULE,))
    row = firing.fetchone()
    assert row is not None
    assert _fetch(cur, worker) == row[0], "the firing waited behind the queued events"
    assert _fetch(cur, worker) in backlog
