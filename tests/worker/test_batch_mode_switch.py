"""A deploy takes a pipeline off ``mode = "batch_api"`` (or out of the config) while its Message Batches
requests are open: none is paid for twice, their spend is counted, no reservation is left behind.

``handle_event`` and the batch poller driven directly against the real Postgres and the fake Messages
API (as in tests/worker/test_flow.py); the last test runs the real procrastinate worker.
"""

from __future__ import annotations

from typing import Any

import pytest

from app.core.config import Config
from tests.fakes.messages_api import FakeMessagesAPI, reply
from tests.harness import Receiver, config_from, make_settings, rows, wait_for_status, worker_task
from tests.worker.test_flow import GOOD, MODEL, SCHEMA, USAGE, held, insert_event, make_config, runtime_for
from worker import batches
from worker.runtime import Runtime
from worker.tasks import handle_event

TENANTS = {"*": {"tokens_per_day": 1_000_000}}
TOKENS = 150  # USAGE: input + output


pytestmark = pytest.mark.usefixtures("stripe_and_crm")


async def opened_runtime(db_url: str, fake: FakeMessagesAPI, config: Config, opened: list[Runtime]) -> Runtime:
    rt = await runtime_for(db_url, fake, config)
    opened.append(rt)
    return rt


def day(db_url: str) -> list[tuple[Any, ...]]:
    """(tokens spent, tokens reserved) of today's window, and the reservations left."""
    window = rows(db_url, "SELECT tokens, reserved_tokens FROM hookline.budget_windows WHERE period = 'day'")
    return [*window, *rows(db_url, "SELECT count(*) FROM hookline.budget_reservations")]


def run_now(db_url: str) -> None:
    """The held jobs' time has come (the waits are minutes long)."""
    rows(db_url, "UPDATE procrastinate_jobs SET scheduled_at = now() WHERE status = 'todo' RETURNING 1")


def other_batch_api_pipeline() -> Config:
    """The deploy that removed pipeline triage; another pipeline still uses the Message Batches API."""
    return config_from(
        {
            "sources": {"stripe": {"provider": "stripe", "secrets_env": ["HL_STRIPE_SECRET"]}},
            "pipelines": {
                "digest": {
                    "source": "stripe",
                    "events": ["customer.*"],
                    "model": MODEL,
                    "instructions": "Digest.",
                    "output_schema": SCHEMA,
                    "mode": "batch_api",
                }
            },
            "tenants": TENANTS,
        }
    )


async def test_a_request_in_a_batch_is_used_after_the_pipeline_leaves_batch_api(
    db_url: str, fake: FakeMessagesAPI, opened: list[Runtime]
) -> None:
    fake.set_default(reply(GOOD, usage=USAGE))
    before = await opened_runtime(db_url, fake, make_config({"mode": "batch_api"}, tenants=TENANTS), opened)
    eid = insert_event(db_url, "evt_in_batch", "a")
    assert "Message Batches" in await held(before, eid)
    fake.batches.polls_until_ended = 2
    assert (await batches.poll(before))["submitted"] == 1
    after = await opened_runtime(db_url, fake, make_config({}, tenants=TENANTS), opened)  # mode = "messages"
    run_now(db_url)
    assert "it asked for while pipeline triage was" in await held(after, eid)  # waits for the batch's answer
    answered = 0
    for _ in range(5):  # the poller of a worker with no batch_api pipeline left
        answered += (await batches.poll(after))["results"]
        if answered:
            break
    assert answered == 1
    run_now(db_url)
    assert await handle_event(after, eid) == "succeeded"
    assert fake.calls_to("/v1/messages") == []  # never paid twice
    calls = rows(db_url, "SELECT route, status, input_tokens + output_tokens FROM hookline.llm_calls")
    assert calls == [("batch_api", "succeeded", TOKENS)]
    assert day(db_url) == [(TOKENS, 0), (0,)]  # spent at its usage, the reservation settled


async def test_a_pending_request_is_taken_back_when_the_pipeline_leaves_batch_api(
    db_url: str, fake: FakeMessagesAPI, opened: list[Runtime]
) -> None:
    fake.set_default(reply(GOOD, usage=USAGE))
    before = await opened_runtime(db_url, fake, make_config({"mode": "batch_api"}, tenants=TENANTS), opened)
    eid = insert_event(db_url, "evt_pending", "a")
    assert "Message Batches" in await held(before, eid)  # queued for the next batch, none submitted yet
    after = await opened_runtime(db_url, fake, make_config({}, tenants=TENANTS), opened)
    run_now(db_url)
    assert await handle_event(after, eid) == "succeeded"  # asked the Messages API, once
    assert len(fake.calls_to("/v1/messages")) == 1
    assert rows(db_url, "SELECT status FROM hookline.batch_items") == [("retired",)]
    assert day(db_url) == [(TOKENS, 0), (0,)]  # the batch reservation given back, the call's usage spent
    assert (await batches.poll(after))["submitted"] == 0
    assert fake.batches.all() == []


async def test_the_poller_collects_a_removed_pipelines_answers_and_submits_none_of_its_requests(
    db_url: str, fake: FakeMessagesAPI, opened: list[Runtime]
) -> None:
    fake.set_default(reply(GOOD, usage=USAGE))
    before = await opened_runtime(db_url, fake, make_config({"mode": "batch_api"}, tenants=TENANTS), opened)
    in_batch, pending = insert_event(db_url, "evt_rm_batch", "a"), insert_event(db_url, "evt_rm_pending", "a")
    assert "Message Batches" in await held(before, in_batch)
    fake.batches.polls_until_ended = 2
    assert (await batches.poll(before))["submitted"] == 1
    assert "Message Batches" in await held(before, pending)  # queued after that batch was submitted
    after = await opened_runtime(db_url, fake, other_batch_api_pipeline(), opened)
    answered = 0
    for _ in range(5):
        got = await batches.poll(after)
        assert got["submitted"] == 0  # the removed pipeline's pending request is never sent
        answered += got["results"]
        if answered:
            break
    assert answered == 1
    assert len(fake.batches.all()) == 1
    items = rows(db_url, "SELECT event_id, status FROM hookline.batch_items ORDER BY event_id")
    assert items == [(in_batch, "done"), (pending, "retired")]
    stored = rows(db_url, "SELECT event_id, input_tokens + output_tokens, cost_usd > 0 FROM hookline.llm_calls")
    assert stored == [(in_batch, TOKENS, True)]  # the answer paid for is on record, with its usage
    assert day(db_url) == [(TOKENS, 0), (0,)]


async def test_a_worker_with_no_batch_api_pipeline_still_polls_the_open_batches(
    db_url: str, fake: FakeMessagesAPI, opened: list[Runtime], receiver: Receiver
) -> None:
    fake.set_default(reply(GOOD, usage=USAGE))
    before = await opened_runtime(db_url, fake, make_config({"mode": "batch_api"}, tenants=TENANTS), opened)
    eid = insert_event(db_url, "evt_worker", "a")
    assert "Message Batches" in await held(before, eid)
    assert (await batches.poll(before))["submitted"] == 1
    settings = make_settings(
        db_url, anthropic_api_key="sk-test", anthropic_base_url=fake.base_url, batch_poll_seconds=1
    )
    async with worker_task(settings, make_config({}, tenants=TENANTS)):
        done = await wait_for_status(db_url, eid, timeout=60)
    assert done["status"] == "succeeded"
    assert fake.calls_to("/v1/messages") == []
    assert rows(db_url, "SELECT status FROM hookline.batch_items") == [("done",)]
    assert day(db_url) == [(TOKENS, 0), (0,)]
