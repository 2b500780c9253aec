"""Events per status stay exact through a real workload, and open dashboards share one count.

The admin API's stats, the dashboard stream, ``hookline status`` and /metrics read the trigger-kept
counts (hookline.events_by_status, migration 0031) instead of scanning hookline.events. After ingest
over HTTP (concurrent requests, one group commit, duplicates), the worker's processing (succeeded,
dead, skipped), a bulk replay, retention's payload prune and a DBA's delete, every one of them must
equal ``SELECT status, count(*) FROM hookline.events GROUP BY status``. The dashboard streams of one
web process share their count: one read serves every open tab.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
from collections.abc import AsyncIterator
from typing import Any

import httpx
import psycopg
import pytest

from app.cli import observe
from app.core.config import Config
from app.signatures import sign
from app.web.admin import data
from tests.acceptance.test_admin_api import TOKEN
from tests.acceptance.test_admin_dashboard import login
from tests.fakes.messages_api import FakeMessagesAPI, error, reply
from tests.harness import config_from, make_settings, rows, wait_for_status, web_server, worker_task
from worker.runtime import Runtime

SECRET = "whsec_counts_test"
ADMIN = {"Authorization": f"Bearer {TOKEN}"}


def config() -> Config:
    return config_from(
        {
            "sources": {"stripe": {"provider": "stripe", "secrets_env": ["HL_STRIPE_SECRET"]}},
            "pipelines": {
                "recovery": {
                    "source": "stripe",
                    "events": ["invoice.payment_failed"],
                    "instructions": "Draft a recovery email.",
                    "output_schema": {
                        "type": "object",
                        "properties": {"subject": {"type": "string"}},
                        "required": ["subject"],
                    },
                }
            },
        }
    )


def body(evt: str, event_type: str = "invoice.payment_failed") -> bytes:
    return json.dumps({"id": evt, "type": event_type, "data": {"object": {"customer": "cus_1"}}}).encode()


def signed(raw: bytes) -> dict[str, str]:
    return {**sign("stripe", secret=SECRET, body=raw), "content-type": "application/json"}


def actual(db_url: str) -> dict[str, int]:
    return {str(s): int(n) for s, n in rows(db_url, "SELECT status, count(*) FROM hookline.events GROUP BY status")}


async def assert_counts_exact(db_url: str, client: httpx.AsyncClient, base: str) -> dict[str, int]:
    """Every reader of the counts answers what a scan of the events answers."""
    expected = actual(db_url)
    stats = await client.get(f"{base}/admin/api/stats", headers=ADMIN)
    assert stats.status_code == 200 and stats.json()["events_by_status"] == expected
    status = await observe._status_data(db_url)  # what `hookline status` prints
    assert status["events"] == expected and status["dead_letters"] == expected.get("dead", 0)
    return expected


@pytest.fixture
def env(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HL_STRIPE_SECRET", SECRET)


async def test_counts_by_status_stay_exact_through_a_mixed_workload(
    db_url: str, env: None, fake: FakeMessagesAPI
) -> None:
    settings = make_settings(db_url, anthropic_api_key="sk-test", anthropic_base_url=fake.base_url, admin_token=TOKEN)
    cfg = config()
    fake.set_default(reply({"subject": "About your invoice"}))
    for i in range(4):
        fake.enqueue_for(f"evt_bad_{i}", error(400, "invalid_request_error", "refused"))  # dead letters
    deliveries = [f"evt_ok_{i}" for i in range(20)] + [f"evt_bad_{i}" for i in range(4)]
    async with web_server(settings, cfg) as base, httpx.AsyncClient(timeout=30) as client:
        assert await assert_counts_exact(db_url, client, base) == {}
        posts = [body(d) for d in deliveries] + [body(f"evt_other_{i}", "customer.updated") for i in range(5)]
        posts += [body("evt_ok_0"), body("evt_ok_1")]  # duplicates, stored once
        answers = await asyncio.gather(
            *(client.post(f"{base}/webhooks/stripe", content=raw, headers=signed(raw)) for raw in posts)
        )
        assert all(a.status_code == 200 for a in answers), [a.text for a in answers]
        ids = sorted({int(a.json()["event_id"]) for a in answers})
        assert len(ids) == 29
        before_worker = await assert_counts_exact(db_url, client, base)
        assert sum(before_worker.values()) == 29

        async with worker_task(settings, cfg):
            for event_id in ids:
                await wait_for_status(db_url, event_id)
            finished = await assert_counts_exact(db_url, client, base)
            assert finished.get("dead") == 4 and finished.get("succeeded") == 20, finished

            replay = await client.post(f"{base}/admin/api/replay", headers=ADMIN, json={"status": "dead"})
            assert replay.status_code == 202 and replay.json()["replayed"] == 4, replay.text
            for event in replay.json()["events"]:
                await wait_for_status(db_url, event["event_id"])
            replayed = await assert_counts_exact(db_url, client, base)
            assert replayed.get("succeeded") == 24 and "dead" not in replayed, replayed

        # retention: the payloads of events older than payload_retention_days go, the rows stay
        with psycopg.connect(db_url, autocommit=True) as conn:
            conn.execute("UPDATE hookline.events SET received_at = received_at - interval '400 days'")
        runtime = Runtime.build(settings, cfg)
        await runtime.open()
        try:
            assert (await runtime.retention())["payloads_pruned"] == 29
        finally:
            await runtime.close()
        assert sum((await assert_counts_exact(db_url, client, base)).values()) == 29
        with psycopg.connect(db_url, autocommit=True) as conn:  # a DBA deletes old events
            conn.execute("DELETE FROM hookline.events WHERE id %% 2 = 0 AND id <> ALL (%s)", (ids[:3],))
        remaining = await assert_counts_exact(db_url, client, base)
        assert 0 < sum(remaining.values()) < 29


async def _read_stream(client: httpx.AsyncClient, seen: list[dict[str, int]], ready: asyncio.Event) -> None:
    """Follow /admin/stream, keeping the counts of each update."""
    async with client.stream("GET", "/admin/stream") as stream:
        event = ""
        async for line in stream.aiter_lines():
            if line.startswith("event: "):
                event = line.removeprefix("event: ")
            elif line.startswith("data: "):
                message = json.loads(line.removeprefix("data: "))
                if event == "hello":
                    ready.set()
                elif event == "update" and "counts" in message:
                    seen.append(message["counts"])


@contextlib.asynccontextmanager
async def streams(base: str, n: int) -> AsyncIterator[list[list[dict[str, int]]]]:
    """n dashboard tabs (logged-in clients) following the stream of one web process."""
    async with contextlib.AsyncExitStack() as stack:
        clients = [await stack.enter_async_context(httpx.AsyncClient(base_url=base, timeout=30)) for _ in range(n)]
        for c in clients:
            assert (await login(c)).status_code == 303
        seen: list[list[dict[str, int]]] = [[] for _ in range(n)]
        ready = [asyncio.Event() for _ in range(n)]
        tasks = [asyncio.create_task(_read_stream(c, s, r)) for c, s, r in zip(clients, seen, ready, strict=True)]
        try:
            await asyncio.wait_for(asyncio.gather(*(r.wait() for r in ready)), 10)
            yield seen
        finally:
            for t in tasks:
                t.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)


async def test_open_dashboards_share_one_count_per_process(
    db_url: str, env: None, conn: psycopg.Connection, monkeypatch: pytest.MonkeyPatch
) -> None:
    reads: list[int] = []
    original = data.status_counts

    async def counting(pool: Any) -> dict[str, int]:  # the real query, counted
        reads.append(1)
        return await original(pool)

    monkeypatch.setattr(data, "status_counts", counting)
    settings = make_settings(db_url, admin_token=TOKEN)
    tabs = 6
    async with web_server(settings, config()) as base, streams(base, tabs) as seen:
        conn.execute(
            "INSERT INTO hookline.events (source, delivery_id, payload) "
            "SELECT 'stripe', 'evt_' || i, '{}' FROM generate_series(1, 5) AS i"
        )
        conn.execute("UPDATE hookline.events SET status = 'dead' WHERE delivery_id = 'evt_1'")
        expected = {str(s): int(n) for s, n in conn.execute("SELECT status, count(*) FROM hookline.events GROUP BY 1")}
        for _ in range(200):  # every tab ends with the counts after the last change
            if all(s and s[-1] == expected for s in seen):
                break
            await asyncio.sleep(0.05)
        assert [s[-1] if s else None for s in seen] == [expected] * tabs
    # one read served several tabs: at most one per COUNTS_SECONDS, not one per tab
    assert 1 <= len(reads) < tabs, reads
