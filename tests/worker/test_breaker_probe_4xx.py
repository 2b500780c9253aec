"""A half-open probe answered with a 4xx (a 400 about this event's request, a 429 rate limit) says
nothing about the model's health: the breaker must not close on it (every waiting call would go to a
model that may still be failing), nor stay stuck; the probe is given back, so the next call probes at
once. ``handle_event`` driven directly against the real Postgres and the fake Messages API."""

from __future__ import annotations

import pytest

from tests.fakes.messages_api import FakeMessagesAPI, error, rate_limited, reply
from tests.harness import rows
from tests.worker.test_breaker_probe import BREAKER, open_breaker_due_for_its_probe, probe_given_back
from tests.worker.test_flow import GOOD, MODEL, USAGE, insert_event, make_config, runtime_for
from worker.outcomes import RetryLater
from worker.runtime import Runtime
from worker.tasks import handle_event

pytestmark = pytest.mark.usefixtures("stripe_and_crm")


async def test_a_probe_answered_400_does_not_close_the_breaker(
    db_url: str, fake: FakeMessagesAPI, opened: list[Runtime]
) -> None:
    rt = await runtime_for(db_url, fake, make_config({}, models={MODEL: {"breaker": BREAKER}}))
    opened.append(rt)
    open_breaker_due_for_its_probe(db_url)
    bad, good = insert_event(db_url, "evt_p4_bad"), insert_event(db_url, "evt_p4_good")
    fake.enqueue(error(400, "invalid_request_error", "prompt is too long"))

    assert await handle_event(rt, bad) == "dead"  # its own request was refused: permanent
    assert probe_given_back(db_url)  # not closed: the model's health is still unknown
    assert rows(db_url, "SELECT state FROM hookline.breakers WHERE model = %s", MODEL) == [("open",)]
    fake.set_default(reply(GOOD, usage=USAGE))
    assert await handle_event(rt, good) == "succeeded"  # the next call is the probe, at once
    assert rows(db_url, "SELECT state FROM hookline.breakers WHERE model = %s", MODEL) == [("closed",)]
    assert len(fake.calls_to("/v1/messages")) == 2


async def test_a_probe_answered_429_does_not_close_the_breaker(
    db_url: str, fake: FakeMessagesAPI, opened: list[Runtime]
) -> None:
    rt = await runtime_for(db_url, fake, make_config({}, models={MODEL: {"breaker": BREAKER}}))
    opened.append(rt)
    open_breaker_due_for_its_probe(db_url)
    first = insert_event(db_url, "evt_p4_429")
    fake.enqueue(rate_limited(retry_after=1))

    with pytest.raises(RetryLater):  # transient: the queue runs it again
        await handle_event(rt, first)
    assert probe_given_back(db_url)
    assert rows(db_url, "SELECT state FROM hookline.breakers WHERE model = %s", MODEL) == [("open",)]
