"""A micro-batch's one combined call, split among its events: the rows add up to exactly what the call
used and cost (the remainders go to the leader's row), and the call is in the latency histogram once.
``handle_event`` driven directly against the real Postgres and the fake Messages API."""

from __future__ import annotations

import pytest

from tests.fakes.messages_api import FakeMessagesAPI
from tests.harness import rows
from tests.worker.test_flow import MODEL, make_config, run_batch_of_three, runtime_for
from worker.pricing import cost_usd

USAGE = {"input_tokens": 1001, "output_tokens": 202, "cache_creation_input_tokens": 5, "cache_read_input_tokens": 7}


pytestmark = pytest.mark.usefixtures("stripe_and_crm")


async def test_the_rows_of_a_micro_batch_add_up_to_its_call(db_url: str, fake: FakeMessagesAPI) -> None:
    rt = await runtime_for(db_url, fake, make_config({"batch": {"max_events": 3, "max_wait_ms": 60000}}))
    try:
        await run_batch_of_three(rt, db_url, "evt_split", fake, USAGE)
        latency = rt.metrics.registry.get_sample_value(
            "hookline_llm_latency_seconds_count", {"model": MODEL, "outcome": "succeeded"}
        )
    finally:
        await rt.close()
    assert len(fake.calls_to("/v1/messages")) == 1
    assert latency == 1  # the one combined call, once (not once per event, not missing)
    kinds = "input_tokens, output_tokens, cache_creation_input_tokens, cache_read_input_tokens"
    stored = rows(db_url, f"SELECT event_id, {kinds}, cost_usd FROM hookline.llm_calls ORDER BY event_id")
    ((usage,),) = rows(db_url, "SELECT DISTINCT response->'usage' FROM hookline.llm_calls")
    billed = cost_usd(MODEL, usage)  # what the call cost, as the API reported its usage
    assert billed is not None and billed > 0
    totals = [sum(r[i] for r in stored) for i in range(1, 6)]
    assert totals == [1001, 202, 5, 7, billed]
    # even shares; the leader's row (the third event's) carries the remainders
    assert [r[1:5] for r in stored] == [(333, 67, 1, 2), (333, 67, 1, 2), (335, 68, 3, 3)]
    assert stored[0][5] == stored[1][5] and stored[2][5] >= stored[0][5]
    assert rows(db_url, "SELECT input_tokens, output_tokens, usd FROM hookline.costs_daily") == [(1001, 202, billed)]
