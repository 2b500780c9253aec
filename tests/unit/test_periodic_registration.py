"""The worker's periodic tasks are registered once each, under their namespaced names.

procrastinate logs every registration. The maintenance task was registered on the blueprint, which
logged it as ``maintenance``, and again by ``add_tasks_from`` as ``hookline:maintenance``: two lines at
every worker start for one periodic task.
"""

from __future__ import annotations

import logging

import pytest

from app.core import jobs as jobnames
from app.core.config import parse_config
from worker.main import build_app

CONFIG = {
    "pipelines": {"digest": {"source": "schedule", "instructions": "x", "output_schema": {"type": "object"}}},
    "schedules": {"daily-digest": {"cron": "0 9 * * *", "pipeline": "digest"}},
}


def test_each_periodic_task_is_registered_and_logged_once(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, logger="procrastinate.periodic")
    app = build_app("postgresql://nobody@127.0.0.1:1/none", pool_size=1, config=parse_config(CONFIG))  # never connects
    expected = [(jobnames.MAINTENANCE, "maintenance"), (jobnames.FIRE_SCHEDULE, "daily-digest")]
    assert sorted(app.periodic_registry.periodic_tasks) == sorted(expected)
    logged = [
        (getattr(r, "task", None), getattr(r, "periodic_id", None))
        for r in caplog.records
        if getattr(r, "action", None) == "registering_periodic_task"
    ]
    assert logged == expected
    assert app.periodic_registry.periodic_tasks[(jobnames.MAINTENANCE, "maintenance")].cron == "* * * * *"
