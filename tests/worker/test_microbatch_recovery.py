"""Micro-batches whose leader is interrupted mid-call recover on their own: a leader cancelled during
the combined call (worker shutdown) puts its requests back at once; a killed one leaves them
``submitting``, and once that is older than the reclaim age the events' own jobs take them back (no
new event of the pipeline needed). ``handle_event`` driven directly against the real Postgres and the
fake Messages API."""

from __future__ import annotations

import asyncio

import pytest

from tests.fakes.messages_api import FakeMessagesAPI, hang, reply
from tests.harness import rows
from tests.worker.test_flow import GOOD, held, insert_event, make_config, runtime_for
from worker import limits
from worker.microbatch import micro_answer
from worker.prompt import build_request
from worker.runtime import Runtime
from worker.tasks import handle_event

pytestmark = pytest.mark.usefixtures("stripe_and_crm")


def results(*event_ids: int) -> dict[str, list[dict[str, object]]]:
    return {"results": [{"event_id": e, "output": GOOD} for e in event_ids]}


async def test_a_leader_cancelled_mid_call_puts_its_batch_back(
    db_url: str, fake: FakeMessagesAPI, opened: list[Runtime]
) -> None:
    rt = await runtime_for(db_url, fake, make_config({"batch": {"max_events": 2, "max_wait_ms": 60000}}))
    opened.append(rt)
    a, b = insert_event(db_url, "evt_mb_a"), insert_event(db_url, "evt_mb_b")
    assert "gathering a micro-batch" in await held(rt, a)
    fake.enqueue(hang())
    lead = asyncio.create_task(handle_event(rt, b))  # two pending: b leads, and the call hangs
    for _ in range(200):
        if fake.in_flight() >= 1:
            break
        await asyncio.sleep(0.05)
    assert fake.in_flight() == 1
    lead.cancel()  # worker shutdown mid-call
    with pytest.raises(asyncio.CancelledError):
        await lead
    assert rows(db_url, "SELECT event_id, status FROM hookline.batch_items ORDER BY id") == [
        (a, "pending"),
        (b, "pending"),
    ]
    fake.set_default(reply(results(a, b)))
    assert await handle_event(rt, a) == "succeeded"  # a leads the batch again, at once
    assert await handle_event(rt, b) == "succeeded"
    calls = rows(db_url, "SELECT event_id, route, status FROM hookline.llm_calls ORDER BY event_id, id")
    # the cut-off call is kept, failed, under its leader (as a pipeline's cut-off call is)
    cut_off = (b, "micro_batch:2", "failed")
    assert calls == [(a, "micro_batch:2", "succeeded"), cut_off, (b, "micro_batch:2", "succeeded")]


async def test_a_killed_leaders_batch_is_taken_back_after_the_reclaim_age(
    db_url: str, fake: FakeMessagesAPI, opened: list[Runtime]
) -> None:
    rt = await runtime_for(db_url, fake, make_config({"batch": {"max_events": 3, "max_wait_ms": 60000}}))
    opened.append(rt)
    a, b = insert_event(db_url, "evt_mb_a"), insert_event(db_url, "evt_mb_b")
    assert "gathering a micro-batch" in await held(rt, a)
    assert "gathering a micro-batch" in await held(rt, b)
    # what a leader in another worker does before its combined call; then that worker is SIGKILLed:
    # nothing releases the requests
    claimed = await limits.all_rows(rt, "micro_claim", pipeline="triage", tenant=None, limit=3)
    assert sorted(c["event_id"] for c in claimed) == [a, b]
    assert "its micro-batch is being answered" in await held(rt, a)  # within the reclaim age: it waits
    rows(db_url, "UPDATE hookline.batch_items SET submitted_at = now() - interval '11 minutes' RETURNING 1")
    fake.set_default(reply(results(a, b)))
    # no new event of the pipeline arrives: the stranded events' own jobs recover the batch
    assert await handle_event(rt, b) == "succeeded"
    assert await handle_event(rt, a) == "succeeded"
    calls = rows(db_url, "SELECT event_id, route, status FROM hookline.llm_calls ORDER BY event_id")
    assert calls == [(a, "micro_batch:2", "succeeded"), (b, "micro_batch:2", "succeeded")]
    assert len(fake.calls_to("/v1/messages")) == 1


async def test_a_run_that_claimed_before_its_batch_answer_was_stored_uses_it(
    db_url: str, fake: FakeMessagesAPI, opened: list[Runtime]
) -> None:
    """A run of event a read the event (no answer yet), then its micro-batch request was found ``done``:
    the leader stored a's answer in between. The stored answer is used; the event is not queued for
    another batch, which would pay for it again."""
    config = make_config({"batch": {"max_events": 2, "max_wait_ms": 60000}})
    rt = await runtime_for(db_url, fake, config)
    opened.append(rt)
    a, b = insert_event(db_url, "evt_mb_race_a"), insert_event(db_url, "evt_mb_race_b")
    assert "gathering a micro-batch" in await held(rt, a)
    fake.set_default(reply(results(a, b)))
    assert await handle_event(rt, b) == "succeeded"  # b leads: a's answer is stored, its request done
    pipeline = config.pipelines["triage"]
    [(event,)] = rows(db_url, "SELECT to_jsonb(e) FROM hookline.events e WHERE id = %s", a)  # as claimed before
    output = await micro_answer(rt, event, pipeline, build_request(pipeline, event, None))
    assert output == GOOD
    assert rows(db_url, "SELECT event_id, status FROM hookline.batch_items ORDER BY id") == [(a, "done"), (b, "done")]
    assert len(fake.calls_to("/v1/messages")) == 1
