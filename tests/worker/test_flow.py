"""Flow control below HTTP: Message Batches requests under budgets and model rate limits, escalate for
micro-batched answers, budget reservations of killed workers, and infrastructure failures that throttle
holds do not count toward. ``handle_event`` (and the batch poller) driven directly against the real
Postgres and the fake Messages API; the last test runs the real procrastinate worker."""

from __future__ import annotations

import asyncio
import json
from decimal import Decimal
from typing import Any

import httpx
import psycopg
import pytest
from prometheus_client.parser import text_string_to_metric_families
from psycopg.rows import dict_row

from app.core.config import Config
from tests.fakes.messages_api import FakeMessagesAPI, error, reply, slow
from tests.harness import (
    Receiver,
    config_from,
    free_port,
    make_settings,
    refuse_rows,
    rows,
    wait_for_status,
    worker_task,
)
from worker import batches, limits
from worker.pricing import cost_usd
from worker.prompt import build_request
from worker.runtime import Runtime
from worker.tasks import RetryLater, handle_event

SCHEMA = {
    "type": "object",
    "properties": {"subject": {"type": "string"}, "urgent": {"type": "boolean"}},
    "required": ["subject", "urgent"],
    "additionalProperties": False,
}
GOOD = {"subject": "Hello", "urgent": False}
USAGE = {  # every call: 150 tokens, no cache
    "input_tokens": 100,
    "output_tokens": 50,
    "cache_creation_input_tokens": 0,
    "cache_read_input_tokens": 0,
    "cache_creation": {"ephemeral_5m_input_tokens": 0, "ephemeral_1h_input_tokens": 0},
}
MODEL = "claude-haiku-5-5"


def make_config(pipeline: dict[str, Any], **top: Any) -> Config:
    return config_from(
        {
            "sources": {"stripe": {"provider": "stripe", "secrets_env": ["HL_STRIPE_SECRET"]}},
            "pipelines": {
                "triage": {
                    "source": "stripe",
                    "events": ["invoice.*"],
                    "fields": ["type", "data.object.note"],
                    "model": MODEL,
                    "instructions": "Triage.",
                    "output_schema": SCHEMA,
                    "retry": {"max_attempts": 3, "backoff_seconds": 0.05, "max_backoff_seconds": 1, "jitter": False},
                    "actions": [{"type": "http", "url_env": "HL_CRM_URL"}],
                    **pipeline,
                }
            },
            **top,
        }
    )


pytestmark = pytest.mark.usefixtures("stripe_and_crm")


async def runtime_for(db_url: str, fake: FakeMessagesAPI, config: Config) -> Runtime:
    rt = Runtime.build(make_settings(db_url, anthropic_api_key="sk-test", anthropic_base_url=fake.base_url), config)
    await rt.open()
    return rt


def insert_event(db_url: str, delivery_id: str, tenant: str | None = None) -> int:
    payload = {"type": "invoice.payment_failed", "data": {"object": {"note": delivery_id}}}
    with psycopg.connect(db_url, autocommit=True) as conn:
        row = conn.execute(
            "INSERT INTO hookline.events (source, delivery_id, event_type, payload, tenant) "
            "VALUES ('stripe', %s, 'invoice.payment_failed', %s, %s) RETURNING id",
            (delivery_id, json.dumps(payload), tenant),
        ).fetchone()
    assert row is not None
    return int(row[0])


def event_row(db_url: str, event_id: int) -> Any:  # an EventRow, as start_event loads it
    with psycopg.connect(db_url) as conn, conn.cursor(row_factory=dict_row) as cur:
        found = cur.execute("SELECT * FROM hookline.events WHERE id = %s", (event_id,)).fetchone()
    assert found is not None
    return dict(found)


def reservation_tokens(config: Config, event: Any) -> int:
    """What the worker reserves for one call of this event (estimated input + max_tokens)."""
    request = build_request(config.pipelines["triage"], event)
    return limits.estimate_input_tokens(request) + int(request["max_tokens"])


async def held(rt: Runtime, event_id: int) -> str:
    """Run the event's job once; it must be held. Returns the event's detail."""
    with pytest.raises(RetryLater):
        await handle_event(rt, event_id)
    async with rt.db.pool.connection() as conn:
        cur = await conn.execute("SELECT status, detail FROM hookline.events WHERE id = %s", (event_id,))
        status, detail = await cur.fetchone() or (None, None)
    assert status == "throttled", detail
    return str(detail)


