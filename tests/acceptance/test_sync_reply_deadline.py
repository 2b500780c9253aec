"""A synchronous reply keeps its deadline, whatever the database makes it wait for. Real uvicorn, the
fake Messages API; Postgres slowed by a lock a test session holds."""

from __future__ import annotations

import asyncio
import time

import httpx
import psycopg
import pytest

from tests.acceptance.test_sync_replies import DEFAULT, command_body, make_config, settings_for, slash
from tests.fakes.messages_api import FakeMessagesAPI
from tests.harness import Receiver, rows, web_server


@pytest.fixture(autouse=True)
def env(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HL_SLACK_SECRET", "slack-signing-secret-for-sync-tests")


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
