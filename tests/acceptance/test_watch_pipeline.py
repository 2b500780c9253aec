"""A row change in a business table → hookline.events (same transaction) → procrastinate worker →
the real anthropic SDK against the fake Messages API → llm_calls and actions. Nobody LISTENs while
the business transaction commits; the worker finds the job anyway."""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Iterator
from typing import Any

import psycopg
import pytest

from app.cli.watch import apply_watches
from app.core import db
from app.core.config import Config
from app.core.payload import MAX_STRING
from app.core.watchspec import WatchSpec
from tests.fakes.messages_api import FakeMessagesAPI, reply
from tests.harness import config_from, make_settings, rows, wait_for_status, worker_task

ROWS = 1000


@pytest.fixture
def fake() -> Iterator[FakeMessagesAPI]:
    with FakeMessagesAPI() as f:
        yield f


@pytest.fixture
def orders(db_url: str) -> str:
    with psycopg.connect(db_url, autocommit=True) as conn:
        conn.execute(
            "CREATE TABLE public.orders (id bigint PRIMARY KEY, customer text NOT NULL, "
            "status text NOT NULL DEFAULT 'new', note text, card_token text)"
        )
        conn.execute(
            "INSERT INTO orders (id, customer, card_token) "
            "SELECT g, 'customer ' || g, 'tok_' || g FROM generate_series(1, %s) g",
            (ROWS,),
        )
    return "public.orders"


def db_config() -> Config:
    """A pipeline on row events: no [sources.db] table is needed for source = "db"."""
    return config_from(
        {
            "pipelines": {
                "cancellation-note": {
                    "source": "db",
                    "events": ["public.orders.update"],
                    "fields": ["key.id", "old.status", "new.status", "new.customer", "changed"],
                    "model": "claude-haiku-5-5",
                    "instructions": "Write a one-line note for the support team about this order status change.",
                    "output_schema": {
                        "type": "object",
                        "properties": {"note": {"type": "string"}},
                        "required": ["note"],
                    },
                    "actions": [{"type": "log"}],
                },
            },
        }
    )


async def test_status_update_runs_the_pipeline(db_url: str, orders: str, fake: FakeMessagesAPI) -> None:
    config = db_config()
    # the way `hookline migrate` applies [[watch]] from hookline.toml
    assert apply_watches(
        db_url, [WatchSpec(table="orders", on=("update",), columns=("status",), exclude_columns=("card_token",))]
    ) == ["public.orders: created (events public.orders.update)"]
    fake.enqueue(reply({"note": "Order 42 of customer 42 was cancelled."}))
    settings = make_settings(db_url, anthropic_api_key="sk-test", anthropic_base_url=fake.base_url)

    # a psql-like session commits the business change while no worker is running
    with psycopg.connect(db_url, autocommit=True) as psql:
        psql.execute("UPDATE orders SET note = 'called twice' WHERE id = 42")  # not a watched column
        psql.execute("UPDATE orders SET status = 'cancelled' WHERE id = 42")
    ((event_id,),) = rows(db_url, "SELECT id FROM hookline.events")

    async with worker_task(settings, config):
        event = await wait_for_status(db_url, event_id)
    assert event["status"] == "succeeded" and event["attempts"] == 1 and not event["dry_run"], event

    (call,) = fake.calls_to("/v1/messages")
    user = json.loads(call.body["messages"][0]["content"])
    assert user["fields"] == {
        "key.id": 42,
        "old.status": "new",
        "new.status": "cancelled",
        "new.customer": "customer 42",
        "changed": ["status"],
    }
    assert "tok_42" not in json.dumps(call.body)  # excluded column never reaches the model
    assert rows(db_url, "SELECT status, output FROM hookline.llm_calls WHERE event_id = %s", event_id) == [
        ("succeeded", {"note": "Order 42 of customer 42 was cancelled."})
    ]
    assert rows(db_url, "SELECT action, status FROM hookline.action_runs WHERE event_id = %s", event_id) == [
        ("log#0", "succeeded")
    ]