async def run_batch_of_three(
    rt: Runtime, db_url: str, prefix: str, fake: FakeMessagesAPI | None = None, usage: dict[str, int] | None = None
) -> list[int]:
    """Three events of a pipeline with ``batch = {max_events = 3}``: the first two gather (held), the
    third leads the combined call (answered for all three by ``fake``, unless the model is simulated),
    then the first two run their parts. Each must succeed; returns their ids."""
    ids = [insert_event(db_url, f"{prefix}_{i}") for i in range(3)]
    if fake is not None:
        fake.set_default(reply({"results": [{"event_id": e, "output": GOOD} for e in ids]}, usage=usage))
    await held(rt, ids[0])
    await held(rt, ids[1])
    assert await handle_event(rt, ids[2]) == "succeeded"  # the third pending: it leads
    for e in ids[:2]:
        assert await handle_event(rt, e) == "succeeded"
    return ids


async def poll_until_answered(rt: Runtime, count: int) -> None:
    answered = 0
    for _ in range(5):
        answered += (await batches.poll(rt))["results"]
        if answered >= count:
            return
    raise AssertionError(f"only {answered} of {count} Message Batches results read")


# ------------------------------------------------------------------------------------------- batch_api budgets
async def test_batch_api_requests_reserve_the_budget_and_settle_at_batch_price(
    db_url: str, fake: FakeMessagesAPI, opened: list[Runtime]
) -> None:
    fake.set_default(reply(GOOD, usage=USAGE))
    a0, a1, b0 = (
        insert_event(db_url, "evt_a0", "a"),
        insert_event(db_url, "evt_a1", "a"),
        insert_event(db_url, "evt_b0", "b"),
    )
    probe = make_config({"mode": "batch_api"})
    r = reservation_tokens(probe, event_row(db_url, a0))
    config = make_config(
        {"mode": "batch_api"}, tenants={"*": {"tokens_per_day": r + 100}, "b": {"tokens_per_day": 10**6}}
    )
    rt = await runtime_for(db_url, fake, config)
    opened.append(rt)

    assert "Message Batches" in await held(rt, a0)  # reserved, queued for the next batch
    assert "daily token or USD cap" in await held(rt, a1)  # a0's reservation leaves no room: throttled
    assert "Message Batches" in await held(rt, b0)  # another tenant goes on
    queued = rows(db_url, "SELECT event_id FROM hookline.batch_items ORDER BY event_id")
    assert queued == [(a0,), (b0,)]  # nothing queued for the throttled event
    ((reserved,),) = rows(
        db_url, "SELECT reserved_tokens FROM hookline.budget_windows WHERE tenant = 'a' AND period = 'day'"
    )
    assert reserved == r

    await poll_until_answered(rt, 2)
    assert await handle_event(rt, a0) == "succeeded"
    batch_price = cost_usd(MODEL, {**USAGE, "service_tier": "batch"})
    assert batch_price is not None and batch_price * 2 == cost_usd(MODEL, USAGE)  # half price
    ((cost,),) = rows(db_url, "SELECT cost_usd FROM hookline.llm_calls WHERE event_id = %s", a0)
    assert cost == batch_price
    window = rows(
        db_url,
        "SELECT tokens, usd, reserved_tokens, reserved_usd FROM hookline.budget_windows "
        "WHERE tenant = 'a' AND period = 'day'",
    )
    assert window == [(150, batch_price, 0, Decimal(0))]  # spent at batch price, reservation settled
    assert rows(db_url, "SELECT count(*) FROM hookline.budget_reservations") == [(0,)]
    assert "daily token or USD cap" in await held(rt, a1)  # 150 spent + another reservation > cap
    assert rows(db_url, "SELECT max(infra_failures) FROM hookline.events") == [(0,)]  # holds are no failures


async def test_batch_api_requests_take_the_shared_model_rate_limit(
    db_url: str, fake: FakeMessagesAPI, opened: list[Runtime]
) -> None:
    config = make_config({"mode": "batch_api"}, models={MODEL: {"requests_per_minute": 1}})
    rt = await runtime_for(db_url, fake, config)
    opened.append(rt)
    first, second = insert_event(db_url, "evt_r0"), insert_event(db_url, "evt_r1")
    assert "Message Batches" in await held(rt, first)
    assert "shared rate limit" in await held(rt, second)
    assert rows(db_url, "SELECT event_id FROM hookline.batch_items") == [(first,)]


