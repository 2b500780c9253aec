"""Ordering keys under priorities and retries: an urgent event of a key does not pass the key's earlier
routine event, not even while that one waits for its retry (README: events with the same key run one at
a time in arrival order; migration 0029). Real web, worker, Postgres and the anthropic SDK against the
fake Messages API."""

from __future__ import annotations

import httpx

from tests.acceptance.test_limits import deliver, env, event_body, make_config, settings_for  # noqa: F401
from tests.fakes.messages_api import FakeMessagesAPI, error
from tests.harness import rows, wait_for_status, web_server, worker_task


async def test_an_urgent_event_waits_for_the_retry_of_an_earlier_event_of_its_key(
    db_url: str, fake: FakeMessagesAPI
) -> None:
    config = make_config(
        pipelines={
            "routine": {
                "events": ["invoice.created"],
                "retry": {"max_attempts": 3, "backoff_seconds": 3, "max_backoff_seconds": 3, "jitter": False},
            },
            "urgent": {"events": ["invoice.payment_failed"], "priority": 10},
        },
        source={"ordering_key": "json:data.object.customer"},
    )
    fake.enqueue_for("evt_first", error(500, "api_error"))  # the first event's first call fails: it retries
    settings = settings_for(db_url, fake)
    async with web_server(settings, config) as base, worker_task(settings, config), httpx.AsyncClient() as client:
        first = await deliver(client, base, event_body("evt_first", etype="invoice.created", customer="cus_1"))
        await wait_for_status(db_url, first, ("retrying",))
        second = await deliver(client, base, event_body("evt_second", etype="invoice.payment_failed", customer="cus_1"))
        assert (await wait_for_status(db_url, second))["status"] == "succeeded"
        assert (await wait_for_status(db_url, first))["status"] == "succeeded"
    (first_done, first_attempts), (second_started, second_attempts) = rows(
        db_url,
        "SELECT CASE WHEN id = %s THEN finished_at ELSE started_at END, attempts FROM hookline.events "
        "WHERE id IN (%s, %s) ORDER BY id",
        first,
        first,
        second,
    )
    assert (first_attempts, second_attempts) == (2, 1)
    assert second_started >= first_done, "the later event of the key started before the earlier one finished"
