"""One worker process keeps 200 model calls in flight on a handful of database connections.

The fake Messages API holds every call until the test opens its gate, so what is counted is how many
calls the worker has open at once, not how fast anything is. Then every event finishes exactly once.
"""

from __future__ import annotations

import asyncio
import json

import psycopg
import pytest

from tests.fakes.messages_api import FakeMessagesAPI, held
from tests.harness import make_settings, rows, worker_task
from tests.worker.test_pipeline import make_config
from worker.runtime import DB_POOL_CAP

CALLS = 200


@pytest.fixture(autouse=True)
def env(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HL_STRIPE_SECRET", "whsec_in_flight")


def insert_events(db_url: str, n: int) -> None:
    payload = json.dumps({"type": "invoice.payment_failed", "data": {"object": {"note": "card declined"}}})
    with psycopg.connect(db_url, autocommit=True) as conn:
        conn.execute(
            "INSERT INTO hookline.events (source, delivery_id, event_type, payload) "
            "SELECT 'stripe', 'evt_fly_' || i, 'invoice.payment_failed', %s::jsonb FROM generate_series(1, %s) i",
            (payload, n),
        )


async def test_one_worker_holds_200_model_calls_on_a_few_connections(db_url: str, fake: FakeMessagesAPI) -> None:
    fake.set_default(held())
    insert_events(db_url, CALLS)
    settings = make_settings(
        db_url, anthropic_api_key="sk-test", anthropic_base_url=fake.base_url, worker_concurrency=CALLS
    )
    async with worker_task(settings, make_config(actions=[])):
        peak = 0
        for _ in range(1200):  # up to about 60 s on a loaded machine; the assertion is on the count
            peak = max(peak, fake.in_flight())
            if peak >= CALLS:
                break
            await asyncio.sleep(0.05)
        connections = rows(
            db_url,
            "SELECT count(*) FROM pg_stat_activity "
            "WHERE datname = current_database() AND application_name LIKE 'hookline-worker%%'",
        )[0][0]
        fake.open_gate()
        for _ in range(1200):
            done = rows(db_url, "SELECT count(*) FROM hookline.events WHERE status = 'succeeded'")[0][0]
            if done == CALLS:
                break
            await asyncio.sleep(0.05)
    assert peak == CALLS
    # two pools of at most DB_POOL_CAP (procrastinate's and hookline's) and the LISTEN connection
    assert connections <= 2 * DB_POOL_CAP + 1
    assert done == CALLS
    per_event = rows(
        db_url,
        "SELECT event_id FROM hookline.llm_calls WHERE status = 'succeeded' GROUP BY event_id HAVING count(*) > 1",
    )
    assert per_event == [] and len(fake.calls_to("/v1/messages")) == CALLS
