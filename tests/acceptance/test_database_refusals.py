"""A database that answers but will not store: the web process started before ``hookline migrate``, a
database set read-only (a failover, maintenance), a lock timeout. Each is the same answer as an
unreachable database — 503 ``database_unavailable`` + Retry-After, JSON, nothing stored — never a bare
500; ``/readyz`` says 503 for a read-only database so a load balancer stops sending. Real Postgres,
real uvicorn; the database is put in each state as an operator would (ALTER DATABASE, LOCK TABLE)."""

from __future__ import annotations

import json
import uuid
from collections.abc import Iterator
from typing import Any

import httpx
import psycopg
import pytest
from prometheus_client.parser import text_string_to_metric_families

from app.signatures import sign
from tests.acceptance.test_sync_replies import DEFAULT, command_body, make_config, slash
from tests.harness import config_from, make_settings, rows, web_server

SECRET = "database-refusals-test-secret"
LEAD = {"type": "object", "required": ["name"]}


@pytest.fixture(autouse=True)
def env(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HL_GH_SECRET", SECRET)
    monkeypatch.setenv("HL_SLACK_SECRET", "slack-signing-secret-for-sync-tests")


def config() -> Any:
    """``gh`` takes the group commit; ``checked`` stores a payload that breaks its schema as skipped
    (``on_invalid = "store"``: its own statement)."""
    return config_from(
        {
            "sources": {
                "gh": {"provider": "github", "secrets_env": ["HL_GH_SECRET"]},
                "checked": {
                    "provider": "github",
                    "secrets_env": ["HL_GH_SECRET"],
                    "schemas": {"*": LEAD},
                    "on_invalid": "store",
                },
            }
        }
    )


async def post(client: httpx.AsyncClient, base: str, source: str, delivery_id: str) -> httpx.Response:
    body = json.dumps({"action": "opened", "number": 1}).encode()
    headers = sign("github", secret=SECRET, body=body, delivery_id=delivery_id, event_type="issues")
    return await client.post(f"{base}/webhooks/{source}", content=body, headers=headers)


def assert_unavailable(resp: httpx.Response, retry_after: str = "3") -> None:
    assert resp.status_code == 503, resp.text
    assert resp.headers["content-type"].startswith("application/json")
    assert resp.headers["retry-after"] == retry_after
    assert resp.json() == {
        "error": "database_unavailable",
        "detail": "the event store is unavailable; nothing was stored, retry later",
    }


def outcomes(metrics_text: str, source: str) -> dict[str, float]:
    return {
        s.labels["outcome"]: s.value
        for family in text_string_to_metric_families(metrics_text)
        for s in family.samples
        if s.name == "hookline_ingest_requests_total" and s.labels["source"] == source
    }


@pytest.fixture
def read_only(conn: psycopg.Connection) -> Iterator[None]:
    """New sessions of this test's database cannot write (what a DBA does for maintenance)."""
    conn.execute(f'ALTER DATABASE "{conn.info.dbname}" SET default_transaction_read_only = on')
    yield
    conn.execute(f'ALTER DATABASE "{conn.info.dbname}" RESET default_transaction_read_only')


async def test_a_web_process_started_before_migrate_answers_503_not_500(empty_db_url: str) -> None:
    settings = make_settings(empty_db_url, retry_after_seconds=3)
    async with web_server(settings, config()) as base, httpx.AsyncClient() as client:
        grouped = await post(client, base, "gh", "d-unmigrated")
        invalid = await post(client, base, "checked", "d-unmigrated-invalid")
        ready = await client.get(f"{base}/readyz")
        metrics = (await client.get(f"{base}/metrics")).text
    assert_unavailable(grouped)
    assert_unavailable(invalid)
    assert ready.status_code == 503 and ready.headers["retry-after"] == "3", ready.text
    assert ready.json()["database"] == "not migrated" and ready.json()["hint"] == "run `hookline migrate`"
    assert outcomes(metrics, "gh") == {"database_unavailable": 1.0}


async def test_a_read_only_database_is_503_and_not_ready(db_url: str, read_only: None) -> None:
    settings = make_settings(db_url, retry_after_seconds=3)
    async with web_server(settings, config()) as base, httpx.AsyncClient() as client:
        grouped = await post(client, base, "gh", "d-read-only")
        invalid = await post(client, base, "checked", "d-read-only-invalid")
        ready = await client.get(f"{base}/readyz")
    assert_unavailable(grouped)
    assert_unavailable(invalid)
    assert ready.status_code == 503, ready.text
    assert ready.headers["retry-after"] == "3"
    assert ready.json()["status"] == "unavailable" and ready.json()["database"] == "read-only"
    assert rows(db_url, "SELECT count(*) FROM hookline.events") == [(0,)]


async def test_a_lock_timeout_is_503_and_the_senders_retry_is_stored(db_url: str, conn: psycopg.Connection) -> None:
    conn.execute(f'ALTER DATABASE "{conn.info.dbname}" SET lock_timeout = 200')
    holder = psycopg.connect(db_url)  # a transaction holding a lock every insert waits for
    holder.execute("LOCK TABLE hookline.events IN EXCLUSIVE MODE")
    delivery = "d-" + uuid.uuid4().hex
    settings = make_settings(db_url, retry_after_seconds=3)
    try:
        async with web_server(settings, config()) as base, httpx.AsyncClient() as client:
            refused = await post(client, base, "gh", delivery)
            holder.rollback()
            retried = await post(client, base, "gh", delivery)
    finally:
        holder.close()
    assert_unavailable(refused)
    assert retried.status_code == 200 and retried.json()["status"] == "accepted", retried.text
    assert rows(db_url, "SELECT delivery_id FROM hookline.events") == [(delivery,)]


async def test_a_sync_duplicate_whose_answer_cannot_be_read_gets_the_default(
    db_url: str, conn: psycopg.Connection
) -> None:
    """The event is stored: a failed lookup of its answer is still a 2xx, with respond_default."""
    conn.execute(f'ALTER DATABASE "{conn.info.dbname}" SET lock_timeout = 200')
    body = command_body("http://127.0.0.1:9/unused")
    settings = make_settings(db_url)
    async with web_server(settings, make_config(timeout_ms=100)) as base, httpx.AsyncClient() as client:
        first = await slash(client, base, body)  # no worker: the default once respond_timeout_ms runs out
        holder = psycopg.connect(db_url)
        try:
            holder.execute("LOCK TABLE hookline.llm_calls IN ACCESS EXCLUSIVE MODE")
            again = await slash(client, base, body)  # the sender's retry: its stored answer cannot be read
        finally:
            holder.rollback()
            holder.close()
    assert first.status_code == 200 and first.json() == DEFAULT, first.text
    assert again.status_code == 200, again.text
    assert again.json() == DEFAULT and again.headers["x-hookline-reply"] == "default"
    assert rows(db_url, "SELECT count(*) FROM hookline.events") == [(1,)]
