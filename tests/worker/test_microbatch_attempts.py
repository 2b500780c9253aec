"""One failed micro-batch call costs its events one attempt each: the leader's next try asks again
(leading or joining a new batch) instead of raising the old error without a call, and the other events
of the batch fail once with it. ``handle_event`` driven directly against the real Postgres and the fake
Messages API."""

from __future__ import annotations

import pytest

from tests.fakes.messages_api import FakeMessagesAPI, error, overloaded, reply
from tests.harness import rows
from tests.worker.test_flow import GOOD, MODEL, held, insert_event, make_config, runtime_for
from worker.runtime import Runtime
from worker.tasks import RetryLater, handle_event

FALLBACK = "claude-haiku-4-5"


pytestmark = pytest.mark.usefixtures("stripe_and_crm")


def results(*event_ids: int) -> dict[str, list[dict[str, object]]]:
    return {"results": [{"event_id": e, "output": GOOD} for e in event_ids]}


def attempts(db_url: str, event_id: int) -> int:
    ((n,),) = rows(db_url, "SELECT attempts FROM hookline.events WHERE id = %s", event_id)
    return int(n)


async def failing(rt: Runtime, event_id: int) -> str:
    """Run the event's job once; it must fail and be retried. Returns the error it failed with."""
    with pytest.raises(RetryLater) as failed:
        await handle_event(rt, event_id)
    return str(failed.value)


async def test_a_failed_combined_call_costs_the_leader_one_attempt_and_its_retry_asks_again(
    db_url: str, fake: FakeMessagesAPI, opened: list[Runtime]
) -> None:
    rt = await runtime_for(db_url, fake, make_config({"batch": {"max_events": 2, "max_wait_ms": 60000}}))
    opened.append(rt)
    a, b = insert_event(db_url, "evt_ma_a"), insert_event(db_url, "evt_ma_b")
    assert "gathering a micro-batch" in await held(rt, a)
    fake.enqueue(error(500, "api_error"))
    assert "500" in await failing(rt, b)  # two pending: b leads; the combined call fails
    assert len(fake.calls_to("/v1/messages")) == 1
    assert (attempts(db_url, a), attempts(db_url, b)) == (0, 1)
    # the failed round trip is kept, as a pipeline's own failed calls are (spend, error rates, metrics)
    failed_calls = "SELECT event_id, route, status FROM hookline.llm_calls WHERE status <> 'succeeded'"
    assert rows(db_url, failed_calls) == [(b, "micro_batch:2", "failed")]

    fake.set_default(reply(results(a, b)))
    # b's next try joins a new batch (not the old error again, with no call): it gathers
    assert "gathering a micro-batch" in await held(rt, b)
    assert attempts(db_url, b) == 1
    assert "500" in await failing(rt, a)  # a was in the failed call: it fails once with it
    assert attempts(db_url, a) == 1
    assert await handle_event(rt, a) == "succeeded"  # a's retry: two pending, it leads
    assert await handle_event(rt, b) == "succeeded"
    assert (attempts(db_url, a), attempts(db_url, b)) == (2, 2)  # one failed try each, then the answer
    assert len(fake.calls_to("/v1/messages")) == 2
    answered = rows(db_url, "SELECT event_id, route FROM hookline.llm_calls WHERE status = 'succeeded' ORDER BY 1")
    assert answered == [(a, "micro_batch:2"), (b, "micro_batch:2")]
    assert rows(db_url, failed_calls) == [(b, "micro_batch:2", "failed")]


async def test_a_combined_call_the_fallback_answered_keeps_its_failed_round_trip(
    db_url: str, fake: FakeMessagesAPI, opened: list[Runtime]
) -> None:
    """The primary model is overloaded (529) and the fallback answers the combined call: the failed round
    trip is stored under the leader, as a pipeline's own is, not dropped with the answer's success."""
    config = make_config({"batch": {"max_events": 2, "max_wait_ms": 60000}}, models={MODEL: {"fallback": FALLBACK}})
    rt = await runtime_for(db_url, fake, config)
    opened.append(rt)
    a, b = insert_event(db_url, "evt_mf_a"), insert_event(db_url, "evt_mf_b")
    fake.set_model_default(MODEL, overloaded())
    fake.set_model_default(FALLBACK, reply(results(a, b)))
    assert "gathering a micro-batch" in await held(rt, a)
    assert await handle_event(rt, b) == "succeeded"  # two pending: b leads
    assert await handle_event(rt, a) == "succeeded"
    calls = rows(db_url, "SELECT event_id, model, status, route FROM hookline.llm_calls ORDER BY id")
    assert [c[:3] for c in calls] == [(b, MODEL, "failed"), (b, FALLBACK, "succeeded"), (a, FALLBACK, "succeeded")]
    assert calls[0][3] == "micro_batch:2" and {c[3] for c in calls[1:]} == {"micro_batch:2+fallback:overloaded"}


async def test_a_combined_call_held_after_a_failed_round_trip_keeps_that_round_trip(
    db_url: str, fake: FakeMessagesAPI, opened: list[Runtime]
) -> None:
    """The primary model answers 529 and its fallback's breaker is open: the batch is held (its events
    gather again), and the 529 round trip that was sent is stored under the leader, as a pipeline's is."""
    breaker = {"failures": 1, "window_seconds": 60, "open_seconds": 600}
    models = {MODEL: {"fallback": FALLBACK}, FALLBACK: {"breaker": breaker}}
    rt = await runtime_for(db_url, fake, make_config({"batch": {"max_events": 2, "max_wait_ms": 60000}}, models=models))
    opened.append(rt)
    rows(
        db_url,
        "INSERT INTO hookline.breakers (model, state, opened_at, open_until) "
        "VALUES (%s, 'open', now(), now() + interval '10 minutes') RETURNING model",
        FALLBACK,
    )
    a, b = insert_event(db_url, "evt_mh_a"), insert_event(db_url, "evt_mh_b")
    fake.set_model_default(MODEL, overloaded())
    assert "gathering a micro-batch" in await held(rt, a)
    assert "circuit breaker" in await held(rt, b)  # two pending: b leads; the 529, then the open breaker
    assert [c.body["model"] for c in fake.calls_to("/v1/messages")] == [MODEL]
    calls = rows(db_url, "SELECT event_id, model, status, route FROM hookline.llm_calls ORDER BY id")
    assert calls == [(b, MODEL, "failed", "micro_batch:2")]
    assert rows(db_url, "SELECT status FROM hookline.batch_items ORDER BY id") == [("pending",), ("pending",)]
