"""A synchronous reply keeps its deadline: ``respond_timeout_ms`` counts from the request's arrival, as
the sender's own clock does, whatever the database makes it wait for. Real uvicorn, the real worker,
the fake Messages API; Postgres slowed by a lock a test session holds."""

from __future__ import annotations

import asyncio
import time

import httpx
import psycopg
import pytest

from tests.acceptance.test_sync_replies import DEFAULT, command_body, make_config, metric, settings_for, slash
from tests.fakes.messages_api import FakeMessagesAPI, reply
from tests.harness import Receiver, rows, wait_for_status, web_server, worker_task

WAITING_ON_A_LOCK = (
    "SELECT count(*) FROM pg_stat_activity WHERE application_name = 'hookline-web' "
    "AND datname = current_database() AND wait_event_type = 'Lock'"
)


@pytest.fixture(autouse=True)
def env(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HL_SLACK_SECRET", "slack-signing-secret-for-sync-tests")


async def _until_blocked(db_url: str, request: asyncio.Task[httpx.Response]) -> None:
    """Until the web process's statement waits on the test's lock."""
    deadline = time.monotonic() + 20
    while rows(db_url, WAITING_ON_A_LOCK) == [(0,)]:
        assert time.monotonic() < deadline and not request.done(), "the request never waited on the lock"
        await asyncio.sleep(0.05)


async def test_a_deadline_that_passed_while_the_event_was_stored_gives_the_default(
    db_url: str, fake: FakeMessagesAPI, receiver: Receiver
) -> None:
    """The sender's time runs from its request, not from the commit: an event whose store outlasted
    ``respond_timeout_ms`` gets the default at once, recorded, even though its answer comes quickly after
    (a reply carrying it would come too late for the sender, and no follow-up would deliver it)."""
    config = make_config(timeout_ms=1500, actions=[])
    fake.enqueue(reply({"answer": "42"}))
    settings = settings_for(db_url, fake, db_timeout=30.0)
    async with web_server(settings, config) as base, worker_task(settings, config), httpx.AsyncClient() as client:
        with psycopg.connect(db_url) as lock:
            lock.execute("LOCK TABLE hookline.events IN EXCLUSIVE MODE")  # inserts wait for it
            request = asyncio.create_task(slash(client, base, command_body(receiver.url)))
            await _until_blocked(db_url, request)
            await asyncio.sleep(1.7)  # the request's deadline passes while its event waits to be stored
            lock.rollback()
        r = await request
        event = await wait_for_status(db_url, int(r.headers["x-hookline-event-id"]))
    assert r.status_code == 200 and r.json() == DEFAULT, r.text
    assert r.headers["x-hookline-reply"] == "default"
    assert event["status"] == "succeeded"
    assert rows(db_url, "SELECT sync_reply FROM hookline.events") == [("default",)]


async def test_a_read_the_database_holds_up_gives_the_default_by_the_deadline(
    db_url: str, fake: FakeMessagesAPI, receiver: Receiver
) -> None:
    """The reply's reads of the stored answer are bounded by its deadline, not by ``HOOKLINE_DB_TIMEOUT``:
    while Postgres holds them up (a lock, a saturated pool) the sender still gets the default in time,
    and the default is recorded, so the follow-up delivers the answer."""
    config = make_config(timeout_ms=500)
    settings = settings_for(db_url, fake, db_timeout=60.0)
    async with web_server(settings, config) as base, httpx.AsyncClient() as client:
        with psycopg.connect(db_url) as lock:
            lock.execute("LOCK TABLE hookline.llm_calls IN ACCESS EXCLUSIVE MODE")  # the reply's read waits
            request = asyncio.create_task(slash(client, base, command_body(receiver.url)))
            done, _ = await asyncio.wait([request], timeout=20)  # a bound for a hung test, not a timing
            assert done, "the reply waited on the database past its deadline"
            lock.rollback()
        r = await request
        deadline = time.monotonic() + 20
        while rows(db_url, "SELECT sync_reply FROM hookline.events") != [("default",)]:
            assert time.monotonic() < deadline, "the default was not recorded"
            await asyncio.sleep(0.05)
    assert r.status_code == 200 and r.json() == DEFAULT, r.text
    assert r.headers["x-hookline-reply"] == "default"


async def test_a_reply_still_waiting_when_the_server_stops_gets_the_default_before_the_cut(
    db_url: str, fake: FakeMessagesAPI, receiver: Receiver
) -> None:
    """SIGTERM while a request waits longer than ``HOOKLINE_SHUTDOWN_TIMEOUT`` allows: the request gets the
    default (its event is stored), recorded so the follow-up delivers the answer; uvicorn cancelled it at
    the end of the drain, a 500 that told the sender nothing was stored."""
    config = make_config(timeout_ms=30000)
    settings = settings_for(db_url, fake, shutdown_timeout=1.0)
    async with httpx.AsyncClient() as client:
        async with web_server(settings, config, timeout_graceful_shutdown=settings.shutdown_timeout) as base:
            request = asyncio.create_task(slash(client, base, command_body(receiver.url), 60))
            deadline = time.monotonic() + 20
            while await metric(client, base, "hookline_sync_waiting") != 1:
                assert time.monotonic() < deadline and not request.done(), "the request never waited"
                await asyncio.sleep(0.05)
        r = await request  # the server has stopped
    assert r.status_code == 200 and r.json() == DEFAULT, r.text
    assert r.headers["x-hookline-reply"] == "default"
    assert rows(db_url, "SELECT status, sync_reply FROM hookline.events") == [("queued", "default")]
