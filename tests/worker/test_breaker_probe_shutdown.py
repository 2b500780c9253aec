"""A half-open probe cut off by a worker shutdown gives the probe back: a shutdown says nothing about the
model's health, so the breaker is open again with its open_seconds already over and the next call of any
tenant is the probe at once, instead of every call waiting for the probe's timeout. A probe cut off by its
pipeline's ``timeout_seconds`` is a failed probe: the breaker opens again. ``handle_event`` driven
directly against the real Postgres and the fake Messages API."""

from __future__ import annotations

import asyncio

import pytest

from tests.fakes.messages_api import FakeMessagesAPI, hang, reply, slow
from tests.harness import rows
from tests.worker.test_breaker_probe import BREAKER, open_breaker_due_for_its_probe, probe_given_back
from tests.worker.test_flow import GOOD, MODEL, USAGE, insert_event, make_config, runtime_for
from worker.runtime import Runtime
from worker.tasks import RetryLater, handle_event

pytestmark = pytest.mark.usefixtures("stripe_and_crm")


def breaker(db_url: str) -> tuple[str, bool]:
    """The breaker's state, and whether a probe is out."""
    ((state, probing),) = rows(
        db_url, "SELECT state, probe_at IS NOT NULL FROM hookline.breakers WHERE model = %s", MODEL
    )
    return str(state), bool(probing)


async def test_a_probe_cut_off_by_a_worker_shutdown_is_given_back_for_the_next_call(
    db_url: str, fake: FakeMessagesAPI, opened: list[Runtime]
) -> None:
    rt = await runtime_for(db_url, fake, make_config({}, models={MODEL: {"breaker": BREAKER}}))
    opened.append(rt)
    open_breaker_due_for_its_probe(db_url)
    first, second = insert_event(db_url, "evt_ps_1"), insert_event(db_url, "evt_ps_2")
    fake.enqueue(hang())
    probing = asyncio.create_task(handle_event(rt, first))  # takes the probe; the call hangs
    for _ in range(200):
        if fake.in_flight() >= 1:
            break
        await asyncio.sleep(0.05)
    assert fake.in_flight() == 1
    assert breaker(db_url) == ("half_open", True)
    probing.cancel()  # worker shutdown mid-call
    with pytest.raises(asyncio.CancelledError):
        await probing

    assert probe_given_back(db_url)  # not a breaker failure, and no probe held until it times out
    ((failures,),) = rows(db_url, "SELECT failures FROM hookline.breakers WHERE model = %s", MODEL)
    assert failures == 1  # the failure that opened it; the shutdown added none
    fake.set_default(reply(GOOD, usage=USAGE))
    assert await handle_event(rt, second) == "succeeded"  # the probe, at once: not "circuit breaker … is open"
    assert breaker(db_url) == ("closed", False)
    assert await handle_event(rt, first) == "succeeded"  # handed back to the queue by the shutdown
    assert len(fake.calls_to("/v1/messages")) == 3


async def test_a_probe_cut_off_by_the_pipeline_timeout_is_a_failed_probe(
    db_url: str, fake: FakeMessagesAPI, opened: list[Runtime]
) -> None:
    config = make_config({"timeout_seconds": 1, "actions": []}, models={MODEL: {"breaker": BREAKER}})
    rt = await runtime_for(db_url, fake, config)
    opened.append(rt)
    open_breaker_due_for_its_probe(db_url)
    eid = insert_event(db_url, "evt_pt_1")
    fake.enqueue(slow(3, then=reply(GOOD, usage=USAGE)))

    with pytest.raises(RetryLater):
        await handle_event(rt, eid)
    assert breaker(db_url) == ("open", False)  # the probe failed: open again for open_seconds
    assert rows(db_url, "SELECT open_until > now() FROM hookline.breakers WHERE model = %s", MODEL) == [(True,)]
