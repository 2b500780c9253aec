"""An open breaker closes on its half-open probe's success only. A call already in flight when the
breaker opened (sent while it was closed) that then succeeds closed it at once: during a partial outage
(some calls overloaded, some answered) the breaker opened and closed again within a second, over and
over, its open_seconds never kept and an open / closed alert sent at each flip. ``handle_event`` against
the real Postgres and the fake Messages API."""

from __future__ import annotations

import asyncio

import pytest

from tests.fakes.messages_api import FakeMessagesAPI, held, reply
from tests.harness import rows
from tests.worker.test_breaker_probe import BREAKER
from tests.worker.test_flow import GOOD, MODEL, USAGE, insert_event, make_config, runtime_for
from worker.runtime import Runtime
from worker.tasks import handle_event

pytestmark = pytest.mark.usefixtures("stripe_and_crm")


def state(db_url: str) -> str:
    ((got,),) = rows(db_url, "SELECT state FROM hookline.breakers WHERE model = %s", MODEL)
    return str(got)


async def test_a_call_in_flight_when_the_breaker_opened_does_not_close_it(
    db_url: str, fake: FakeMessagesAPI, opened: list[Runtime]
) -> None:
    rt = await runtime_for(db_url, fake, make_config({}, models={MODEL: {"breaker": BREAKER}}))
    opened.append(rt)
    late = insert_event(db_url, "evt_nf_late")
    fake.enqueue(held(reply(GOOD, usage=USAGE)))

    sent = asyncio.create_task(handle_event(rt, late))  # sent while the breaker is closed
    await asyncio.to_thread(fake.wait_for_calls, "/v1/messages", 1, 30.0)
    rows(  # meanwhile other calls failed: the breaker opened for its open_seconds
        db_url,
        "INSERT INTO hookline.breakers (model, state, failures, window_start, opened_at, open_until) "
        "VALUES (%s, 'open', 1, now(), now(), now() + interval '30 seconds') RETURNING 1",
        MODEL,
    )
    fake.open_gate()
    assert await sent == "succeeded"  # its answer is used
    assert state(db_url) == "open"  # but the breaker keeps its open_seconds: no probe has answered
    ((until_later,),) = rows(
        db_url, "SELECT open_until > now() + interval '20 seconds' FROM hookline.breakers WHERE model = %s", MODEL
    )
    assert until_later


async def test_the_half_open_probes_success_still_closes_it(
    db_url: str, fake: FakeMessagesAPI, opened: list[Runtime]
) -> None:
    rt = await runtime_for(db_url, fake, make_config({}, models={MODEL: {"breaker": BREAKER}}))
    opened.append(rt)
    rows(
        db_url,
        "INSERT INTO hookline.breakers (model, state, failures, opened_at, open_until) "
        "VALUES (%s, 'open', 1, now() - interval '40 seconds', now() - interval '10 seconds') RETURNING 1",
        MODEL,
    )
    fake.set_default(reply(GOOD, usage=USAGE))
    assert await handle_event(rt, insert_event(db_url, "evt_nf_probe")) == "succeeded"
    assert state(db_url) == "closed"