# ------------------------------------------------------------------------------------------- escalate, micro-batched
async def test_escalate_re_asks_the_stronger_model_for_the_batched_parts_that_say_so(
    db_url: str, fake: FakeMessagesAPI, receiver: Receiver, opened: list[Runtime]
) -> None:
    config = make_config(
        {
            "batch": {"max_events": 2, "max_wait_ms": 60000},
            "escalate": {"model": "claude-sonnet-5-5", "when": "urgent"},
        }
    )
    rt = await runtime_for(db_url, fake, config)
    opened.append(rt)
    calm, urgent = insert_event(db_url, "evt_calm"), insert_event(db_url, "evt_urgent")
    parts = [
        {"event_id": calm, "output": {"subject": "fine", "urgent": False}},
        {"event_id": urgent, "output": {"subject": "Chargeback!", "urgent": True}},
    ]
    fake.enqueue_for_model(MODEL, reply({"results": parts}, usage={"input_tokens": 400, "output_tokens": 80}))
    fake.enqueue_for_model("claude-sonnet-5-5", reply({"subject": "Chargeback: act today", "urgent": True}))

    assert "gathering a micro-batch" in await held(rt, calm)
    assert await handle_event(rt, urgent) == "succeeded"  # leads the batch, then escalates its own part
    assert await handle_event(rt, calm) == "succeeded"  # its part is not urgent: no second call

    got = rows(
        db_url,
        "SELECT event_id, model, route, status, requested_model, output->>'subject' FROM hookline.llm_calls",
    )
    assert sorted(got) == sorted(
        [
            (calm, MODEL, "micro_batch:2", "succeeded", MODEL, "fine"),
            (urgent, MODEL, "micro_batch:2", "superseded", MODEL, "Chargeback!"),
            (urgent, "claude-sonnet-5-5", "escalate:urgent", "succeeded", MODEL, "Chargeback: act today"),
        ]
    )
    calls = fake.calls_to("/v1/messages")
    assert [c.body["model"] for c in calls] == [MODEL, "claude-sonnet-5-5"]
    asked = calls[1].body["messages"][-1]["content"]
    assert "evt_urgent" in asked and "evt_calm" not in asked  # its own per-event request
    posted = {r.json()["event_id"]: r.json()["output"]["subject"] for r in receiver.received}
    assert posted == {calm: "fine", urgent: "Chargeback: act today"}  # the action ran on the escalated answer


# ------------------------------------------------------------------------------------------- escalate, Messages API
SONNET = "claude-sonnet-5-5"
ESCALATE = {"escalate": {"model": SONNET, "when": "urgent"}}


def calls_of(db_url: str, event_id: int) -> list[tuple[Any, ...]]:
    return rows(
        db_url,
        "SELECT model, route, status, requested_model, output->>'subject' FROM hookline.llm_calls "
        "WHERE event_id = %s ORDER BY id",
        event_id,
    )


def base_requests(fake: FakeMessagesAPI, delivery_id: str) -> int:
    return sum(1 for c in fake.calls_to("/v1/messages") if c.body["model"] == MODEL and delivery_id in str(c.body))


async def test_a_retry_after_the_escalated_call_failed_reuses_the_first_answer(
    db_url: str, fake: FakeMessagesAPI, receiver: Receiver, opened: list[Runtime]
) -> None:
    rt = await runtime_for(db_url, fake, make_config(ESCALATE))
    opened.append(rt)
    fake.set_model_default(MODEL, reply({"subject": "Chargeback!", "urgent": True}, usage=USAGE))
    fake.enqueue_for_model(SONNET, error(500, "api_error"))
    fake.set_model_default(SONNET, reply({"subject": "Chargeback: act today", "urgent": True}, usage=USAGE))
    eid = insert_event(db_url, "evt_esc_500")

    with pytest.raises(RetryLater):
        await handle_event(rt, eid)
    # the first answer stays the stored one until the escalated answer replaces it
    assert calls_of(db_url, eid) == [
        (MODEL, "primary", "succeeded", MODEL, "Chargeback!"),
        (SONNET, "escalate:urgent", "failed", MODEL, None),
    ]
    assert await handle_event(rt, eid) == "succeeded"
    assert base_requests(fake, "evt_esc_500") == 1  # the retry paid for the escalated call only
    assert calls_of(db_url, eid) == [
        (MODEL, "primary", "superseded", MODEL, "Chargeback!"),
        (SONNET, "escalate:urgent", "failed", MODEL, None),
        (SONNET, "escalate:urgent", "succeeded", MODEL, "Chargeback: act today"),
    ]
    assert [r.json()["output"]["subject"] for r in receiver.received] == ["Chargeback: act today"]
    assert await handle_event(rt, eid) == "noop"
    assert len(fake.calls_to("/v1/messages")) == 3


