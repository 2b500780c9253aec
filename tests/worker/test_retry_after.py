"""The Messages API's ``retry-after`` is a lower bound for the next try, whatever the pipeline's
``max_backoff_seconds``; and a 429 (too many requests, not the event's failure) holds the event
``throttled`` without using one of its attempts, for a model listed under ``[models]`` or not.
``handle_event`` against the real Postgres and the fake Messages API (the real anthropic SDK)."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from app.core.config import RetryPolicy
from tests.fakes.messages_api import FakeMessagesAPI, overloaded, rate_limited, reply
from tests.harness import rows
from tests.worker.test_flow import GOOD, MODEL, USAGE, insert_event, make_config, runtime_for
from worker.outcomes import Throttled
from worker.runtime import Runtime
from worker.tasks import RetryLater, handle_event

RETRY = {"max_attempts": 3, "backoff_seconds": 0.05, "max_backoff_seconds": 5, "jitter": False}


pytestmark = pytest.mark.usefixtures("stripe_and_crm")


def test_retry_after_is_a_floor_above_max_backoff_seconds() -> None:
    policy = RetryPolicy(backoff_seconds=2, max_backoff_seconds=300, jitter=True)
    assert policy.delay(1, retry_after=900) >= 900
    assert policy.delay(1, retry_after=None) <= 2
    assert 300 * 0.5 <= policy.delay(20) <= 300  # our own backoff keeps its cap


async def test_a_529_retry_after_longer_than_max_backoff_is_honoured(
    db_url: str, fake: FakeMessagesAPI, opened: list[Runtime]
) -> None:
    rt = await runtime_for(db_url, fake, make_config({"retry": RETRY}))
    opened.append(rt)
    event = insert_event(db_url, "evt_ra_529")
    fake.enqueue(overloaded(retry_after=120))
    with pytest.raises(RetryLater) as retry:
        await handle_event(rt, event)
    assert not isinstance(retry.value, Throttled)  # an overload is a failed attempt
    assert retry.value.delay >= 120, f"retried after {retry.value.delay}s, before the API's retry-after of 120 s"
    assert rows(db_url, "SELECT status, attempts FROM hookline.events WHERE id = %s", event) == [("retrying", 1)]


@pytest.mark.parametrize("listed", [False, True], ids=["model-not-in-[models]", "model-in-[models]"])
async def test_a_429_holds_the_event_until_its_retry_after_without_using_an_attempt(
    db_url: str, fake: FakeMessagesAPI, opened: list[Runtime], listed: bool
) -> None:
    top: dict[str, Any] = {"models": {MODEL: {"requests_per_minute": 1000}}} if listed else {}
    rt = await runtime_for(db_url, fake, make_config({"retry": {**RETRY, "max_attempts": 1}}, **top))
    opened.append(rt)
    event = insert_event(db_url, "evt_ra_429")
    fake.enqueue(rate_limited(retry_after=30))
    fake.set_default(reply(GOOD, usage=USAGE))
    with pytest.raises(Throttled) as hold:  # with max_attempts = 1 an attempt used would be a dead letter
        await handle_event(rt, event)
    assert hold.value.delay >= 30, f"retried after {hold.value.delay}s, before the API's retry-after of 30 s"
    ((status, attempts, detail),) = rows(
        db_url, "SELECT status, attempts, detail FROM hookline.events WHERE id = %s", event
    )
    assert (status, attempts) == ("throttled", 0) and "429" in detail
    calls = rows(db_url, "SELECT status, error FROM hookline.llm_calls WHERE event_id = %s", event)
    assert len(calls) == 1 and calls[0][0] == "failed" and "429" in calls[0][1]  # the round trip is kept
    if listed:  # the model's shared bucket holds; let it go, as its retry-after would have
        rows(db_url, "UPDATE hookline.model_buckets SET blocked_until = NULL RETURNING 1")
        await asyncio.sleep(0.5)  # its bucket (1000 a minute), lowered by the 429's remaining: 0, refills
    assert await handle_event(rt, event) == "succeeded"
    assert rows(db_url, "SELECT attempts FROM hookline.events WHERE id = %s", event) == [(1,)]


async def test_a_model_that_keeps_answering_429_ends_in_attempts_not_a_hold_without_end(
    db_url: str, fake: FakeMessagesAPI, opened: list[Runtime]
) -> None:
    """After RATE_LIMIT_HOLDS of one event's calls were answered 429, the next 429 uses an attempt (and
    the last attempt is a dead letter), so an event cannot wait throttled for ever."""
    from worker.gate import RATE_LIMIT_HOLDS

    rt = await runtime_for(db_url, fake, make_config({"retry": {**RETRY, "max_attempts": 1}}))
    opened.append(rt)
    event = insert_event(db_url, "evt_ra_429_forever")
    fake.set_default(rate_limited(retry_after=1))
    for n in range(RATE_LIMIT_HOLDS):
        with pytest.raises(Throttled):
            await handle_event(rt, event)
        assert rows(db_url, "SELECT status, attempts FROM hookline.events WHERE id = %s", event) == [
            ("throttled", 0)
        ], n
    assert await handle_event(rt, event) == "dead"  # the next 429 uses the only attempt
    ((status, attempts, error),) = rows(
        db_url, "SELECT status, attempts, last_error FROM hookline.events WHERE id = %s", event
    )
    assert (status, attempts) == ("dead", 1) and "429" in error
    calls = rows(db_url, "SELECT count(*) FROM hookline.llm_calls WHERE event_id = %s AND status = 'failed'", event)
    assert calls == [(RATE_LIMIT_HOLDS + 1,)]  # every round trip kept