async def test_thousand_rows_in_one_statement_are_processed_once_each(db_url: str, orders: str) -> None:
    config = db_config()
    settings = make_settings(db_url, worker_concurrency=20, worker_poll_interval=0.2)  # no API key: dry run
    apply_watches(db_url, [WatchSpec(table="orders", on=("update",), columns=("status",))])
    async with worker_task(settings, config):
        started = time.monotonic()
        with psycopg.connect(db_url, autocommit=True) as psql:
            assert psql.execute("UPDATE orders SET status = 'shipped'").rowcount == ROWS
        deadline = started + 240  # a ceiling for a loaded machine, not a speed target
        done = 0
        while time.monotonic() < deadline:
            ((done,),) = rows(
                db_url, "SELECT count(*) FROM hookline.events WHERE status IN ('succeeded', 'dead', 'skipped')"
            )
            if done == ROWS:
                break
            await asyncio.sleep(0.2)
        elapsed = time.monotonic() - started
    assert done == ROWS, f"{done}/{ROWS} events finished in {elapsed:.1f}s"

    summary: list[tuple[Any, ...]] = rows(
        db_url,
        """
        SELECT count(*), count(DISTINCT payload->'key'), count(*) FILTER (WHERE status = 'succeeded'),
               count(*) FILTER (WHERE attempts = 1), count(*) FILTER (WHERE dry_run)
        FROM hookline.events WHERE source = 'db' AND event_type = 'public.orders.update'""",
    )
    assert summary == [(ROWS, ROWS, ROWS, ROWS, ROWS)]
    jobs = rows(
        db_url,
        "SELECT count(*), count(DISTINCT args->'event_id'), "
        "count(*) FILTER (WHERE status = 'succeeded'), count(*) FILTER (WHERE attempts = 1) "
        "FROM procrastinate_jobs WHERE task_name = 'hookline:process_event'",
    )
    assert jobs == [(ROWS, ROWS, ROWS, ROWS)]  # one job per event, each run once
    calls = rows(db_url, "SELECT count(*), count(DISTINCT event_id) FROM hookline.llm_calls WHERE status = 'dry_run'")
    assert calls == [(ROWS, ROWS)]


async def test_a_number_too_long_for_python_is_read_as_its_digits(db_url: str) -> None:
    """Postgres keeps a numeric of 5,001 digits; Python's int refuses it (4,300 digits at most). The
    worker read such an event's payload with json.loads: its job failed again and again, and the events
    claimed with it stayed 'processing'."""
    huge = "1" + "0" * 5000
    with psycopg.connect(db_url, autocommit=True) as psql:
        psql.execute("CREATE TABLE ledger (id int PRIMARY KEY, amount numeric)")
    apply_watches(db_url, [WatchSpec(table="ledger", on=("insert",))])
    config = config_from(
        {
            "pipelines": {
                "ledger-note": {
                    "source": "db",
                    "events": ["public.ledger.insert"],
                    "instructions": "Describe the entry.",
                    "output_schema": {"type": "object"},
                    "actions": [{"type": "log"}],
                },
            },
        }
    )
    with psycopg.connect(db_url, autocommit=True) as psql:
        psql.execute("INSERT INTO ledger VALUES (1, 1e5000), (2, 7), (3, 8)")
    settings = make_settings(db_url)  # no API key: dry run, the request is stored
    async with worker_task(settings, config):
        for event_id in (1, 2, 3):
            event = await wait_for_status(db_url, event_id)
            assert event["status"] == "succeeded" and event["last_error"] is None, event
    ((request,),) = rows(db_url, "SELECT request::text FROM hookline.llm_calls WHERE event_id = 1")
    assert huge[:MAX_STRING] in request  # the exact value, as the string of its digits (clipped as strings are)

    # the web process and the CLI (asyncpg) read it the same way
    conn = await db.connect(db_url)
    try:
        payload = await conn.fetchval("SELECT payload FROM hookline.events WHERE id = 1")
    finally:
        await conn.close()
    assert payload["new"] == {"id": 1, "amount": huge}