async def test_an_escalated_answer_that_needed_a_repair_is_not_escalated_again_on_a_retry(
    db_url: str, fake: FakeMessagesAPI, receiver: Receiver, opened: list[Runtime]
) -> None:
    """The escalated answer came from a repair turn: its route keeps the escalate: prefix, so the retry
    (the action failed once) reuses it instead of asking the escalation model once more."""
    rt = await runtime_for(db_url, fake, make_config(ESCALATE))
    opened.append(rt)
    fake.set_model_default(MODEL, reply({"subject": "Chargeback!", "urgent": True}, usage=USAGE))
    fake.enqueue_for_model(SONNET, reply({"subject": "no urgent field"}, usage=USAGE))  # invalid: a repair turn
    fake.set_model_default(SONNET, reply({"subject": "Chargeback: act today", "urgent": True}, usage=USAGE))
    receiver.statuses = [503]  # the action fails once: the retry reuses the stored answer
    eid = insert_event(db_url, "evt_esc_repair")
    with pytest.raises(RetryLater):
        await handle_event(rt, eid)
    assert await handle_event(rt, eid) == "succeeded"
    assert [c.body["model"] for c in fake.calls_to("/v1/messages")] == [MODEL, SONNET, SONNET]
    assert [(model, route, status) for model, route, status, *_ in calls_of(db_url, eid)] == [
        (MODEL, "primary", "superseded"),
        (SONNET, "escalate:urgent", "invalid_output"),
        (SONNET, "escalate:urgent+repair", "succeeded"),
    ]


async def test_a_replay_recompute_held_at_its_escalation_asks_the_first_model_once(
    db_url: str, fake: FakeMessagesAPI, opened: list[Runtime]
) -> None:
    """Recompute supersedes the old answers, then the new first answer is stored and its escalation is
    held (the escalation model's limit): the runs after each hold reuse that new answer (NAME:answer in
    replay_applied) instead of superseding it and paying the first model again."""
    rt = await runtime_for(db_url, fake, make_config(ESCALATE, models={SONNET: {"requests_per_minute": 1}}))
    opened.append(rt)
    fake.set_model_default(MODEL, reply({"subject": "Chargeback!", "urgent": True}, usage=USAGE))
    fake.set_model_default(SONNET, reply({"subject": "Chargeback: act today", "urgent": True}, usage=USAGE))
    eid = insert_event(db_url, "evt_replay_esc_hold")
    assert await handle_event(rt, eid) == "succeeded"  # takes sonnet's one request of this minute
    rows(db_url, "SELECT hookline.replay(%s::bigint, true, false)", eid)
    for _ in range(3):
        with pytest.raises(RetryLater):
            await handle_event(rt, eid, recompute=True)
    assert [c.body["model"] for c in fake.calls_to("/v1/messages")] == [MODEL, SONNET, MODEL]
    assert rows(db_url, "SELECT replay_applied FROM hookline.events WHERE id = %s", eid) == [(["triage:answer"],)]
    rows(db_url, "UPDATE hookline.model_buckets SET requests = 1, blocked_until = NULL RETURNING 1")
    assert await handle_event(rt, eid, recompute=True) == "succeeded"  # a minute later: escalated, once
    assert [c.body["model"] for c in fake.calls_to("/v1/messages")] == [MODEL, SONNET, MODEL, SONNET]


async def test_an_event_held_for_the_escalation_models_rate_limit_pays_the_first_model_once(
    db_url: str, fake: FakeMessagesAPI, receiver: Receiver, opened: list[Runtime]
) -> None:
    rt = await runtime_for(db_url, fake, make_config(ESCALATE, models={SONNET: {"requests_per_minute": 1}}))
    opened.append(rt)
    fake.set_model_default(MODEL, reply({"subject": "Chargeback!", "urgent": True}, usage=USAGE))
    fake.set_model_default(SONNET, reply({"subject": "Chargeback: act today", "urgent": True}, usage=USAGE))
    first, waiting = insert_event(db_url, "evt_esc_a"), insert_event(db_url, "evt_esc_b")
    assert await handle_event(rt, first) == "succeeded"  # takes the escalation model's request of the minute

    for _ in range(3):  # holds are not attempts: the job runs again and again while the bucket is empty
        assert "shared rate limit" in await held(rt, waiting)
    assert base_requests(fake, "evt_esc_b") == 1
    assert calls_of(db_url, waiting) == [(MODEL, "primary", "succeeded", MODEL, "Chargeback!")]  # holds: no rows

    rows(
        db_url,
        "UPDATE hookline.model_buckets SET requests = 1, refilled_at = now() WHERE model = %s RETURNING 1",
        SONNET,
    )
    assert await handle_event(rt, waiting) == "succeeded"
    assert base_requests(fake, "evt_esc_b") == 1
    assert calls_of(db_url, waiting) == [
        (MODEL, "primary", "superseded", MODEL, "Chargeback!"),
        (SONNET, "escalate:urgent", "succeeded", MODEL, "Chargeback: act today"),
    ]
    posted = {r.json()["event_id"]: r.json()["output"]["subject"] for r in receiver.received}
    assert posted == {first: "Chargeback: act today", waiting: "Chargeback: act today"}


