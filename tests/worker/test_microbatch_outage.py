"""A micro-batch's answer is paid for once, whatever the database does while it is stored: the leader
stores each event's row through ``WorkerDB.durable`` (tried again while the database is away), marks an
event's request ``done`` only once its row is stored, and an escalated answer takes the batched one's
slot in the statement that stores it. The outage is real: a trigger makes Postgres end the session
that inserts the row (``pg_terminate_backend`` of its own backend, SQLSTATE 57P01), once.
``handle_event`` driven directly against the real Postgres and the fake Messages API."""

from __future__ import annotations

import psycopg
import pytest

from tests.fakes.messages_api import FakeMessagesAPI, reply
from tests.harness import Receiver, rows
from tests.worker.test_flow import GOOD, MODEL, held, insert_event, make_config, runtime_for
from worker.runtime import Runtime
from worker.tasks import handle_event

SONNET = "claude-sonnet-5-5"


pytestmark = pytest.mark.usefixtures("stripe_and_crm")


def cut_the_connection_once(db_url: str, route_like: str) -> None:
    """The first insert into hookline.llm_calls of a row whose route is LIKE ``route_like`` loses its
    connection: the server ends that session (its transaction rolls back). A sequence counts, as it
    is not rolled back with the session."""
    with psycopg.connect(db_url, autocommit=True) as conn:
        conn.execute("CREATE SEQUENCE public.outage_once")
        conn.execute(
            """
            CREATE FUNCTION public.outage_once() RETURNS trigger LANGUAGE plpgsql AS $$
            BEGIN
                IF nextval('public.outage_once') = 1 THEN
                    PERFORM pg_terminate_backend(pg_backend_pid());
                    PERFORM pg_sleep(5);  -- the termination lands here
                END IF;
                RETURN NEW;
            END $$
            """
        )
        conn.execute(
            "CREATE TRIGGER outage_once BEFORE INSERT ON hookline.llm_calls FOR EACH ROW "
            f"WHEN (NEW.route LIKE '{route_like}') EXECUTE FUNCTION public.outage_once()"
        )


def outages(db_url: str) -> int:
    """How many inserts met the outage trigger (1: the connection was cut once)."""
    return int(rows(db_url, "SELECT last_value FROM public.outage_once")[0][0])


async def test_a_micro_batch_answer_is_stored_through_a_lost_connection_and_paid_once(
    db_url: str, fake: FakeMessagesAPI, receiver: Receiver, opened: list[Runtime]
) -> None:
    rt = await runtime_for(db_url, fake, make_config({"batch": {"max_events": 2, "max_wait_ms": 60000}}))
    opened.append(rt)
    a, b = insert_event(db_url, "evt_mo_a"), insert_event(db_url, "evt_mo_b")
    assert "gathering a micro-batch" in await held(rt, a)
    fake.set_default(reply({"results": [{"event_id": e, "output": GOOD} for e in (a, b)]}))
    cut_the_connection_once(db_url, "micro_batch:%")

    assert await handle_event(rt, b) == "succeeded"  # b leads; storing the first part meets the outage
    assert outages(db_url) >= 1
    assert rows(db_url, "SELECT event_id, status FROM hookline.batch_items ORDER BY event_id") == [
        (a, "done"),
        (b, "done"),
    ]
    assert await handle_event(rt, a) == "succeeded"  # its stored part: no call of its own
    assert len(fake.calls_to("/v1/messages")) == 1  # the combined call, paid once
    assert rows(db_url, "SELECT event_id, route, status FROM hookline.llm_calls ORDER BY event_id") == [
        (a, "micro_batch:2", "succeeded"),
        (b, "micro_batch:2", "succeeded"),
    ]
    assert sorted(r.json()["event_id"] for r in receiver.received) == [a, b]


async def test_an_escalated_micro_batch_answer_is_stored_through_a_lost_connection_and_paid_once(
    db_url: str, fake: FakeMessagesAPI, receiver: Receiver, opened: list[Runtime]
) -> None:
    config = make_config(
        {"batch": {"max_events": 2, "max_wait_ms": 60000}, "escalate": {"model": SONNET, "when": "urgent"}}
    )
    rt = await runtime_for(db_url, fake, config)
    opened.append(rt)
    calm, urgent = insert_event(db_url, "evt_mo_calm"), insert_event(db_url, "evt_mo_urgent")
    parts = [
        {"event_id": calm, "output": {"subject": "fine", "urgent": False}},
        {"event_id": urgent, "output": {"subject": "Chargeback!", "urgent": True}},
    ]
    fake.set_model_default(MODEL, reply({"results": parts}))
    fake.set_model_default(SONNET, reply({"subject": "Chargeback: act today", "urgent": True}))
    assert "gathering a micro-batch" in await held(rt, calm)
    cut_the_connection_once(db_url, "escalate:%")

    assert await handle_event(rt, urgent) == "succeeded"  # leads, escalates; storing the escalation meets the outage
    assert outages(db_url) >= 1
    assert await handle_event(rt, calm) == "succeeded"
    assert [c.body["model"] for c in fake.calls_to("/v1/messages")] == [MODEL, SONNET]  # each paid once
    got = rows(db_url, "SELECT event_id, model, route, status FROM hookline.llm_calls ORDER BY id")
    assert sorted(got) == sorted(
        [
            (calm, MODEL, "micro_batch:2", "succeeded"),
            (urgent, MODEL, "micro_batch:2", "superseded"),
            (urgent, SONNET, "escalate:urgent", "succeeded"),
        ]
    )
    posted = {r.json()["event_id"]: r.json()["output"]["subject"] for r in receiver.received}
    assert posted == {calm: "fine", urgent: "Chargeback: act today"}
