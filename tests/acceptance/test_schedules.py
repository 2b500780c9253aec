"""Scheduled pipelines: two real workers, one firing per scheduled time, its digest reaching the model."""

from __future__ import annotations

import asyncio
import json
from datetime import UTC, datetime
from typing import Any

import psycopg
import pytest

from app.cli.main import main
from tests.chaos_support import query, wait_until
from tests.fakes.messages_api import FakeMessagesAPI
from tests.harness import config_from, make_settings, worker_task
from worker import schedules

SCHEDULES = {
    "sources": {"stripe": {"provider": "stripe", "secrets_env": ["HL_STRIPE_SECRET"]}},
    "pipelines": {
        "digest": {
            "source": "schedule",
            "instructions": "Summarize the window's payment failures for the team.",
            "output_schema": {"type": "object", "properties": {"summary": {"type": "string"}}, "required": ["summary"]},
        }
    },
    "schedules": {
        "digest-3s": {
            "cron": "* * * * * */3",  # every 3 seconds (6th field: seconds, as procrastinate reads it)
            "pipeline": "digest",
            "window": "1h",
            "filter": {"source": "stripe", "status": ["dead", "succeeded"]},
            "examples": 2,
            "example_fields": ["data.object.amount_due"],
        }
    },
}


def seed(db_url: str) -> None:
    """Stripe events of the last hour (already finished: the workers have nothing to do with them)."""
    for i, (status, etype) in enumerate(
        [
            ("dead", "invoice.payment_failed"),
            ("dead", "invoice.payment_failed"),
            ("succeeded", "invoice.paid"),
            ("skipped", "customer.created"),
        ]
    ):
        query(
            db_url,
            "INSERT INTO hookline.events (source, delivery_id, event_type, status, payload, received_at) "
            "VALUES ('stripe', %s, %s, %s, %s, now() - interval '10 minutes') RETURNING id",
            f"evt_seed_{i}",
            etype,
            status,
            json.dumps({"type": etype, "data": {"object": {"amount_due": 1000 * (i + 1), "secret_note": "x"}}}),
        )