# ------------------------------------------------------------------------------------------- holds
async def test_a_hold_before_any_call_stores_no_model_call(
    db_url: str, fake: FakeMessagesAPI, opened: list[Runtime]
) -> None:
    fake.set_default(reply(GOOD, usage=USAGE))
    rt = await runtime_for(db_url, fake, make_config({}, models={MODEL: {"requests_per_minute": 1}}))
    opened.append(rt)
    sent, waiting = insert_event(db_url, "evt_h0"), insert_event(db_url, "evt_h1")
    assert await handle_event(rt, sent) == "succeeded"
    for _ in range(2):
        assert "shared rate limit" in await held(rt, waiting)
    assert rows(db_url, "SELECT event_id, status FROM hookline.llm_calls") == [(sent, "succeeded")]
    assert rows(db_url, "SELECT sum(calls) FROM hookline.costs_daily") == [(1,)]  # only the call that was sent
    assert len(fake.calls_to("/v1/messages")) == 1


# ------------------------------------------------------------------------------------------- pipeline timeout
async def test_a_pipeline_timeout_during_the_model_call_settles_it_records_it_and_tells_the_breaker(
    db_url: str, fake: FakeMessagesAPI, opened: list[Runtime]
) -> None:
    otpm = 3000  # the call takes max_tokens (1024) of the bucket's output tokens until it is settled
    config = make_config(
        {"timeout_seconds": 1, "actions": []},
        tenants={"*": {"tokens_per_day": 100_000}},
        models={
            MODEL: {
                "output_tokens_per_minute": otpm,
                "breaker": {"failures": 2, "window_seconds": 60, "open_seconds": 30},
            }
        },
    )
    rt = await runtime_for(db_url, fake, config)
    opened.append(rt)
    fake.enqueue(slow(3, then=reply(GOOD, usage=USAGE)))
    eid = insert_event(db_url, "evt_slow", "t")

    with pytest.raises(RetryLater):
        await handle_event(rt, eid)
    timed_out = "timed out (pipeline timeout_seconds)"
    assert rows(db_url, "SELECT status, last_error FROM hookline.events WHERE id = %s", eid) == [
        ("retrying", f"pipeline triage: {timed_out}")
    ]
    assert rows(db_url, "SELECT model, status, error FROM hookline.llm_calls") == [(MODEL, "failed", timed_out)]
    window = rows(db_url, "SELECT tokens, reserved_tokens FROM hookline.budget_windows WHERE period = 'day'")
    assert window == [(0, 0)]  # the reservation was given back, not held until its lease ends
    assert rows(db_url, "SELECT count(*) FROM hookline.budget_reservations") == [(0,)]
    assert rows(db_url, "SELECT output_tokens FROM hookline.model_buckets WHERE model = %s", MODEL) == [(otpm,)]
    assert rows(db_url, "SELECT state, failures FROM hookline.breakers WHERE model = %s", MODEL) == [("closed", 1)]


# ------------------------------------------------------------------------------------------- a killed worker
async def test_a_killed_workers_reservation_frees_the_budget_when_its_lease_ends(
    db_url: str, fake: FakeMessagesAPI, opened: list[Runtime]
) -> None:
    fake.set_default(reply(GOOD, usage=USAGE))
    victim, waiting = insert_event(db_url, "evt_k0", "k"), insert_event(db_url, "evt_k1", "k")
    probe = make_config({})
    r = reservation_tokens(probe, event_row(db_url, victim))
    config = make_config({}, tenants={"*": {"tokens_per_day": r + 100}})
    rt = await runtime_for(db_url, fake, config)
    opened.append(rt)
    # what the Gate does before sending victim's call; then its worker is SIGKILLed: no settle ever
    request = build_request(config.pipelines["triage"], event_row(db_url, victim))
    await limits.reserve(rt, event_row(db_url, victim), request, lease_seconds=60)

    assert "daily token or USD cap" in await held(rt, waiting)  # the reservation counts within its lease
    rows(db_url, "UPDATE hookline.budget_reservations SET expires_at = now() - interval '1 second' RETURNING 1")
    assert await handle_event(rt, waiting) == "succeeded"  # the lease ended: reclaimed, not eaten forever
    window = rows(
        db_url, "SELECT tokens, reserved_tokens FROM hookline.budget_windows WHERE tenant = 'k' AND period = 'day'"
    )
    assert window == [(150, 0)]
    assert rows(db_url, "SELECT count(*) FROM hookline.budget_reservations") == [(0,)]


