"""sql/roles.sql: the web process and the worker run end to end under their least-privilege roles,
and each role is refused what it must not do (issue 12)."""

from __future__ import annotations

import json
import logging
import os
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path

import httpx
import psycopg
import pytest

from app.signatures import sign
from tests.acceptance.test_observability import of, pick, scrape
from tests.chaos_support import query
from tests.conftest import PgServer
from tests.harness import config_from, make_settings, rows, wait_for_status, web_server, worker_task
from worker import schedules
from worker.runtime import Runtime

ROLES_SQL = (Path(__file__).resolve().parents[2] / "sql" / "roles.sql").read_text()
SECRET = "whsec_" + "cm9sZXMtdGVzdC1zZWNyZXQtMDEyMzQ1Njc4OQ=="


@pytest.fixture
def logins(conn: psycopg.Connection, pg_server: PgServer, db_url: str) -> Iterator[dict[str, str]]:
    """Run sql/roles.sql as the owner, then one login role per group role; yields their URLs."""
    conn.execute(ROLES_SQL)
    conn.execute(ROLES_SQL)  # idempotent
    dbname = conn.info.dbname
    suffix = os.getpid()
    urls = {}
    for group in ("web", "worker", "readonly"):
        login = f"hl_{group}_{suffix}"
        conn.execute(f'DROP ROLE IF EXISTS "{login}"')
        conn.execute(f'CREATE ROLE "{login}" LOGIN PASSWORD \'pw-{login}\' IN ROLE "hookline_{group}"')
        server = PgServer(pg_server.host, pg_server.port, login, f"pw-{login}")
        urls[group] = server.url(dbname)
    yield urls
    for group in ("web", "worker", "readonly"):
        login = f"hl_{group}_{suffix}"
        conn.execute(f"SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE usename = '{login}'")
        conn.execute(f'DROP OWNED BY "{login}"')
        conn.execute(f'DROP ROLE IF EXISTS "{login}"')


