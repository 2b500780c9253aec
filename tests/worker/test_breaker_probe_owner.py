"""A probe given back is only ever the caller's own: a half-open probe whose call outlives
PROBE_TIMEOUT_SECONDS may be taken over by another worker's newer probe; when the first call is then cut
off by a worker shutdown, the newer probe stays out (the breaker stays half-open, and other calls wait
for it) instead of being reset so that yet another call probes alongside it. Two workers' runtimes,
``handle_event`` driven directly against the real Postgres and the fake Messages API."""

from __future__ import annotations

import asyncio

import pytest

from tests.fakes.messages_api import FakeMessagesAPI, hang, reply
from tests.harness import rows
from tests.worker.test_breaker_probe import BREAKER, open_breaker_due_for_its_probe
from tests.worker.test_flow import GOOD, MODEL, USAGE, held, insert_event, make_config, runtime_for
from worker.runtime import Runtime
from worker.tasks import handle_event

pytestmark = pytest.mark.usefixtures("stripe_and_crm")


async def in_flight(fake: FakeMessagesAPI, n: int) -> None:
    for _ in range(200):
        if fake.in_flight() >= n:
            return
        await asyncio.sleep(0.05)
    raise AssertionError(f"{fake.in_flight()} calls in flight, not {n}")


def probe(db_url: str) -> tuple[str, object]:
    ((state, probe_at),) = rows(db_url, "SELECT state, probe_at FROM hookline.breakers WHERE model = %s", MODEL)
    return str(state), probe_at


async def test_a_probe_cut_off_after_another_worker_took_it_over_leaves_the_newer_probe_out(
    db_url: str, fake: FakeMessagesAPI, opened: list[Runtime]
) -> None:
    config = make_config({}, models={MODEL: {"breaker": BREAKER}})
    one, other = await runtime_for(db_url, fake, config), await runtime_for(db_url, fake, config)
    opened.extend([one, other])
    open_breaker_due_for_its_probe(db_url)
    first, second, third = (insert_event(db_url, f"evt_po_{i}") for i in (1, 2, 3))
    fake.enqueue(hang(), hang())

    slow_probe = asyncio.create_task(handle_event(one, first))  # takes the probe; its call hangs
    await in_flight(fake, 1)
    # PROBE_TIMEOUT_SECONDS pass with the call still out: the probe is taken to be lost
    rows(db_url, "UPDATE hookline.breakers SET probe_at = probe_at - interval '121 seconds' RETURNING 1")
    newer_probe = asyncio.create_task(handle_event(other, second))  # the other worker probes again
    await in_flight(fake, 2)
    state, newer_at = probe(db_url)
    assert state == "half_open"

    slow_probe.cancel()  # the first worker shuts down, its call still out
    with pytest.raises(asyncio.CancelledError):
        await slow_probe
    assert probe(db_url) == ("half_open", newer_at)  # not the first call's probe: it stays out

    fake.set_default(reply(GOOD, usage=USAGE))
    assert "circuit breaker" in await held(one, third)  # waits for the probe out: no second probe alongside it
    assert len(fake.calls_to("/v1/messages")) == 2
    newer_probe.cancel()
    with pytest.raises(asyncio.CancelledError):
        await newer_probe
