"""``usd_per_day`` on a model hookline cannot price (not in worker/pricing.py, no
``[models."MODEL"].prices``): its calls would count $0, and the tenant's dollar cap would never be
reached however much it spent. Such a call is refused with the reason (a dead letter, as a call that
could never fit the cap is), and a ``prices`` override makes it count. ``handle_event`` against the real
Postgres and the fake Messages API."""

from __future__ import annotations

from typing import Any

import pytest

from tests.fakes.messages_api import FakeMessagesAPI, reply
from tests.harness import rows
from tests.worker.test_flow import GOOD, USAGE, held, insert_event, make_config, runtime_for
from tests.worker.test_microbatch_tenants import BATCH, age, results
from worker.pricing import unpriced_models
from worker.runtime import Runtime
from worker.tasks import handle_event

UNPRICED = "claude-fable-5-2"  # an SDK model id the built-in price table does not know


pytestmark = pytest.mark.usefixtures("stripe_and_crm")


def day_usd(db_url: str, tenant: str) -> Any:
    found = rows(
        db_url,
        "SELECT usd FROM hookline.budget_windows WHERE tenant = %s AND period = 'day' "
        "AND window_start = date_trunc('day', now() AT TIME ZONE 'UTC') AT TIME ZONE 'UTC'",
        tenant,
    )
    return found[0][0] if found else None


async def test_a_usd_cap_refuses_a_model_it_cannot_price(
    db_url: str, fake: FakeMessagesAPI, opened: list[Runtime]
) -> None:
    config = make_config({"model": UNPRICED}, tenants={"*": {"usd_per_day": 1.0}})
    rt = await runtime_for(db_url, fake, config)
    opened.append(rt)
    event = insert_event(db_url, "evt_unpriced", tenant="acme")
    fake.set_default(reply(GOOD, usage=USAGE))

    assert await handle_event(rt, event) == "dead"
    ((error,),) = rows(db_url, "SELECT last_error FROM hookline.events WHERE id = %s", event)
    assert "has no price" in error and "usd_per_day" in error
    assert fake.calls_to("/v1/messages") == []  # nothing spent that the cap could not count


async def test_a_micro_batch_to_a_model_it_cannot_price_is_refused_as_a_single_call_is(
    db_url: str, fake: FakeMessagesAPI, opened: list[Runtime]
) -> None:
    """The leader's combined call goes through the same reservation as a single call: refused before it
    is sent, each event a dead letter with the same reason, nothing counted at $0."""
    config = make_config({**BATCH, "model": UNPRICED}, tenants={"*": {"usd_per_day": 1.0}})
    rt = await runtime_for(db_url, fake, config)
    opened.append(rt)
    a1, a2 = (
        insert_event(db_url, "evt_unpriced_mb1", tenant="acme"),
        insert_event(db_url, "evt_unpriced_mb2", tenant="acme"),
    )
    fake.set_default(reply(results(a1, a2), usage=USAGE))
    assert "gathering a micro-batch" in await held(rt, a1)
    assert "gathering a micro-batch" in await held(rt, a2)
    age(db_url, a1, a2)

    assert await handle_event(rt, a2) == "dead"  # leads; refused
    assert await handle_event(rt, a1) == "dead"  # gathered again, leads its own batch; refused too
    errors = rows(db_url, "SELECT last_error FROM hookline.events ORDER BY id")
    assert len(errors) == 2 and all("has no price" in e and "usd_per_day" in e for (e,) in errors), errors
    assert fake.calls_to("/v1/messages") == []
    assert rows(db_url, "SELECT count(*) FROM hookline.llm_calls") == [(0,)]
    assert day_usd(db_url, "acme") is None


async def test_a_prices_override_makes_the_unpriced_model_count(
    db_url: str, fake: FakeMessagesAPI, opened: list[Runtime]
) -> None:
    config = make_config(
        {"model": UNPRICED},
        tenants={"*": {"usd_per_day": 1.0}},
        models={UNPRICED: {"prices": {"input": 8, "output": 40}}},
    )
    rt = await runtime_for(db_url, fake, config)
    opened.append(rt)
    event = insert_event(db_url, "evt_priced", tenant="acme")
    fake.set_default(reply(GOOD, usage=USAGE))

    assert await handle_event(rt, event) == "succeeded"
    assert float(day_usd(db_url, "acme")) == pytest.approx((100 * 8 + 50 * 40) / 1_000_000)


async def test_without_a_usd_cap_an_unpriced_model_still_runs(
    db_url: str, fake: FakeMessagesAPI, opened: list[Runtime]
) -> None:
    config = make_config({"model": UNPRICED}, tenants={"*": {"tokens_per_day": 100_000}})
    rt = await runtime_for(db_url, fake, config)
    opened.append(rt)
    event = insert_event(db_url, "evt_tokens_only", tenant="acme")
    fake.set_default(reply(GOOD, usage=USAGE))

    assert await handle_event(rt, event) == "succeeded"


def test_the_worker_names_unpriced_models_at_start_when_a_usd_cap_is_set() -> None:
    capped = make_config(
        {"model": UNPRICED, "escalate": {"model": "claude-opus-5-5", "when": "urgent"}},
        tenants={"acme": {"usd_per_day": 1.0}},
        models={"claude-opus-5-5": {"fallback": "claude-mythos-5-2"}},
    )
    assert unpriced_models(capped) == ["claude-fable-5-2", "claude-mythos-5-2"]
    assert unpriced_models(make_config({"model": UNPRICED}, tenants={"*": {"tokens_per_day": 10}})) == []  # no $ cap