async def test_a_call_larger_than_the_whole_day_cap_is_a_dead_letter_not_held_every_day(
    db_url: str, fake: FakeMessagesAPI, opened: list[Runtime]
) -> None:
    """Held, it would wait for a day with room that never comes; it says why, and nothing is sent."""
    fake.set_default(reply(GOOD, usage=USAGE))
    eid = insert_event(db_url, "evt_never", "tiny")
    r = reservation_tokens(make_config({}), event_row(db_url, eid))
    rt = await runtime_for(db_url, fake, make_config({}, tenants={"tiny": {"tokens_per_day": r - 1}}))
    opened.append(rt)
    assert await handle_event(rt, eid) == "dead"
    (error,) = rows(db_url, "SELECT last_error FROM hookline.events WHERE id = %s", eid)
    assert f"is more than the whole tokens_per_day ({r - 1})" in error[0], error
    assert fake.calls_to("/v1/messages") == []
    assert rows(db_url, "SELECT count(*) FROM hookline.budget_reservations") == [(0,)]


# ------------------------------------------------------------------------------------------- loop guard
def insert_keyed_event(db_url: str, delivery_id: str, ordering_key: str) -> int:
    eid = insert_event(db_url, delivery_id)
    rows(db_url, "UPDATE hookline.events SET ordering_key = %s WHERE id = %s RETURNING id", ordering_key, eid)
    return eid


@pytest.mark.parametrize("by", ["tenant", "ordering key"])
async def test_the_loop_guard_admits_no_more_than_max_events_started_at_once(
    db_url: str, fake: FakeMessagesAPI, opened: list[Runtime], by: str
) -> None:
    """Ten events of one tenant (or ordering key) started at the same time: each counts the events
    admitted before it and is admitted in the same function, so two run and the others are held."""
    rt = await runtime_for(db_url, fake, make_config({"loop_guard": {"max_events": 2, "window_seconds": 600}}))
    opened.append(rt)
    fake.set_default(reply(GOOD, usage=USAGE))
    if by == "tenant":
        ids = [insert_event(db_url, f"evt_loop{i}", "acme") for i in range(10)]
    else:
        ids = [insert_keyed_event(db_url, f"evt_loop{i}", "cus_loop") for i in range(10)]

    async def run(event_id: int) -> str:
        try:
            return await handle_event(rt, event_id)
        except RetryLater:
            return "held"

    outcomes = await asyncio.gather(*(run(e) for e in ids))
    assert sorted(outcomes) == ["held"] * 8 + ["succeeded"] * 2
    assert rows(db_url, "SELECT count(*) FROM hookline.events WHERE admitted_at IS NOT NULL") == [(2,)]
    assert len(fake.calls_to("/v1/messages")) == 2
    held_detail = rows(db_url, "SELECT detail FROM hookline.events WHERE status = 'throttled'")
    assert len(held_detail) == 8 and all("had 2 events in 600s (max_events = 2)" in d for (d,) in held_detail)


# ------------------------------------------------------------------------------------------- replays held at a limit
SONNET = "claude-sonnet-5-5"


def two_pipelines() -> Config:
    """``a`` (haiku) then ``b`` (sonnet, one request a minute), each posting its answer to the receiver."""

    def pipe(model: str) -> dict[str, Any]:
        return {
            "source": "stripe",
            "events": ["invoice.*"],
            "model": model,
            "instructions": "Triage.",
            "output_schema": SCHEMA,
            "actions": [{"type": "http", "url_env": "HL_CRM_URL"}],
        }

    return config_from(
        {
            "sources": {"stripe": {"provider": "stripe", "secrets_env": ["HL_STRIPE_SECRET"]}},
            "pipelines": {"a": pipe(MODEL), "b": pipe(SONNET)},
            "models": {SONNET: {"requests_per_minute": 1}},
        }
    )