async def test_a_schedule_fires_once_per_time_with_two_workers_and_its_digest_reaches_the_model(
    db_url: str, fake: FakeMessagesAPI, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("HL_STRIPE_SECRET", "whsec_x")
    config = config_from(SCHEDULES)
    settings = make_settings(db_url, anthropic_api_key="sk-test", anthropic_base_url=fake.base_url)
    seed(db_url)

    def fired_and_done() -> bool:
        got = query(db_url, "SELECT count(*) FROM hookline.events WHERE source = 'schedule' AND status = 'succeeded'")
        return int(got[0][0]) >= 2

    async with worker_task(settings, config), worker_task(settings, config):
        await wait_until(
            lambda: query(db_url, "SELECT count(*) FROM procrastinate_workers")[0][0] == 2,
            timeout=20,
            what="two workers registered",
        )
        await wait_until(fired_and_done, timeout=30, what="two firings processed")

    firings = query(
        db_url,
        "SELECT id, delivery_id, event_type, status, payload FROM hookline.events "
        "WHERE source = 'schedule' ORDER BY id",
    )
    jobs = query(
        db_url,
        "SELECT args->>'timestamp', count(*) FROM procrastinate_jobs WHERE task_name = 'hookline:fire_schedule' "
        "GROUP BY 1 ORDER BY 1",
    )
    assert all(n == 1 for _, n in jobs), f"a scheduled time was deferred more than once: {jobs}"
    assert len(firings) == len(jobs), "one event row per scheduled time"
    for _id, delivery_id, event_type, _status, payload in firings:
        assert event_type == "digest-3s" and delivery_id.startswith("digest-3s@") and delivery_id.endswith("Z")
        assert payload["scheduled_at"] == delivery_id.split("@")[1]

    done = [f for f in firings if f[3] == "succeeded"]
    calls = fake.calls_to("/v1/messages")
    per_event = query(db_url, "SELECT event_id, count(*) FROM hookline.llm_calls GROUP BY event_id HAVING count(*) > 1")
    assert per_event == [] and len(calls) >= len(done) >= 2
    digest: dict[str, Any] = json.loads(calls[0].body["messages"][0]["content"])["fields"]
    assert digest["schedule"] == "digest-3s" and digest["window"]["length"] == "1h"
    assert digest["total"] == 3 and digest["by_status"] == {"dead": 2, "succeeded": 1}
    assert {(c["event_type"], c["status"], c["count"]) for c in digest["counts"]} == {
        ("invoice.payment_failed", "dead", 2),
        ("invoice.paid", "succeeded", 1),
    }
    assert [e["fields"] for e in digest["examples"]] == [
        {"data.object.amount_due": 3000},
        {"data.object.amount_due": 2000},
    ]
    assert "secret_note" not in json.dumps(digest)


def test_hookline_schedules_lists_the_next_run(
    tmp_path: Any, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    path = tmp_path / "hookline.toml"
    path.write_text(
        '[pipelines.digest]\nsource = "schedule"\ninstructions = "x"\noutput_schema = { type = "object" }\n'
        '[schedules.daily-digest]\ncron = "0 9 * * *"\ntimezone = "Europe/Berlin"\npipeline = "digest"\n'
    )
    monkeypatch.setenv("HOOKLINE_CONFIG", str(path))
    assert main(["schedules", "--next", "2"]) == 0
    out = capsys.readouterr().out.splitlines()
    assert out[0].split()[:3] == ["SCHEDULE", "CRON", "TIMEZONE"]
    assert (
        out[1].startswith("daily-digest")
        and "Europe/Berlin" in out[1]
        and out[1].count("+01:00") + out[1].count("+02:00") == 2
    )


def execute(db_url: str, sql: str) -> None:
    with psycopg.connect(db_url, autocommit=True) as conn:
        conn.execute(sql)


OUTAGE = {
    "pipelines": SCHEDULES["pipelines"],
    "schedules": {"every-3s": {"cron": "* * * * * */3", "pipeline": "digest", "window": "1h"}},
}


async def test_a_firing_survives_a_database_outage_longer_than_five_tries_and_lands_once(
    db_url: str, fake: FakeMessagesAPI, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The database refuses the firing's insert as a server shutting down does (SQLSTATE 57P01, raised by
    a trigger of the real table) for longer than five tries take: the first scheduled time is still
    fired, once, when it is back (it is well under the 10 minutes after which a late firing is skipped).
    The backoff starts at a quarter second here instead of a second (0.25, 0.5 … 4 s between tries:
    the sixth try comes 7.75 s after the first), so a 6 s outage outlasts five tries as 25 s would
    with the real one."""
    monkeypatch.setattr(schedules, "FIRST_WAIT", 0.25)
    settings = make_settings(db_url, anthropic_api_key="sk-test", anthropic_base_url=fake.base_url)
    execute(
        db_url,
        "CREATE FUNCTION public.outage() RETURNS trigger LANGUAGE plpgsql AS $$ BEGIN "
        "RAISE EXCEPTION 'terminating connection due to administrator command' USING ERRCODE = 'admin_shutdown'; "
        "END $$; CREATE TRIGGER outage BEFORE INSERT ON hookline.events FOR EACH ROW "
        "WHEN (NEW.source = 'schedule') EXECUTE FUNCTION public.outage()",
    )

    def first_job() -> tuple[Any, ...] | None:
        got = query(
            db_url,
            "SELECT id, (args->>'timestamp')::bigint, status::text, attempts FROM procrastinate_jobs "
            "WHERE task_name = 'hookline:fire_schedule' ORDER BY (args->>'timestamp')::bigint LIMIT 1",
        )
        return got[0] if got else None

    async with worker_task(settings, config_from(OUTAGE)):
        job = await wait_until(first_job, timeout=30, what="a first firing")
        await asyncio.sleep(6)  # the outage
        execute(db_url, "DROP TRIGGER outage ON hookline.events")
        done = await wait_until(
            lambda: (j := first_job()) and j[2] in ("succeeded", "failed") and j,
            timeout=90,
            what="the first firing's job to finish",
        )
        assert done[0] == job[0] and done[3] > 5, f"the outage did not outlast the old 5 retries: {done}"
        assert done[2] == "succeeded", f"the firing was given up during a 6 s outage: {done}"
    stamp = datetime.fromtimestamp(job[1], UTC).isoformat().replace("+00:00", "Z")
    firings = query(
        db_url, "SELECT delivery_id, count(*) FROM hookline.events WHERE source = 'schedule' GROUP BY 1 ORDER BY 1"
    )
    assert (f"every-3s@{stamp}", 1) in firings, firings
    assert all(n == 1 for _, n in firings)
