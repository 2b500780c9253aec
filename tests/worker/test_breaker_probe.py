"""The circuit breaker's half-open probe belongs to a call that is sent: an event that takes the probe and
is then held by its tenant's cap or the model's shared rate limit gives it back (the breaker is open
again, its open_seconds already over), so the next call of any tenant is the probe at once instead of
waiting for a probe that never went out. ``handle_event`` driven directly against the real Postgres and
the fake Messages API."""

from __future__ import annotations

import pytest

from tests.fakes.messages_api import FakeMessagesAPI, reply
from tests.harness import rows
from tests.worker.test_flow import GOOD, MODEL, USAGE, held, insert_event, make_config, runtime_for
from worker.runtime import Runtime
from worker.tasks import handle_event

BREAKER = {"failures": 1, "window_seconds": 60, "open_seconds": 30}


pytestmark = pytest.mark.usefixtures("stripe_and_crm")


def open_breaker_due_for_its_probe(db_url: str) -> None:
    """The breaker opened a while ago and its open_seconds have passed: the next call is the probe."""
    rows(
        db_url,
        "INSERT INTO hookline.breakers (model, state, failures, opened_at, open_until) "
        "VALUES (%s, 'open', 1, now() - interval '40 seconds', now() - interval '10 seconds') RETURNING 1",
        MODEL,
    )


def probe_given_back(db_url: str) -> bool:
    (row,) = rows(
        db_url,
        "SELECT state = 'open' AND probe_at IS NULL AND open_until <= now() FROM hookline.breakers WHERE model = %s",
        MODEL,
    )
    return bool(row[0])


async def test_an_event_held_at_its_tenants_cap_gives_the_probe_back_for_the_next_tenant(
    db_url: str, fake: FakeMessagesAPI, opened: list[Runtime]
) -> None:
    config = make_config(
        {},
        models={MODEL: {"breaker": BREAKER}},
        tenants={"*": {"tokens_per_day": 1_000_000}, "poor": {"tokens_per_day": 2000}},
    )
    rt = await runtime_for(db_url, fake, config)
    opened.append(rt)
    open_breaker_due_for_its_probe(db_url)
    rows(
        db_url,
        "INSERT INTO hookline.budget_windows (tenant, period, window_start, tokens) VALUES "
        "('poor', 'day', date_trunc('day', now() AT TIME ZONE 'UTC') AT TIME ZONE 'UTC', 1999) RETURNING 1",
    )
    poor, rich = insert_event(db_url, "evt_pb_poor", tenant="poor"), insert_event(db_url, "evt_pb_rich", tenant="rich")
    fake.set_default(reply(GOOD, usage=USAGE))

    assert "daily token or USD cap" in await held(rt, poor)  # took the probe, then its tenant's cap held it
    assert probe_given_back(db_url)
    assert await handle_event(rt, rich) == "succeeded"  # the probe, at once: not "circuit breaker … is open"
    assert rows(db_url, "SELECT state, probe_at FROM hookline.breakers WHERE model = %s", MODEL) == [("closed", None)]
    assert len(fake.calls_to("/v1/messages")) == 1


async def test_an_event_held_by_the_shared_rate_limit_gives_the_probe_back(
    db_url: str, fake: FakeMessagesAPI, opened: list[Runtime]
) -> None:
    rt = await runtime_for(db_url, fake, make_config({}, models={MODEL: {"breaker": BREAKER}}))
    opened.append(rt)
    open_breaker_due_for_its_probe(db_url)
    rows(  # a 429 holds the model for a while
        db_url,
        "INSERT INTO hookline.model_buckets (model, blocked_until, blocked_reason) "
        "VALUES (%s, now() + interval '1 minute', '429 from the API') RETURNING 1",
        MODEL,
    )
    first, second = insert_event(db_url, "evt_pb_1"), insert_event(db_url, "evt_pb_2")
    fake.set_default(reply(GOOD, usage=USAGE))

    assert "shared rate limit" in await held(rt, first)
    assert probe_given_back(db_url)
    assert "shared rate limit" in await held(rt, second)  # the rate limit holds it, not the breaker
    assert probe_given_back(db_url)
    rows(db_url, "UPDATE hookline.model_buckets SET blocked_until = NULL WHERE model = %s RETURNING 1", MODEL)
    assert await handle_event(rt, second) == "succeeded"  # the hold is over: the probe goes, and closes it
    assert rows(db_url, "SELECT state FROM hookline.breakers WHERE model = %s", MODEL) == [("closed",)]
    assert await handle_event(rt, first) == "succeeded"
    assert len(fake.calls_to("/v1/messages")) == 2