async def test_a_replay_held_at_a_later_pipeline_recomputes_and_forces_each_pipeline_once(
    db_url: str, fake: FakeMessagesAPI, receiver: Receiver, opened: list[Runtime]
) -> None:
    """replay(recompute, force) while ``b``'s model is at its rate limit: every run is held at ``b``, and
    a hold gives its attempt back. The runs after the first must reuse ``a``'s new answer and not post
    its action again; once ``b`` may call, it is recomputed and forced once too."""
    rt = await runtime_for(db_url, fake, two_pipelines())
    opened.append(rt)
    fake.set_default(reply(GOOD, usage=USAGE))
    eid = insert_event(db_url, "evt_replay_held")
    assert await handle_event(rt, eid) == "succeeded"  # b took sonnet's request for this minute
    rows(db_url, "SELECT hookline.replay(%s::bigint, true, true)", eid)
    for _ in range(3):
        with pytest.raises(RetryLater):
            await handle_event(rt, eid, recompute=True, force_actions=True)
    assert models_called(fake) == [MODEL, SONNET, MODEL]  # a recomputed once, not once per hold
    assert pipelines_posted(receiver) == ["a", "b", "a"]  # a's action forced once
    assert rows(db_url, "SELECT status, attempts, replay_applied FROM hookline.events WHERE id = %s", eid) == [
        ("throttled", 0, ["a", "b:answer"])  # b's old answer superseded once; its forced actions still to come
    ]
    rows(db_url, "UPDATE hookline.model_buckets SET requests = 1 WHERE model = %s RETURNING model", SONNET)
    assert await handle_event(rt, eid, recompute=True, force_actions=True) == "succeeded"  # a minute later
    assert models_called(fake) == [MODEL, SONNET, MODEL, SONNET]
    assert pipelines_posted(receiver) == ["a", "b", "a", "b"]
    calls = "SELECT pipeline, status, count(*) FROM hookline.llm_calls WHERE event_id = %s GROUP BY 1, 2 ORDER BY 1, 2"
    assert rows(db_url, calls, eid) == [
        ("a", "succeeded", 1),
        ("a", "superseded", 1),
        # no row for the holds: the bucket refused the call before it was sent
        ("b", "succeeded", 1),
        ("b", "superseded", 1),
    ]
    rows(db_url, "SELECT hookline.replay(%s::bigint, true, true)", eid)  # a new replay starts its own list
    assert rows(db_url, "SELECT replay_applied FROM hookline.events WHERE id = %s", eid) == [([],)]


def models_called(fake: FakeMessagesAPI) -> list[str]:
    return [str(r.body["model"]) for r in fake.calls_to("/v1/messages")]


def pipelines_posted(receiver: Receiver) -> list[str]:
    return [str(json.loads(r.body)["pipeline"]) for r in receiver.received]


# ------------------------------------------------------------------------------------------- infrastructure failures
def fail_first_claim(conn: psycopg.Connection, times: int = 1) -> None:
    """The next ``times`` claims of any event fail inside Postgres (a real error raised by the database).
    A new event's first claim is the fetch's (which the worker sends again without the claim); its next
    one, the task's own, is an infrastructure failure of the event. A replay's job is never claimed
    by the fetch."""
    conn.execute("CREATE SEQUENCE test_claim_failures")
    conn.execute(f"""
        CREATE FUNCTION test_fail_first_claim() RETURNS trigger LANGUAGE plpgsql AS $$
        BEGIN
            IF NEW.status = 'processing' AND OLD.status <> 'processing' THEN
                IF nextval('test_claim_failures') <= {int(times)} THEN
                    RAISE EXCEPTION 'injected: the database failed while claiming the event';
                END IF;
            END IF;
            RETURN NEW;
        END $$""")
    conn.execute(
        "CREATE TRIGGER test_fail_first_claim BEFORE UPDATE ON hookline.events "
        "FOR EACH ROW EXECUTE FUNCTION test_fail_first_claim()"
    )


async def run_worker_until_done(db_url: str, fake: FakeMessagesAPI, event_id: int) -> dict[str, Any]:
    settings = make_settings(db_url, anthropic_api_key="sk-test", anthropic_base_url=fake.base_url)
    async with worker_task(settings, make_config({})):
        return await wait_for_status(db_url, event_id, timeout=30)


async def test_throttle_reschedules_do_not_count_toward_giving_up_on_infrastructure_errors(
    db_url: str, fake: FakeMessagesAPI
) -> None:
    """A long-throttled event's job has many procrastinate attempts; one database error while claiming
    it must be retried, not declared dead (the real worker, a real error raised by Postgres)."""
    eid = insert_event(db_url, "evt_infra")
    with psycopg.connect(db_url, autocommit=True) as conn:
        # procrastinate counted 60 runs of this job: the reschedules of a long throttle
        conn.execute("UPDATE procrastinate_jobs SET attempts = 60")
        fail_first_claim(conn, times=2)
    done = await run_worker_until_done(db_url, fake, eid)
    assert done["status"] == "succeeded", done
    assert rows(db_url, "SELECT infra_failures FROM hookline.events WHERE id = %s", eid) == [(1,)]
    assert len(fake.calls_to("/v1/messages")) == 1


