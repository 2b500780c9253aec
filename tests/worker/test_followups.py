"""The follow-up decision below HTTP: whether the sender's HTTP reply carried the answer is decided
once, by the web process (``answer``) or, after the deadline, by the worker (``default``)."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import psycopg
import pytest

from tests.harness import config_from, make_settings, rows
from worker.followups import reply_was_late
from worker.runtime import Runtime

SCHEMA = {"type": "object", "properties": {"answer": {"type": "string"}}, "required": ["answer"]}
CONFIG = config_from(
    {
        "sources": {"s": {"provider": "slack", "secrets_env": ["HL_UNSET"]}},
        "pipelines": {
            "p": {
                "source": "s",
                "instructions": "x",
                "output_schema": SCHEMA,
                "respond": "sync",
                "respond_timeout_ms": 400,
            }
        },
    }
)
PIPELINE = CONFIG.pipelines["p"]


@pytest.fixture
async def runtime(db_url: str) -> AsyncIterator[Runtime]:
    rt = Runtime.build(make_settings(db_url), CONFIG)
    await rt.open()
    try:
        yield rt
    finally:
        await rt.close()


def insert(db_url: str, delivery_id: str, *, sync: bool = True, age_s: float = 0, reply: str | None = None) -> int:
    with psycopg.connect(db_url, autocommit=True) as conn:
        row = conn.execute(
            "INSERT INTO hookline.events (source, delivery_id, respond_sync, sync_reply, received_at) "
            "VALUES ('s', %s, %s, %s, now() - make_interval(secs => %s)) RETURNING id",
            (delivery_id, sync, reply, age_s),
        ).fetchone()
    assert row is not None
    return int(row[0])


def sync_reply(db_url: str, event_id: int) -> str | None:
    value = rows(db_url, "SELECT sync_reply FROM hookline.events WHERE id = %s", event_id)[0][0]
    return None if value is None else str(value)


async def test_recorded_outcomes_decide(db_url: str, runtime: Runtime) -> None:
    assert await reply_was_late(runtime, insert(db_url, "a", reply="answer"), PIPELINE) is False
    assert await reply_was_late(runtime, insert(db_url, "b", reply="default"), PIPELINE) is True
    not_sync = insert(db_url, "c", sync=False)
    assert await reply_was_late(runtime, not_sync, PIPELINE) is True  # nobody waited over HTTP
    assert sync_reply(db_url, not_sync) is None


async def test_after_the_deadline_the_worker_claims_the_answer_for_the_follow_up(db_url: str, runtime: Runtime) -> None:
    event_id = insert(db_url, "d", age_s=5)  # the web process never recorded anything (it died)
    assert await reply_was_late(runtime, event_id, PIPELINE) is True
    assert sync_reply(db_url, event_id) == "default"
    # the web process's own claim (sql/queries/ingest.sql reply_answer) now finds it taken
    with psycopg.connect(db_url, autocommit=True) as conn:
        claimed = conn.execute(
            "UPDATE hookline.events SET sync_reply = 'answer' WHERE id = %s AND sync_reply IS NULL", (event_id,)
        ).rowcount
    assert claimed == 0


async def test_before_the_deadline_the_worker_waits_for_the_web_process(db_url: str, runtime: Runtime) -> None:
    event_id = insert(db_url, "e")

    async def web_replies_with_the_answer() -> None:
        await asyncio.sleep(0.1)
        with psycopg.connect(db_url, autocommit=True) as conn:
            conn.execute("UPDATE hookline.events SET sync_reply = 'answer' WHERE id = %s", (event_id,))

    web = asyncio.create_task(web_replies_with_the_answer())
    late = await reply_was_late(runtime, event_id, PIPELINE)
    await web
    assert late is False and sync_reply(db_url, event_id) == "answer"
