"""Micro-batches under tenant budgets: with ``[tenants]`` a micro-batch holds one tenant's events, so its
combined call is reserved and settled against that tenant's day and every event counts against its own
tenant's caps; ``tokens_per_day`` bounds one event's request, so a leader asks for only as many events as
could fit in a day (alone, with its own request, when not even a batch of one could), and the others
gather again without losing an attempt. ``handle_event`` driven directly against the real Postgres and
the fake Messages API."""

from __future__ import annotations

import json
from typing import Any

import pytest

from app.core.config import Config
from tests.fakes.messages_api import FakeMessagesAPI, reply
from tests.harness import rows
from tests.worker.test_flow import GOOD, USAGE, event_row, held, insert_event, make_config, runtime_for
from worker import limits
from worker.microbatch import combined_request
from worker.prompt import build_request
from worker.runtime import Runtime
from worker.tasks import handle_event

BATCH = {"batch": {"max_events": 3, "max_wait_ms": 60000}, "max_tokens": 200}


pytestmark = pytest.mark.usefixtures("stripe_and_crm")


def results(*event_ids: int) -> dict[str, list[dict[str, Any]]]:
    return {"results": [{"event_id": e, "output": GOOD} for e in event_ids]}


def worst_case(request: dict[str, Any]) -> int:
    """What the worker reserves for this request (estimated input + max_tokens)."""
    return limits.estimate_input_tokens(request) + int(request["max_tokens"])


def own_request(config: Config, db_url: str, event_id: int) -> dict[str, Any]:
    return build_request(config.pipelines["triage"], event_row(db_url, event_id))


def events_asked(fake: FakeMessagesAPI) -> list[list[int]]:
    """The event ids of each combined call sent (a solo call: [])."""
    out = []
    for call in fake.calls_to("/v1/messages"):
        doc = json.loads(call.body["messages"][-1]["content"])
        out.append(sorted(e["event_id"] for e in doc["events"]) if "events" in doc else [])
    return out


def age(db_url: str, *event_ids: int) -> None:
    """Their requests have gathered for max_wait_ms: their jobs lead."""
    rows(
        db_url,
        "UPDATE hookline.batch_items SET created_at = now() - interval '2 minutes' "
        "WHERE event_id = ANY(%s) RETURNING 1",
        list(event_ids),
    )


async def test_a_micro_batch_holds_one_tenants_events_and_counts_against_that_tenants_day(
    db_url: str, fake: FakeMessagesAPI, opened: list[Runtime]
) -> None:
    config = make_config(
        {**BATCH, "batch": {"max_events": 2, "max_wait_ms": 60000}},
        # tenant b may spend 1 token a day: no call of its can ever be reserved
        tenants={"*": {"tokens_per_day": 1_000_000}, "b": {"tokens_per_day": 1, "on_cap": "throttle"}},
    )
    rt = await runtime_for(db_url, fake, config)
    opened.append(rt)
    b = insert_event(db_url, "evt_mt_b", tenant="b")
    a1, a2 = insert_event(db_url, "evt_mt_a1", tenant="a"), insert_event(db_url, "evt_mt_a2", tenant="a")
    fake.set_default(reply(results(a1, a2), usage=USAGE))
    assert "gathering a micro-batch" in await held(rt, b)
    assert "gathering a micro-batch" in await held(rt, a1)  # b's request is not in a's batch
    assert await handle_event(rt, a2) == "succeeded"  # a's two events: a2 leads
    assert await handle_event(rt, a1) == "succeeded"
    assert events_asked(fake) == [[a1, a2]]
    assert "gathering a micro-batch" in await held(rt, b)  # still its own batch's only event

    age(db_url, b)
    assert await handle_event(rt, b) == "dead"  # judged against b's own tokens_per_day
    (error,) = rows(db_url, "SELECT last_error FROM hookline.events WHERE id = %s", b)
    assert "tenant 'b'" in error[0] and "tokens_per_day (1)" in error[0], error
    assert events_asked(fake) == [[a1, a2]]  # nothing sent for b
    days = rows(db_url, "SELECT tenant, tokens, reserved_tokens FROM hookline.budget_windows WHERE period = 'day'")
    assert days == [("a", 150, 0)]  # the whole combined call, on a's day
    calls = rows(
        db_url,
        "SELECT e.tenant, sum(c.input_tokens + c.output_tokens) FROM hookline.llm_calls c "
        "JOIN hookline.events e ON e.id = c.event_id GROUP BY 1",
    )
    assert calls == [("a", 150)]


