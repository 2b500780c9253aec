"""A model answer that arrives while Postgres is away is kept: stored once the database is back, its
usage counted in the tenant's day, and never paid for again.

The worker is a child process (``python -m worker``); Postgres is a dedicated embedded server the test
stops and starts (tests.chaos_support.RestartablePostgres); the model is the fake Messages API.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
from collections.abc import Iterator
from pathlib import Path

import psycopg
import pytest

from app.core import migrations
from tests.chaos_support import (
    ANSWER,
    CONFIG_TOML,
    RestartablePostgres,
    Workers,
    drop_orphans,
    query,
    session_db,
    slow_receiver,
    stripe_event,
    wait_until,
    worker_env,
)
from tests.fakes.messages_api import FakeMessagesAPI, reply, slow
from tests.harness import ROOT

MESSAGES = "/v1/messages"
#: the chaos pipeline, with a tenant day budget (so the answer's usage is settled in Postgres after the
#: call) and a single attempt (a database outage must never use up the event's attempts)
OUTAGE_TOML = (
    CONFIG_TOML.replace(
        'instructions = "Draft a short, kind recovery email for this failed payment."',
        'instructions = "Draft a short, kind recovery email for this failed payment."\nretry = { max_attempts = 1 }',
    )
    + '\n[tenants."*"]\ntokens_per_day = 1000000\n'
)


@pytest.fixture(scope="module")
def restartable() -> Iterator[RestartablePostgres]:
    if os.environ.get("DATABASE_URL"):
        pytest.skip("DATABASE_URL points at an external server, which this test cannot restart")
    pg = RestartablePostgres(ROOT / ".hookline" / "outage-pg")
    yield pg
    pg.close()


@pytest.fixture
def outage_db(restartable: RestartablePostgres) -> Iterator[str]:
    name = session_db("outage")
    admin = restartable.url("postgres")
    with psycopg.connect(admin, autocommit=True) as c:
        drop_orphans(c, "outage")
        c.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        c.execute(f'CREATE DATABASE "{name}"')
    url = restartable.url(name)
    migrations.migrate(url)
    yield url
    with contextlib.suppress(psycopg.Error), psycopg.connect(admin, autocommit=True) as c:
        c.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


@pytest.fixture
def workers(tmp_path: Path) -> Iterator[Workers]:
    w = Workers(tmp_path)
    yield w
    w.stop_all()


@pytest.fixture
def fake() -> Iterator[FakeMessagesAPI]:
    with FakeMessagesAPI() as f:
        yield f


def insert_event(db_url: str, tag: str) -> int:
    body = stripe_event(tag)
    with psycopg.connect(db_url, autocommit=True) as conn:
        row = conn.execute(
            "INSERT INTO hookline.events (source, delivery_id, event_type, body, payload) "
            "VALUES ('stripe', %s, 'invoice.payment_failed', %s, %s::jsonb) RETURNING id",
            (tag, body, body.decode()),
        ).fetchone()
    assert row is not None
    return int(row[0])


async def test_an_answer_that_arrives_while_postgres_is_down_is_stored_once_it_is_back(
    restartable: RestartablePostgres, outage_db: str, tmp_path: Path, workers: Workers, fake: FakeMessagesAPI
) -> None:
    """Postgres stops (fast) right after the model is asked and stays down well past the worker's
    HOOKLINE_SHUTDOWN_TIMEOUT: the lost LISTEN connection makes procrastinate end the job (as at a
    restart of its loop) while the answer waits to be stored. The answer is stored when Postgres is
    back, its usage settled, and the event's next run uses it: one paid call, one delivery."""
    config = tmp_path / "hookline.toml"
    config.write_text(OUTAGE_TOML)
    # The answer comes 1 s after the call, the job is cut off 3 s after Postgres stops: the answer is in
    # hand well before the cut (one at the cut itself would be a call cancelled in flight, its answer lost).
    fake.enqueue(slow(1, then=reply(ANSWER)), reply(ANSWER))
    with slow_receiver() as receiver:
        env = worker_env(outage_db, config, fake_url=fake.base_url, receiver_url=receiver.url, shutdown=3.0)
        await workers.start("W", env)
        event_id = insert_event(outage_db, "evt_outage")
        await asyncio.to_thread(fake.wait_for_calls, MESSAGES, 1, 30)
        await asyncio.to_thread(restartable.stop, "fast")
        try:
            await asyncio.sleep(8)  # the answer arrives meanwhile; the job is cut off after 3 s
        finally:
            await asyncio.to_thread(restartable.start)

        def terminal() -> bool:
            got = query(outage_db, "SELECT status FROM hookline.events WHERE id = %s", event_id)
            return got[0][0] in ("succeeded", "dead")

        await wait_until(terminal, timeout=90, what="the event to finish", report=workers.report, interval=0.5)
        status = query(outage_db, "SELECT status, dry_run FROM hookline.events WHERE id = %s", event_id)
        calls = query(
            outage_db,
            "SELECT status, output, input_tokens + output_tokens + coalesce(cache_creation_input_tokens, 0) "
            "+ coalesce(cache_read_input_tokens, 0) FROM hookline.llm_calls WHERE event_id = %s",
            event_id,
        )
        window = query(outage_db, "SELECT tokens, reserved_tokens FROM hookline.budget_windows WHERE period = 'day'")
        assert status == [("succeeded", False)], workers.report()
        assert len(fake.calls_to(MESSAGES)) == 1, "the answer was paid for twice"
        assert [(s, o) for s, o, _ in calls] == [("succeeded", ANSWER)]
        assert window == [(calls[0][2], 0)]  # its usage counted in the day, its reservation settled
        assert len(await asyncio.to_thread(receiver.wait_for, 1, 30)) == 1  # its action ran once
