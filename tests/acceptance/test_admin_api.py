"""The admin API against a real web process and a real database: auth, filters, pagination, detail with
redaction, dead letters, replay, stats and cost. Rows are written with SQL, as a DBA (or the worker)
would; replay goes through hookline.replay and defers a real procrastinate job."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
import psycopg
import pytest

from app.core.config import Config
from tests.harness import config_from, make_settings, web_server

TOKEN = "admin-token-for-tests-0123456789"


def admin_config() -> Config:
    return config_from(
        {
            "sources": {
                "stripe": {
                    "provider": "stripe",
                    "secrets_env": ["HL_STRIPE_SECRET"],
                    "redact": ["data.object.customer_email", "data.items.card"],
                },
                "github": {"provider": "github", "secrets_env": ["HL_GITHUB_SECRET"]},
            }
        }
    )


def insert_event(
    conn: psycopg.Connection,
    source: str,
    delivery: str,
    *,
    status: str = "succeeded",
    tenant: str | None = None,
    event_type: str = "invoice.payment_failed",
    payload: dict[str, Any] | None = None,
    received_at: datetime | None = None,
) -> int:
    finished = status in ("succeeded", "dead", "skipped")
    row = conn.execute(
        "INSERT INTO hookline.events (source, delivery_id, event_type, tenant, status, payload, received_at,"
        " started_at, finished_at, last_error) VALUES (%s, %s, %s, %s, %s, %s, coalesce(%s, now()),"
        " CASE WHEN %s THEN now() END, CASE WHEN %s THEN now() END, CASE WHEN %s = 'dead' THEN 'boom' END)"
        " RETURNING id",
        (source, delivery, event_type, tenant, status, json.dumps(payload or {"n": delivery}), received_at,
         finished, finished, status),
    ).fetchone()  # fmt: skip
    assert row is not None
    return int(row[0])


def insert_call(conn: psycopg.Connection, event_id: int, pipeline: str, cost: str, tokens: tuple[int, int]) -> None:
    conn.execute(
        "INSERT INTO hookline.llm_calls (event_id, pipeline, model, status, request, input_tokens, output_tokens,"
        " cost_usd, latency_ms) VALUES (%s, %s, 'claude-haiku-5-5', 'succeeded', '{}', %s, %s, %s, 120)",
        (event_id, pipeline, tokens[0], tokens[1], cost),
    )


@pytest.fixture
async def admin(db_url: str, monkeypatch: pytest.MonkeyPatch) -> AsyncIterator[httpx.AsyncClient]:
    monkeypatch.setenv("HL_STRIPE_SECRET", "whsec_x")
    monkeypatch.setenv("HL_GITHUB_SECRET", "gh")
    async with web_server(make_settings(db_url, admin_token=TOKEN), admin_config()) as base:
        headers = {"Authorization": f"Bearer {TOKEN}"}
        async with httpx.AsyncClient(base_url=base, headers=headers) as client:
            yield client


async def test_admin_is_absent_without_a_token(db_url: str, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HL_STRIPE_SECRET", "whsec_x")
    monkeypatch.setenv("HL_GITHUB_SECRET", "gh")
    async with web_server(make_settings(db_url), admin_config()) as base, httpx.AsyncClient(base_url=base) as c:
        for path in ("/admin", "/admin/", "/admin/login", "/admin/api/events", "/admin/api/stats", "/admin/x"):
            r = await c.get(path, headers={"Authorization": f"Bearer {TOKEN}"})
            assert r.status_code == 404, path
        assert (await c.post("/admin/api/replay", json={"status": "dead"})).status_code == 404
        spec = (await c.get("/openapi.json")).json()
        assert "/webhooks/{source}" in spec["paths"]
        assert not [p for p in spec["paths"] if p.startswith("/admin")]


async def test_the_api_refuses_no_token_and_a_wrong_token(admin: httpx.AsyncClient) -> None:
    for headers in ({"Authorization": ""}, {"Authorization": "Bearer wrong"}, {"Authorization": f"Basic {TOKEN}"}):
        r = await admin.get("/admin/api/events", headers=headers)
        assert r.status_code == 401, headers
        assert r.headers["www-authenticate"].startswith("Bearer")
        assert TOKEN not in r.text
    r = await admin.post("/admin/api/replay", json={"status": "dead"}, headers={"Authorization": "Bearer nope"})
    assert r.status_code == 401
    assert (await admin.get("/admin/api/events")).status_code == 200


async def test_filters_and_cursor_pagination(admin: httpx.AsyncClient, conn: psycopg.Connection) -> None:
    old = datetime.now(UTC) - timedelta(days=2)
    ids = [
        insert_event(conn, "stripe", "a", tenant="acme", received_at=old),
        insert_event(conn, "stripe", "b", tenant="acme", status="dead"),
        insert_event(conn, "github", "c", tenant="globex", event_type="issues.opened"),
        insert_event(conn, "stripe", "d", tenant="globex"),
        insert_event(conn, "stripe", "e", tenant="acme"),
    ]
    seen: list[int] = []
    cursor: str | None = None
    pages = 0
    while True:
        params = {"limit": "2", **({"cursor": cursor} if cursor else {})}
        body = (await admin.get("/admin/api/events", params=params)).json()
        seen += [e["id"] for e in body["events"]]
        pages += 1
        cursor = body["next_cursor"]
        if cursor is None:
            break
    assert seen == sorted(ids, reverse=True) and pages == 3
    # a last page that is exactly full says it is the last (no cursor to an empty page)
    first = (await admin.get("/admin/api/events", params={"source": "stripe", "limit": "2"})).json()
    last = (
        await admin.get("/admin/api/events", params={"source": "stripe", "limit": "2", "cursor": first["next_cursor"]})
    ).json()
    assert len(last["events"]) == 2 and last["next_cursor"] is None

    async def ids_for(**params: str) -> list[int]:
        r = await admin.get("/admin/api/events", params=params)
        assert r.status_code == 200, r.text
        return [e["id"] for e in r.json()["events"]]

    assert await ids_for(source="github") == [ids[2]]
    assert await ids_for(tenant="acme") == [ids[4], ids[1], ids[0]]
    assert await ids_for(status="dead") == [ids[1]]
    assert await ids_for(type="issues.opened") == [ids[2]]
    since = (datetime.now(UTC) - timedelta(days=1)).isoformat()
    assert await ids_for(source="stripe", tenant="acme", since=since) == [ids[4], ids[1]]
    assert await ids_for(until=since) == [ids[0]]
    for bad in ({"status": "bogus"}, {"since": "yesterday"}, {"limit": "0"}, {"limit": "501"}, {"cursor": "x"}):
        r = await admin.get("/admin/api/events", params=bad)
        assert r.status_code == 400 and r.json()["error"] == "bad_request", bad


@pytest.mark.parametrize(
    ("method", "path", "params", "unknown"),
    [
        ("GET", "/admin/api/events", {"event_type": "zzz"}, "event_type"),
        ("GET", "/admin/api/events", {"source": "stripe", "sincee": "2026-01-01"}, "sincee"),
        ("GET", "/admin/api/dead-letters", {"source": "stripe"}, "source"),
        ("GET", "/admin/api/events/1", {"verbose": "1"}, "verbose"),
        ("GET", "/admin/api/stats", {"tenant": "acme"}, "tenant"),
        ("GET", "/admin/api/cost", {"tenant": "acme"}, "tenant"),
        ("POST", "/admin/api/events/1/replay", {"force": "true"}, "force"),
        ("POST", "/admin/api/replay", {"source": "stripe"}, "source"),
    ],
)
async def test_an_unknown_query_parameter_is_400_naming_it(
    admin: httpx.AsyncClient, conn: psycopg.Connection, method: str, path: str, params: dict[str, str], unknown: str
) -> None:
    """A misspelt filter (the filter is ``type``) must not answer with everything, nor widen a replay."""
    insert_event(conn, "stripe", "q1", status="dead")
    r = await admin.request(method, path, params=params, json={"type": "invoice.payment_failed"})
    assert r.status_code == 400, r.text
    assert r.json()["error"] == "bad_request" and f"unknown parameter(s) ['{unknown}']" in r.json()["detail"], r.text
    jobs = conn.execute("SELECT count(*) FROM procrastinate_jobs").fetchone()
    assert jobs == (0,)  # nothing was replayed


async def test_detail_masks_the_redacted_fields(admin: httpx.AsyncClient, conn: psycopg.Connection) -> None:
    payload = {
        "type": "invoice.payment_failed",
        "data": {
            "object": {"customer_email": "jane@example.com", "amount_due": 1200},
            "items": [{"card": "4242", "sku": "x"}, {"card": "5555", "sku": "y"}],
        },
    }
    event_id = insert_event(conn, "stripe", "evt_1", payload=payload, status="processing")
    # a consistent story: the 120 ms call (the view places it at its start) begins after the event did
    conn.execute(
        "UPDATE hookline.events SET received_at = clock_timestamp() - interval '1 s', "
        "started_at = clock_timestamp() - interval '0.5 s' WHERE id = %s",
        (event_id,),
    )
    insert_call(conn, event_id, "recovery", "0.00123", (100, 20))
    conn.execute(
        "INSERT INTO hookline.action_runs (event_id, pipeline, action, action_type, status, idempotency_key,"
        " finished_at) VALUES (%s, 'recovery', 'http#0', 'http', 'succeeded', 'k', clock_timestamp())",
        (event_id,),
    )
    conn.execute(
        "UPDATE hookline.events SET status = 'succeeded', finished_at = clock_timestamp() WHERE id = %s", (event_id,)
    )
    r = await admin.get(f"/admin/api/events/{event_id}")
    assert r.status_code == 200
    body = r.json()
    # the card numbers as JSON strings: a bare 4242 can turn up in a timestamp's microseconds
    assert "jane@example.com" not in r.text and '"4242"' not in r.text
    obj = body["event"]["payload"]["data"]
    assert obj["object"] == {"customer_email": "[redacted]", "amount_due": 1200}
    assert obj["items"] == [{"card": "[redacted]", "sku": "x"}, {"card": "[redacted]", "sku": "y"}]
    steps = [s["step"] for s in body["timeline"] if s["step"] != "queued"]  # the view adds a queued step
    assert steps == ["received", "started", "model_call", "action", "finished"]
    call = next(s for s in body["timeline"] if s["step"] == "model_call")
    assert (call["input_tokens"], call["output_tokens"], call["cost_usd"]) == (100, 20, 0.00123)
    assert [c["pipeline"] for c in body["calls"]] == ["recovery"] and body["actions"][0]["action"] == "http#0"
    stored = conn.execute("SELECT payload->'data'->'object'->>'customer_email' FROM hookline.events").fetchall()
    assert stored == [("jane@example.com",)], "redaction is for display only"
    assert (await admin.get("/admin/api/events/999999")).status_code == 404
    assert (await admin.get("/admin/api/events/abc")).status_code == 400


async def test_dead_letters_and_replay(admin: httpx.AsyncClient, conn: psycopg.Connection) -> None:
    dead = [insert_event(conn, "stripe", f"dead{i}", status="dead") for i in range(3)]
    insert_event(conn, "github", "ok", status="succeeded")
    body = (await admin.get("/admin/api/dead-letters", params={"limit": "2"})).json()
    assert [d["event_id"] for d in body["dead_letters"]] == [dead[2], dead[1]]
    more = (await admin.get("/admin/api/dead-letters", params={"cursor": body["next_cursor"]})).json()
    assert [d["event_id"] for d in more["dead_letters"]] == [dead[0]] and more["next_cursor"] is None
    assert more["dead_letters"][0]["error"] == "boom"

    r = await admin.post(f"/admin/api/events/{dead[0]}/replay", json={"recompute": True})
    assert r.status_code == 202 and r.json()["event_id"] == dead[0] and r.json()["job_id"] > 0
    status = conn.execute("SELECT status, replays, detail FROM hookline.events WHERE id = %s", (dead[0],)).fetchone()
    assert status == ("queued", 1, "replay, recompute")
    again = await admin.post(f"/admin/api/events/{dead[0]}/replay")
    assert again.status_code == 409 and "not finished" in again.json()["detail"]
    assert (await admin.post("/admin/api/events/999999/replay")).status_code == 404
    assert (await admin.post(f"/admin/api/events/{dead[1]}/replay", json={"force": "yes"})).status_code == 400
    typo = await admin.post(f"/admin/api/events/{dead[1]}/replay", json={"recompte": True})
    assert typo.status_code == 400 and "recompte" in typo.json()["detail"]
    # a misspelt filter would have widened the bulk replay to every dead stripe event: refused, nothing replayed
    typo = await admin.post("/admin/api/replay", json={"source": "stripe", "status": "dead", "sincee": "2026-01-01"})
    assert typo.status_code == 400 and "sincee" in typo.json()["detail"]

    bulk = await admin.post("/admin/api/replay", json={"source": "stripe", "status": "dead"})
    assert bulk.status_code == 202 and bulk.json()["replayed"] == 2
    assert sorted(e["event_id"] for e in bulk.json()["events"]) == dead[1:]
    assert (await admin.post("/admin/api/replay", json={})).status_code == 400
    assert (await admin.post("/admin/api/replay", json={"status": "queued"})).status_code == 400
    assert (await admin.post("/admin/api/replay", content=b"[1]", headers=_json())).status_code == 400
    jobs = conn.execute("SELECT count(*) FROM procrastinate_jobs WHERE task_name = 'hookline:process_event'")
    assert jobs.fetchone() == (3,)


def _json() -> dict[str, str]:
    return {"content-type": "application/json"}


async def test_stats_and_cost_per_tenant_and_pipeline(admin: httpx.AsyncClient, conn: psycopg.Connection) -> None:
    a = insert_event(conn, "stripe", "a", tenant="acme")
    b = insert_event(conn, "stripe", "b", tenant="acme", status="dead")
    c = insert_event(conn, "github", "c")
    insert_call(conn, a, "recovery", "0.25", (1000, 100))
    insert_call(conn, b, "recovery", "0.50", (2000, 200))
    insert_call(conn, b, "triage", "0.125", (10, 1))
    insert_call(conn, c, "triage", "1.00", (5, 5))
    conn.execute("UPDATE hookline.llm_calls SET created_at = now() - interval '3 days' WHERE event_id = %s", (c,))

    stats = (await admin.get("/admin/api/stats")).json()
    assert stats["events_by_status"] == {"succeeded": 2, "dead": 1}
    assert stats["last_hour"]["received"] == 3 and stats["last_hour"]["finished"] == 3

    today = (await admin.get("/admin/api/cost")).json()
    assert today["total_usd"] == 0.875
    got = {(r["tenant"], r["pipeline"]): (r["calls"], r["input_tokens"], r["cost_usd"]) for r in today["rows"]}
    assert got == {("acme", "recovery"): (2, 3000, 0.75), ("acme", "triage"): (1, 10, 0.125)}
    since = (datetime.now(UTC) - timedelta(days=4)).isoformat()
    week = (await admin.get("/admin/api/cost", params={"since": since, "until": datetime.now(UTC).isoformat()})).json()
    assert week["total_usd"] == 1.875 and ("", "triage") in {(r["tenant"], r["pipeline"]) for r in week["rows"]}
    empty = await admin.get("/admin/api/cost", params={"since": since, "until": since})
    assert empty.status_code == 200 and empty.json()["rows"] == [] and empty.json()["total_usd"] == 0
    assert (await admin.get("/admin/api/cost", params={"until": ""})).status_code == 400


async def test_cost_since_alone_runs_to_now_and_counts_what_costs_daily_counts(
    admin: httpx.AsyncClient, conn: psycopg.Connection
) -> None:
    a = insert_event(conn, "stripe", "a", tenant="acme")
    b = insert_event(conn, "stripe", "b", tenant="acme")
    insert_call(conn, a, "recovery", "0.25", (1000, 100))  # today
    insert_call(conn, b, "recovery", "0.50", (2000, 200))
    conn.execute("UPDATE hookline.llm_calls SET created_at = now() - interval '3 days' WHERE event_id = %s", (b,))
    # a dry run (never sent) and a simulated call (no cost), as the worker stores them
    conn.execute(
        "INSERT INTO hookline.llm_calls (event_id, pipeline, model, status, request) VALUES"
        " (%s, 'triage', 'claude-haiku-5-5', 'dry_run', '{}'), (%s, 'triage', 'claude-haiku-5-5', 'simulated', '{}')",
        (a, a),
    )
    before = datetime.now(UTC)
    since = before - timedelta(days=4)
    got = (await admin.get("/admin/api/cost", params={"since": since.isoformat()})).json()
    assert got["total_usd"] == 0.75  # not only the day after since: up to now
    assert datetime.fromisoformat(got["since"]) == since
    assert datetime.fromisoformat(got["until"]) >= before  # the answer says what it covered
    calls = {(r["tenant"], r["pipeline"]): r["calls"] for r in got["rows"]}
    assert calls == {("acme", "recovery"): 2, ("acme", "triage"): 1}  # the simulated call, not the dry run
    today = (await admin.get("/admin/api/cost")).json()
    assert {(r["pipeline"], r["calls"]) for r in today["rows"]} == {("recovery", 1), ("triage", 1)}
    daily = conn.execute(
        "SELECT pipeline, sum(calls)::int FROM hookline.costs_daily WHERE day = (now() AT TIME ZONE 'UTC')::date"
        " GROUP BY 1"
    ).fetchall()
    assert set(daily) == {(r["pipeline"], r["calls"]) for r in today["rows"]}  # the same calls as costs_daily


async def test_openapi_describes_every_admin_route(admin: httpx.AsyncClient) -> None:
    spec = (await admin.get("/openapi.json")).json()
    assert (
        spec["openapi"].startswith("3.") and spec["components"]["securitySchemes"]["adminToken"]["scheme"] == "bearer"
    )
    admin_ops = {(p, m) for p, item in spec["paths"].items() if p.startswith("/admin/api") for m in item}
    assert admin_ops == {
        ("/admin/api/events", "get"),
        ("/admin/api/events/{event_id}", "get"),
        ("/admin/api/events/{event_id}/replay", "post"),
        ("/admin/api/events/{event_id}/dismiss", "post"),
        ("/admin/api/dead-letters", "get"),
        ("/admin/api/replay", "post"),
        ("/admin/api/dismiss", "post"),
        ("/admin/api/stats", "get"),
        ("/admin/api/cost", "get"),
    }
    for path, method in admin_ops:
        op = spec["paths"][path][method]
        assert op["security"] == [{"adminToken": []}] and "401" in op["responses"], path
        unauthenticated = await admin.request(
            method.upper(), path.replace("{event_id}", "1"), headers={"Authorization": ""}
        )
        assert unauthenticated.status_code == 401


async def test_admin_answers_are_never_cached(admin: httpx.AsyncClient, conn: psycopg.Connection) -> None:
    """Payloads, errors and costs are private: no browser or proxy cache may keep an admin answer."""
    dead = insert_event(conn, "stripe", "cache-1", status="dead", payload={"data": {"object": {"amount_due": 5}}})
    answers = [
        await admin.get("/admin/api/events"),
        await admin.get(f"/admin/api/events/{dead}"),
        await admin.get("/admin/api/dead-letters"),
        await admin.get("/admin/api/stats"),
        await admin.get("/admin/api/cost"),
        await admin.post(f"/admin/api/events/{dead}/replay"),
        await admin.post("/admin/api/replay", json={"source": "github"}),
    ]
    for r in answers:
        assert r.status_code in (200, 202), (r.request.url, r.text)
        assert r.headers.get("cache-control") == "no-store", r.request.url
        assert r.headers.get("x-content-type-options") == "nosniff", r.request.url