async def test_a_leader_asks_for_as_many_events_as_fit_in_its_tenants_day_the_rest_gather_again(
    db_url: str, fake: FakeMessagesAPI, opened: list[Runtime]
) -> None:
    probe = make_config(BATCH)
    x1, x2, x3 = (insert_event(db_url, f"evt_mt_x{i}", tenant="a") for i in (1, 2, 3))
    two = worst_case(combined_request(probe.pipelines["triage"], [own_request(probe, db_url, e) for e in (x3, x1)]))
    three = worst_case(
        combined_request(probe.pipelines["triage"], [own_request(probe, db_url, e) for e in (x3, x1, x2)])
    )
    assert two < three
    config = make_config(BATCH, tenants={"a": {"tokens_per_day": two}})  # two events' worst case, not three
    rt = await runtime_for(db_url, fake, config)
    opened.append(rt)
    fake.set_default(reply(results(x1, x3), usage=USAGE))
    assert "gathering a micro-batch" in await held(rt, x1)
    assert "gathering a micro-batch" in await held(rt, x2)
    assert await handle_event(rt, x3) == "succeeded"  # three pending: x3 leads, asks for itself and x1
    assert events_asked(fake) == [[x1, x3]]
    assert rows(db_url, "SELECT event_id, status FROM hookline.batch_items ORDER BY event_id") == [
        (x1, "done"),
        (x2, "pending"),  # gathers again for a later batch: not failed with the leader's error
        (x3, "done"),
    ]
    assert await handle_event(rt, x1) == "succeeded"
    assert rows(db_url, "SELECT status, attempts, last_error FROM hookline.events WHERE id = %s", x2) == [
        ("throttled", 0, None)
    ]
    routes = rows(db_url, "SELECT event_id, route FROM hookline.llm_calls ORDER BY event_id")
    assert routes == [(x1, "micro_batch:2"), (x3, "micro_batch:2")]


async def test_a_leader_whose_batch_of_one_could_never_fit_asks_alone_with_its_own_request(
    db_url: str, fake: FakeMessagesAPI, opened: list[Runtime]
) -> None:
    probe = make_config(BATCH)
    y1, y2 = insert_event(db_url, "evt_mt_y1", tenant="a"), insert_event(db_url, "evt_mt_y2", tenant="a")
    own = worst_case(own_request(probe, db_url, y2))
    one = worst_case(combined_request(probe.pipelines["triage"], [own_request(probe, db_url, y2)]))
    assert own < one
    config = make_config(BATCH, tenants={"a": {"tokens_per_day": own}})  # y2's own call fits an empty day
    rt = await runtime_for(db_url, fake, config)
    opened.append(rt)
    fake.set_default(reply(GOOD, usage=USAGE))
    assert "gathering a micro-batch" in await held(rt, y1)
    assert "gathering a micro-batch" in await held(rt, y2)
    age(db_url, y1, y2)
    assert await handle_event(rt, y2) == "succeeded"  # leads; asks alone: not a dead letter
    assert events_asked(fake) == [[]]
    assert fake.calls_to("/v1/messages")[0].body["messages"] == own_request(config, db_url, y2)["messages"]
    assert rows(db_url, "SELECT event_id, status FROM hookline.batch_items ORDER BY event_id") == [
        (y1, "pending"),
        (y2, "done"),
    ]
    assert rows(db_url, "SELECT event_id, route, status FROM hookline.llm_calls") == [(y2, "primary", "succeeded")]
    assert rows(db_url, "SELECT tokens FROM hookline.budget_windows WHERE tenant = 'a' AND period = 'day'") == [(150,)]
    assert rows(db_url, "SELECT status, attempts FROM hookline.events WHERE id = %s", y1) == [("throttled", 0)]