#: a numeric with a fraction, beyond a float's range: json.loads read it as inf
BEYOND_FLOAT = "1" + "0" * 400 + ".5"


async def test_a_lone_events_huge_number_is_read_on_the_fetchs_own_connection(db_url: str) -> None:
    """One such row alone: procrastinate's fetch claims a lone job's event in its own statement, on its own
    pool's connection, which read the payload with json.loads: the claim committed, the read failed, and
    the job stayed 'doing' under a live worker (the event 'processing')."""
    with psycopg.connect(db_url, autocommit=True) as psql:
        psql.execute("CREATE TABLE ledger (id int PRIMARY KEY, amount numeric)")
    apply_watches(db_url, [WatchSpec(table="ledger", on=("insert",))])
    config = config_from(
        {
            "pipelines": {
                "ledger-note": {
                    "source": "db",
                    "events": ["public.ledger.insert"],
                    "instructions": "Describe the entry.",
                    "output_schema": {"type": "object"},
                    "actions": [{"type": "log"}],
                },
            },
        }
    )
    async with worker_task(make_settings(db_url), config):
        for event_id, amount in ((1, "1e5000"), (2, BEYOND_FLOAT)):  # one at a time: each job alone
            with psycopg.connect(db_url, autocommit=True) as psql:
                psql.execute(f"INSERT INTO ledger VALUES ({event_id}, {amount})")
            event = await wait_for_status(db_url, event_id)
            assert event["status"] == "succeeded" and event["last_error"] is None, event
    ((request,),) = rows(db_url, "SELECT request::text FROM hookline.llm_calls WHERE event_id = 2")
    assert "Infinity" not in request


async def test_a_number_beyond_a_floats_range_is_read_as_its_text(db_url: str) -> None:
    """A numeric of 1e400 + 0.5 (a fraction, so not an integer's digits) became inf in Python: the model
    input, the stored request and any JSON answer about the event refuse inf (Starlette's JSONResponse:
    a 500). It reads as its text, exact, as an integer too long for Python does."""
    with psycopg.connect(db_url, autocommit=True) as psql:
        psql.execute("CREATE TABLE ledger (id int PRIMARY KEY, amount numeric, rate float8)")
    apply_watches(db_url, [WatchSpec(table="ledger", on=("insert",))])
    config = config_from(
        {
            "pipelines": {
                "ledger-note": {
                    "source": "db",
                    "events": ["public.ledger.insert"],
                    "instructions": "Describe the entry.",
                    "output_schema": {"type": "object"},
                    "actions": [{"type": "log"}],
                },
            },
        }
    )
    with psycopg.connect(db_url, autocommit=True) as psql:
        psql.execute(f"INSERT INTO ledger VALUES (1, {BEYOND_FLOAT}, 'Infinity'), (2, 7, 'NaN')")
    settings = make_settings(db_url)  # no API key: dry run, the request is stored
    async with worker_task(settings, config):
        for event_id in (1, 2):
            event = await wait_for_status(db_url, event_id)
            assert event["status"] == "succeeded" and event["last_error"] is None, event
    ((request,),) = rows(db_url, "SELECT request::text FROM hookline.llm_calls WHERE event_id = 1")
    assert BEYOND_FLOAT[:MAX_STRING] in request and "Infinity}" not in request  # the model saw Infinity

    conn = await db.connect(db_url)  # the web process and the CLI (asyncpg) read it the same way
    try:
        payload = await conn.fetchval("SELECT payload FROM hookline.events WHERE id = 1")
    finally:
        await conn.close()
    assert payload["new"] == {"id": 1, "amount": BEYOND_FLOAT, "rate": "Infinity"}  # jsonb: a float8's as text
