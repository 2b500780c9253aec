"""A micro-batched pipeline under ``hookline dev --simulate-model``: the whole flow runs, actions
included; the combined call is answered with one part per event it asks for, and each event's row is
stored with status ``simulated`` and no cost. ``handle_event`` driven directly against the real
Postgres; the simulated model is the worker's own (no API key, no network)."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest

from tests.harness import Receiver, make_settings, rows
from tests.worker.test_flow import held, insert_event, make_config
from worker.runtime import Runtime
from worker.tasks import handle_event

pytestmark = pytest.mark.usefixtures("stripe_and_crm")


@pytest.fixture
async def simulated(db_url: str) -> AsyncIterator[Runtime]:
    cfg = make_config({"batch": {"max_events": 2, "max_wait_ms": 60000}})
    rt = Runtime.build(make_settings(db_url), cfg, simulate_model=True)
    await rt.open()
    yield rt
    await rt.close()


async def test_a_simulated_micro_batch_answers_every_event_and_runs_its_actions(
    db_url: str, simulated: Runtime, receiver: Receiver
) -> None:
    rt = simulated
    a, b = insert_event(db_url, "evt_sim_a"), insert_event(db_url, "evt_sim_b")
    assert "gathering a micro-batch" in await held(rt, a)
    assert await handle_event(rt, b) == "succeeded"  # two pending: b leads, its own part answers it
    assert await handle_event(rt, a) == "succeeded"  # woken: its part of the same answer
    calls = rows(
        db_url, "SELECT event_id, route, status, cost_usd, request_id FROM hookline.llm_calls ORDER BY event_id"
    )
    assert [c[:4] for c in calls] == [
        (a, "micro_batch:2", "simulated", None),
        (b, "micro_batch:2", "simulated", None),
    ]
    assert calls[0][4] == calls[1][4]  # one combined call
    events = rows(db_url, "SELECT id, status, attempts FROM hookline.events ORDER BY id")
    assert events == [(a, "succeeded", 1), (b, "succeeded", 1)]
    ran = rows(db_url, "SELECT event_id, status FROM hookline.action_runs ORDER BY event_id")
    assert ran == [(a, "succeeded"), (b, "succeeded")]
    assert len(receiver.received) == 2
    assert rows(db_url, "SELECT usd FROM hookline.costs_daily") == [(0,)]
    latency = rt.metrics.registry.get_sample_value(
        "hookline_llm_latency_seconds_count", {"model": "claude-haiku-5-5", "outcome": "simulated"}
    )
    assert latency == 1  # the one combined call, once