async def test_a_job_whose_claim_failed_is_counted_in_worker_jobs_total(db_url: str, fake: FakeMessagesAPI) -> None:
    """The task's own claim (start_events) fails once inside Postgres: that run of the job is counted as
    ``retrying`` in hookline_worker_jobs_total, as a run whose event failed is, and the next one as
    ``succeeded``. It used to count nothing."""
    eid = insert_event(db_url, "evt_claim_metric")
    with psycopg.connect(db_url, autocommit=True) as conn:
        fail_first_claim(conn, times=2)  # the fetch's claim, then the task's own
    port = free_port()
    settings = make_settings(
        db_url, anthropic_api_key="sk-test", anthropic_base_url=fake.base_url, worker_metrics_port=port
    )
    async with worker_task(settings, make_config({})), httpx.AsyncClient() as client:
        assert (await wait_for_status(db_url, eid, timeout=30))["status"] == "succeeded"
        counted: dict[str, float] = {}
        for _ in range(100):  # the counter is written just after the event's status
            text = (await client.get(f"http://127.0.0.1:{port}/metrics")).text
            counted = {
                s.labels["status"]: s.value
                for family in text_string_to_metric_families(text)
                for s in family.samples
                if s.name == "hookline_worker_jobs_total"
            }
            if counted.get("succeeded"):
                break
            await asyncio.sleep(0.05)
    assert counted == {"retrying": 1, "succeeded": 1}
    assert rows(db_url, "SELECT infra_failures FROM hookline.events WHERE id = %s", eid) == [(1,)]


async def test_a_give_up_whose_own_write_fails_runs_the_job_again(db_url: str, fake: FakeMessagesAPI) -> None:
    """The 50th infrastructure failure gives the event up, but that write (the event made dead) fails too:
    the job runs again instead of ending "dead" with the event still unfinished and no job left to run
    it. Here the next run's claim works, and the event is processed."""
    eid = insert_event(db_url, "evt_give_up_fails")
    with psycopg.connect(db_url, autocommit=True) as conn:
        conn.execute("UPDATE hookline.events SET infra_failures = 49 WHERE id = %s", (eid,))
        fail_first_claim(conn, times=2)  # the fetch's claim, then the task's own: the 50th failure
    refuse_rows(db_url, "test_dead_refusals", "hookline.events", event="UPDATE", when="NEW.status = 'dead'")
    done = await run_worker_until_done(db_url, fake, eid)
    assert done["status"] == "succeeded", done
    assert rows(db_url, "SELECT infra_failures FROM hookline.events WHERE id = %s", eid) == [(50,)]
    assert rows(db_url, "SELECT nextval('test_dead_refusals')") == [(2,)]  # the give-up was tried once


async def test_an_answer_whose_store_meets_a_deadlock_is_stored_on_a_later_try_never_paid_twice(
    db_url: str, fake: FakeMessagesAPI
) -> None:
    """Storing the paid answer fails twice as a deadlock does (SQLSTATE 40P01, raised by a trigger of the
    real table): the same write is tried again and lands; the model is asked once. Such an error used to
    lose the answer, and every retry of the event paid again."""
    fake.set_default(reply(GOOD, usage=USAGE))
    eid = insert_event(db_url, "evt_store_deadlock")
    refuse_rows(db_url, "test_store_deadlocks", "hookline.llm_calls", times=2, errcode="deadlock_detected")
    done = await run_worker_until_done(db_url, fake, eid)
    assert done["status"] == "succeeded", done
    assert len(fake.calls_to("/v1/messages")) == 1
    assert rows(db_url, "SELECT status FROM hookline.llm_calls WHERE event_id = %s", eid) == [("succeeded",)]
    assert rows(db_url, "SELECT nextval('test_store_deadlocks')") == [(4,)]  # two refused, the third landed


async def test_a_replay_starts_the_count_of_infrastructure_failures_again(db_url: str, fake: FakeMessagesAPI) -> None:
    """An event declared dead after 50 infrastructure failures (a long outage), replayed once the outage
    is over, gets its own tries again: one more database error while claiming it is retried, not fatal."""
    eid = insert_event(db_url, "evt_infra_replay")
    with psycopg.connect(db_url, autocommit=True) as conn:  # how the outage left it
        conn.execute("UPDATE procrastinate_jobs SET status = 'failed'")
        conn.execute(
            "UPDATE hookline.events SET status = 'dead', finished_at = now(), infra_failures = 50 WHERE id = %s", (eid,)
        )
        fail_first_claim(conn)
        conn.execute("SELECT hookline.replay(%s::bigint)", (eid,))
    assert rows(db_url, "SELECT status, infra_failures FROM hookline.events WHERE id = %s", eid) == [("queued", 0)]
    done = await run_worker_until_done(db_url, fake, eid)
    assert done["status"] == "succeeded", done
    assert rows(db_url, "SELECT infra_failures FROM hookline.events WHERE id = %s", eid) == [(1,)]
