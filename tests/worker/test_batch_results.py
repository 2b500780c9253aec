"""A Message Batches result is marked read only with its call stored: a store that fails leaves the result
for the next poll, and the event is never asked again (never paid twice).

The batch poller and ``handle_event`` driven directly against the real Postgres (a trigger of the real
table refuses the first store) and the fake Messages API.
"""

from __future__ import annotations

import psycopg
import pytest

from tests.fakes.messages_api import FakeMessagesAPI, reply
from tests.harness import refuse_rows, rows
from tests.worker.test_batch_mode_switch import TENANTS, TOKENS, day, opened_runtime, run_now
from tests.worker.test_flow import GOOD, USAGE, held, insert_event, make_config
from worker import batches
from worker.limits import Held
from worker.prompt import build_request
from worker.runtime import Runtime
from worker.tasks import handle_event

pytestmark = pytest.mark.usefixtures("stripe_and_crm")


async def test_a_result_whose_store_failed_is_read_again_by_the_next_poll(
    db_url: str, fake: FakeMessagesAPI, opened: list[Runtime]
) -> None:
    fake.set_default(reply(GOOD, usage=USAGE))
    rt = await opened_runtime(db_url, fake, make_config({"mode": "batch_api"}, tenants=TENANTS), opened)
    eid = insert_event(db_url, "evt_store_fails", "a")
    assert "Message Batches" in await held(rt, eid)
    assert (await batches.poll(rt))["submitted"] == 1
    refuse_rows(db_url, "test_store_refusals", "hookline.llm_calls")
    with pytest.raises(psycopg.errors.RaiseException, match="injected"):
        await batches.poll(rt)  # the batch ended; storing its one result fails
    # nothing was recorded as read: the result is still to be read, no call row, the reservation held
    assert rows(db_url, "SELECT status FROM hookline.batch_items") == [("submitted",)]
    assert rows(db_url, "SELECT count(*) FROM hookline.llm_calls") == [(0,)]
    assert (await batches.poll(rt))["results"] == 1  # the next poll stores it
    run_now(db_url)
    assert await handle_event(rt, eid) == "succeeded"
    assert fake.calls_to("/v1/messages") == []  # the stored answer was used: never asked again
    assert len([c for c in fake.calls_to("/v1/messages/batches") if c.method == "POST"]) == 1
    calls = rows(db_url, "SELECT route, status, input_tokens + output_tokens FROM hookline.llm_calls")
    assert calls == [("batch_api", "succeeded", TOKENS)]
    assert rows(db_url, "SELECT status FROM hookline.batch_items") == [("done",)]
    assert day(db_url) == [(TOKENS, 0), (0,)]  # spent once, at its usage; the reservation settled


async def test_a_run_that_claimed_before_the_result_was_stored_does_not_ask_again(
    db_url: str, fake: FakeMessagesAPI, opened: list[Runtime]
) -> None:
    """A run read the event (no answer yet), then found its request ``done``: the poll stored the answer
    in between. The run is held for a moment (its next run reads the answer), and nothing is queued
    for another batch, which would pay for it again."""
    fake.set_default(reply(GOOD, usage=USAGE))
    config = make_config({"mode": "batch_api"}, tenants=TENANTS)
    rt = await opened_runtime(db_url, fake, config, opened)
    eid = insert_event(db_url, "evt_result_race", "a")
    [(event,)] = rows(db_url, "SELECT to_jsonb(e) FROM hookline.events e WHERE id = %s", eid)  # as claimed before
    assert "Message Batches" in await held(rt, eid)
    assert (await batches.poll(rt))["submitted"] == 1
    assert (await batches.poll(rt))["results"] == 1
    pipeline = config.pipelines["triage"]
    with pytest.raises(Held, match="stored meanwhile"):
        await batches.batch_answer(rt, event, pipeline, build_request(pipeline, event, None))
    assert rows(db_url, "SELECT status FROM hookline.batch_items") == [("done",)]
    run_now(db_url)
    assert await handle_event(rt, eid) == "succeeded"
    assert len([c for c in fake.calls_to("/v1/messages/batches") if c.method == "POST"]) == 1
    assert day(db_url) == [(TOKENS, 0), (0,)]


async def test_a_result_holding_what_jsonb_refuses_is_stored_and_the_poll_goes_on(
    db_url: str, fake: FakeMessagesAPI, opened: list[Runtime]
) -> None:
    """A batch result whose text holds a raw NUL: stored with U+FFFD in its place, as a Messages API
    answer is. Its store failed (jsonb refuses \\u0000), and in one transaction with marking it read,
    the result stayed unread and every poll failed on it: no later result was ever stored."""
    fake.set_default(reply('{"subject": "a\x00b", "urgent": false}', usage=USAGE))
    rt = await opened_runtime(db_url, fake, make_config({"mode": "batch_api"}, tenants=TENANTS), opened)
    eid = insert_event(db_url, "evt_result_nul", "a")
    assert "Message Batches" in await held(rt, eid)
    assert (await batches.poll(rt))["submitted"] == 1
    assert (await batches.poll(rt))["results"] == 1
    [(status, output)] = rows(db_url, "SELECT status, output FROM hookline.llm_calls")
    assert status == "succeeded" and output["subject"] == "a\ufffdb"