async def test_web_and_worker_run_under_their_roles(
    db_url: str, logins: dict[str, str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("HL_ROLES_SECRET", SECRET)
    config = config_from(
        {
            "sources": {"sw": {"provider": "standard_webhooks", "secrets_env": ["HL_ROLES_SECRET"]}},
            "pipelines": {
                "p": {
                    "source": "sw",
                    "events": ["*"],
                    "instructions": "Summarize.",
                    "output_schema": {"type": "object", "properties": {"s": {"type": "string"}}},
                }
            },
        }
    )
    web = make_settings(logins["web"])
    worker = make_settings(logins["worker"])
    body = json.dumps({"type": "thing.happened", "n": 1}).encode()
    async with web_server(web, config) as base, worker_task(worker, config), httpx.AsyncClient() as client:
        assert (await client.get(f"{base}/readyz")).status_code == 200
        resp = await client.post(
            f"{base}/webhooks/sw", content=body, headers=sign("standard_webhooks", secret=SECRET, body=body)
        )
        assert resp.status_code == 200, resp.text
        event = await wait_for_status(db_url, resp.json()["event_id"])
        metrics = await client.get(f"{base}/metrics")
    assert event["status"] == "succeeded" and event["dry_run"], event  # dry run: no API key
    samples = scrape(metrics.text)  # not a substring: the HELP line reads "hookline_database_up 1 when …"
    assert pick(samples, "hookline_database_up") == 1, metrics.text
    assert pick(samples, "hookline_dead_letters") == 0 and ("hookline_dead_letters", frozenset()) in samples
    assert rows(logins["readonly"], "SELECT count(*) FROM hookline.events") == [(1,)]


async def test_the_worker_role_stores_a_schedules_firing(logins: dict[str, str], db_url: str) -> None:
    """A schedule's firing is an event the worker inserts (sql/queries/schedules.sql insert_firing):
    hookline_worker had no INSERT on hookline.events, so every scheduled pipeline failed under it."""
    config = config_from(
        {
            "schedules": {"daily": {"cron": "0 9 * * *", "pipeline": "digest"}},
            "pipelines": {"digest": {"source": "schedule", "instructions": "x", "output_schema": {"type": "object"}}},
        }
    )
    rt = Runtime.build(make_settings(logins["worker"]), config)
    await rt.open()
    try:
        firing = await schedules.fire(rt, config.schedules["daily"], datetime(2020, 1, 2, 9, tzinfo=UTC))
    finally:
        await rt.close()
    assert firing is not None
    assert rows(db_url, "SELECT source, event_type, status FROM hookline.events") == [("schedule", "daily", "queued")]
    assert rows(db_url, "SELECT count(*) FROM procrastinate_jobs") == [(1,)]  # its job, deferred by the trigger


@pytest.mark.parametrize(
    ("group", "statement"),
    [
        ("web", "UPDATE hookline.events SET status = 'dead'"),
        ("web", "DELETE FROM hookline.events"),
        ("web", "SELECT * FROM hookline.llm_calls"),
        ("web", "CREATE TABLE hookline.x (id int)"),
        ("worker", "DELETE FROM hookline.events"),
        ("worker", "TRUNCATE procrastinate_jobs"),
        ("worker", "DROP TABLE hookline.action_runs"),
        ("readonly", "INSERT INTO hookline.events (source, delivery_id) VALUES ('a', 'b')"),
        ("readonly", "UPDATE procrastinate_jobs SET status = 'failed'"),
    ],
)
def test_each_role_is_refused_what_it_must_not_do(logins: dict[str, str], group: str, statement: str) -> None:
    with psycopg.connect(logins[group]) as c, pytest.raises(psycopg.errors.InsufficientPrivilege):
        c.execute(statement)


async def test_admin_writes_under_the_web_roles_say_which_grant_is_missing(
    conn: psycopg.Connection, db_url: str, logins: dict[str, str]
) -> None:
    """The web process under hookline_web (+ hookline_readonly for the admin reads) may not replay or
    dismiss: each admin write (API, bulk form, dashboard) answers a JSON error naming the grant to add,
    not a bare 500 ``Internal Server Error``; an admin read under hookline_web alone names its grant too.
    The advice is right: with hookline_worker granted, the same writes succeed."""
    token = "t" * 24
    auth = {"authorization": f"Bearer {token}", "accept": "application/json"}
    ((event_id,),) = query(
        db_url,
        "INSERT INTO hookline.events (source, delivery_id, event_type, status, payload) "
        "VALUES ('sw', 'd-1', 'thing.happened', 'dead', '{}') RETURNING id",
    )
    login = psycopg.conninfo.conninfo_to_dict(logins["web"])["user"]
    writes = [
        (f"/admin/api/events/{event_id}/replay", {}),
        ("/admin/api/replay", {"source": "sw"}),
        (f"/admin/api/events/{event_id}/dismiss", {}),
        ("/admin/api/dismiss", {"source": "sw"}),
        (f"/admin/events/{event_id}/replay", None),  # the dashboard's Replay button (a form)
    ]
    settings = make_settings(logins["web"], admin_token=token)
    async with web_server(settings, config_from({})) as base, httpx.AsyncClient(headers=auth) as client:
        read = await client.get(f"{base}/admin/api/events/{event_id}")
        assert read.status_code == 500, read.text
        assert read.json()["error"] == "insufficient_privilege" and "hookline_readonly" in read.json()["detail"]
        conn.execute(f'GRANT hookline_readonly TO "{login}"')
        assert (await client.get(f"{base}/admin/api/events/{event_id}")).status_code == 200
        for path, body in writes:
            form = {"recompute": "0"}
            resp = await (
                client.post(base + path, json=body) if body is not None else client.post(base + path, data=form)
            )
            assert resp.status_code == 500, (path, resp.text)
            answer = resp.json()
            assert answer["error"] == "insufficient_privilege", (path, answer)
            assert "grant hookline_worker" in answer["detail"] and "permission denied" not in answer["detail"]
        conn.execute(f'GRANT hookline_worker TO "{login}"')
        assert (await client.post(f"{base}/admin/api/events/{event_id}/replay")).status_code == 202


async def test_readyz_under_a_login_without_its_grant_names_the_role(
    conn: psycopg.Connection, logins: dict[str, str]
) -> None:
    """A web login that may not read hookline.schema_migrations is not ready, and /readyz says why:
    ``insufficient_privilege`` naming hookline_web (it read ``not migrated``), with Retry-After as
    every 503; the database's own message is never passed on."""
    conn.execute("REVOKE SELECT ON hookline.schema_migrations FROM hookline_web")
    settings = make_settings(logins["web"], retry_after_seconds=4)
    async with web_server(settings, config_from({})) as base, httpx.AsyncClient() as client:
        ready = await client.get(f"{base}/readyz")
    assert ready.status_code == 503 and ready.headers["retry-after"] == "4", ready.text
    answer = ready.json()
    assert answer["database"] == "insufficient_privilege" and "grant hookline_web" in answer["detail"], answer
    assert "permission denied" not in ready.text


async def test_metrics_under_a_login_missing_one_grant_keep_the_database_up_and_log_why(
    conn: psycopg.Connection, logins: dict[str, str], caplog: pytest.LogCaptureFixture
) -> None:
    """A web login that may not read hookline.metric_totals: the figures of that query are left out,
    every other one is scraped, and hookline_database_up stays 1 (Postgres answered; it read 0, the
    whole scrape's figures gone, and nothing said why). The refusal is logged once for two scrapes,
    its class and SQLSTATE only."""
    conn.execute("REVOKE SELECT ON hookline.metric_totals FROM hookline_web")
    caplog.set_level(logging.WARNING, logger="hookline.metrics")
    async with web_server(make_settings(logins["web"]), config_from({})) as base, httpx.AsyncClient() as client:
        first = await client.get(f"{base}/metrics")
        second = await client.get(f"{base}/metrics")
    assert first.status_code == second.status_code == 200
    samples = scrape(second.text)
    assert pick(samples, "hookline_database_up") == 1, second.text
    assert ("hookline_dead_letters", frozenset()) in samples  # the other queries' figures are there
    assert of(samples, "hookline_events_finished_total") == {}
    logged = [r.getMessage() for r in caplog.records if r.name == "hookline.metrics"]
    assert len(logged) == 1 and "metric_totals" in logged[0], logged
    assert "InsufficientPrivilegeError (SQLSTATE 42501)" in logged[0] and "permission denied" not in logged[0]
