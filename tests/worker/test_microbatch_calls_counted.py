"""A micro-batch's combined call is one Messages API round trip: every place that counts model calls
(hookline.costs_daily, the ``hookline_llm_calls_total`` rollup behind /metrics, the admin API's cost
rows, ``hookline status``'s spend) counts it once, whatever number of events it answered, while its
tokens and cost, split among the events' rows, add up to the one call's. ``handle_event`` driven
directly against the real Postgres and the fake Messages API; the counts are read through the very
queries the web process and the CLI run."""

from __future__ import annotations

import datetime as dt
from decimal import Decimal
from typing import Any

import asyncpg
import pytest

from app.cli.observe import Q as observe_q  # the status command's own queries
from app.web.admin.data import cost as admin_cost
from app.web.metrics import cluster_figures
from tests.fakes.messages_api import FakeMessagesAPI, reply
from tests.harness import make_settings, rows
from tests.worker.test_flow import GOOD, MODEL, held, insert_event, make_config, run_batch_of_three, runtime_for
from worker.pricing import cost_usd
from worker.runtime import Runtime
from worker.tasks import RetryLater, handle_event

USAGE = {"input_tokens": 1001, "output_tokens": 202}


pytestmark = pytest.mark.usefixtures("stripe_and_crm")


async def _counted(db_url: str) -> dict[str, Any]:
    """Calls and cost as /metrics, the admin API and ``hookline status`` report them."""
    pool = await asyncpg.create_pool(db_url, min_size=1, max_size=1)
    assert pool is not None
    try:
        metrics: dict[str, float] = {}
        for family in await cluster_figures(pool):
            for s in family.samples:
                if s.name == "hookline_llm_calls_total":
                    metrics[s.labels["outcome"]] = metrics.get(s.labels["outcome"], 0.0) + s.value
                elif s.name == "hookline_llm_cost_usd_total":
                    metrics["usd"] = metrics.get("usd", 0.0) + s.value
        now = dt.datetime.now(dt.UTC)
        async with pool.acquire() as conn:
            admin = await admin_cost(conn, now - dt.timedelta(hours=1), now + dt.timedelta(hours=1))
            status = [dict(r) for r in await conn.fetch(observe_q["spend_today"])]
    finally:
        await pool.close()
    return {"metrics": metrics, "admin": admin, "status": status}


async def test_one_combined_call_is_one_call_everywhere_and_costs_what_it_cost(
    db_url: str, fake: FakeMessagesAPI
) -> None:
    rt = await runtime_for(db_url, fake, make_config({"batch": {"max_events": 3, "max_wait_ms": 60000}}))
    try:
        await run_batch_of_three(rt, db_url, "evt_count", fake, USAGE)
    finally:
        await rt.close()
    assert len(fake.calls_to("/v1/messages")) == 1  # one round trip answered three events
    assert rows(db_url, "SELECT count(*) FROM hookline.llm_calls") == [(3,)]  # one answer row per event
    ((usage,),) = rows(db_url, "SELECT DISTINCT response->'usage' FROM hookline.llm_calls")
    billed = cost_usd(MODEL, usage)  # what the call cost, as the API reported its usage
    assert billed is not None and billed > 0

    assert rows(db_url, "SELECT calls, input_tokens, output_tokens, usd FROM hookline.costs_daily") == [
        (1, 1001, 202, billed)
    ]
    got = await _counted(db_url)
    assert got["metrics"]["succeeded"] == 1
    assert Decimal(str(got["metrics"]["usd"])).quantize(billed) == billed
    ((admin,),) = [(r,) for r in got["admin"]]
    assert (admin["calls"], admin["input_tokens"], admin["output_tokens"]) == (1, 1001, 202)
    assert Decimal(str(admin["cost_usd"])).quantize(billed) == billed
    ((status,),) = [(r,) for r in got["status"]]
    assert (status["calls"], status["input_tokens"], status["output_tokens"], status["cost_usd"]) == (
        1,
        1001,
        202,
        billed,
    )


async def test_the_call_is_counted_on_a_valid_part_when_the_leaders_own_part_is_invalid(
    db_url: str, fake: FakeMessagesAPI
) -> None:
    """The round trip gave one event its answer: it is one succeeded call, not an invalid one (and not
    one of each), though the leader's own part failed validation."""
    rt = await runtime_for(db_url, fake, make_config({"batch": {"max_events": 2, "max_wait_ms": 60000}}))
    try:
        a, b = insert_event(db_url, "evt_count_a"), insert_event(db_url, "evt_count_b")
        parts = [{"event_id": a, "output": GOOD}, {"event_id": b, "output": {"subject": 7}}]  # b's part is invalid
        fake.set_default(reply({"results": parts}, usage=USAGE))
        await held(rt, a)
        with pytest.raises(RetryLater):  # b leads; its own invalid part fails it (its retry policy)
            await handle_event(rt, b)
        assert await handle_event(rt, a) == "succeeded"
    finally:
        await rt.close()
    assert len(fake.calls_to("/v1/messages")) == 1
    stored = rows(db_url, "SELECT event_id, status, calls FROM hookline.llm_calls ORDER BY event_id")
    assert stored == [(a, "succeeded", 1), (b, "invalid_output", 0)]
    assert rows(db_url, "SELECT calls FROM hookline.costs_daily") == [(1,)]
    metrics = (await _counted(db_url))["metrics"]
    assert (metrics.get("succeeded"), metrics.get("invalid_output")) == (1, None)


async def test_a_simulated_micro_batch_is_one_call_at_no_cost(db_url: str) -> None:
    rt = Runtime.build(
        make_settings(db_url), make_config({"batch": {"max_events": 3, "max_wait_ms": 60000}}), simulate_model=True
    )
    await rt.open()
    try:
        await run_batch_of_three(rt, db_url, "evt_count_sim")
    finally:
        await rt.close()
    assert rows(db_url, "SELECT count(*), sum(calls) FROM hookline.llm_calls WHERE status = 'simulated'") == [(3, 1)]
    assert rows(db_url, "SELECT calls, usd FROM hookline.costs_daily") == [(1, 0)]
    got = await _counted(db_url)
    assert got["metrics"]["simulated"] == 1
    assert [(r["calls"], r["cost_usd"]) for r in got["admin"]] == [(1, 0)]
