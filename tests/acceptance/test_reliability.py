"""Retries, dead letters, replay, ordering, latest_wins, timeouts and retention, end to end."""

from __future__ import annotations

import asyncio
import itertools
import json
import os
import sys
import time
from typing import Any

import httpx
import psycopg
import pytest

from app.core.config import Config
from app.signatures import sign
from tests.fakes.messages_api import FakeMessagesAPI, error, hang, invalid_json_reply, rate_limited, reply
from tests.harness import Receiver, config_from, make_settings, rows, wait_for_status, web_server, worker_task

SECRET = "whsec_reliability_tests"
GOOD = {"subject": "Hello", "body": "World"}


@pytest.fixture(autouse=True)
def env(monkeypatch: pytest.MonkeyPatch, receiver: Receiver) -> None:
    monkeypatch.setenv("HL_STRIPE_SECRET", SECRET)
    monkeypatch.setenv("HL_CRM_URL", receiver.url)


def make_config(**pipeline_over: Any) -> Config:
    pipeline: dict[str, Any] = {
        "source": "stripe",
        "events": ["invoice.*"],
        "fields": ["type", "data.object.note"],
        "instructions": "Write to the customer.",
        "output_schema": {
            "type": "object",
            "properties": {"subject": {"type": "string"}, "body": {"type": "string"}},
            "required": ["subject", "body"],
            "additionalProperties": False,
        },
        "retry": {"max_attempts": 3, "backoff_seconds": 0.05, "max_backoff_seconds": 2, "jitter": False},
        "actions": [{"type": "http", "url_env": "HL_CRM_URL"}],
    }
    pipeline.update(pipeline_over)
    return config_from(
        {
            "sources": {
                "stripe": {
                    "provider": "stripe",
                    "secrets_env": ["HL_STRIPE_SECRET"],
                    "ordering_key": "json:data.object.customer",
                }
            },
            "pipelines": {"recovery": pipeline},
        }
    )


def event_body(evt: str, *, customer: str | None = None, created: int | None = None, note: str = "") -> bytes:
    obj: dict[str, Any] = {"note": note or evt}
    if customer:
        obj["customer"] = customer
    return json.dumps(
        {"id": evt, "type": "invoice.payment_failed", "created": created or int(time.time()), "data": {"object": obj}}
    ).encode()


async def deliver(client: httpx.AsyncClient, base: str, body: bytes) -> int:
    resp = await client.post(
        f"{base}/webhooks/stripe",
        content=body,
        headers={**sign("stripe", secret=SECRET, body=body), "content-type": "application/json"},
    )
    assert resp.status_code == 200, resp.text
    return int(resp.json()["event_id"])


def settings_for(db_url: str, fake: FakeMessagesAPI, **over: Any) -> Any:
    return make_settings(db_url, anthropic_api_key="sk-test", anthropic_base_url=fake.base_url, **over)


async def process_one(db_url: str, fake: FakeMessagesAPI, config: Config, body: bytes) -> dict[str, Any]:
    """Real web and worker: deliver one signed event and wait until it is finished."""
    settings = settings_for(db_url, fake)
    async with web_server(settings, config) as base, worker_task(settings, config):
        async with httpx.AsyncClient() as client:
            event_id = await deliver(client, base, body)
        return await wait_for_status(db_url, event_id)


async def test_rate_limit_is_retried_honouring_retry_after(
    db_url: str, fake: FakeMessagesAPI, receiver: Receiver
) -> None:
    config = make_config()
    fake.enqueue(rate_limited(retry_after=1), reply(GOOD))
    started = time.monotonic()
    event = await process_one(db_url, fake, config, event_body("evt_429"))
    event_id = event["id"]
    # a 429 is a wait (throttled), not a failed attempt: the one attempt is the run that succeeded
    assert event["status"] == "succeeded" and event["attempts"] == 1
    assert time.monotonic() - started >= 0.9, "the retry-after of 1 s was not honoured"
    calls = rows(db_url, "SELECT status, error FROM hookline.llm_calls WHERE event_id = %s ORDER BY id", event_id)
    assert [c[0] for c in calls] == ["failed", "succeeded"] and "429" in calls[0][1]
    assert len(receiver.received) == 1


async def test_permanent_error_goes_straight_to_the_dead_letters(
    db_url: str, fake: FakeMessagesAPI, receiver: Receiver
) -> None:
    config = make_config()
    fake.enqueue(error(400, "invalid_request_error", "max_tokens: too large"))
    event = await process_one(db_url, fake, config, event_body("evt_400"))
    event_id = event["id"]
    assert event["status"] == "dead" and event["attempts"] == 1
    ((error_text, attempts, detail),) = rows(
        db_url, "SELECT error, attempts, detail FROM hookline.dead_letters WHERE event_id = %s", event_id
    )
    assert "400" in error_text and "max_tokens: too large" in error_text and attempts == 1
    assert detail == "permanent error"
    assert receiver.received == []


async def test_invalid_output_gets_one_repair_turn(db_url: str, fake: FakeMessagesAPI, receiver: Receiver) -> None:
    config = make_config()
    fake.enqueue(reply({"subject": "only a subject"}), reply(GOOD))
    event = await process_one(db_url, fake, config, event_body("evt_repair"))
    event_id = event["id"]
    assert event["status"] == "succeeded" and event["attempts"] == 1
    calls = fake.calls_to("/v1/messages")
    assert len(calls) == 2
    repair_turn = calls[1].body["messages"][-1]["content"]
    assert "does not match the required schema" in repair_turn and "'body' is a required property" in repair_turn
    statuses = rows(db_url, "SELECT status FROM hookline.llm_calls WHERE event_id = %s ORDER BY id", event_id)
    assert statuses == [("invalid_output",), ("succeeded",)]
    assert receiver.received[0].json()["output"] == GOOD


async def test_exhausted_attempts_keep_the_invalid_output_then_replay_after_the_fix(
    db_url: str, fake: FakeMessagesAPI, receiver: Receiver
) -> None:
    config = make_config(retry={"max_attempts": 2, "backoff_seconds": 0.05, "jitter": False})
    fake.set_default(invalid_json_reply("Sure! here it is: {"))
    settings = settings_for(db_url, fake)
    async with web_server(settings, config) as base, worker_task(settings, config):
        async with httpx.AsyncClient() as client:
            event_id = await deliver(client, base, event_body("evt_dead"))
        event = await wait_for_status(db_url, event_id)
        assert event["status"] == "dead" and event["attempts"] == 2
        ((detail, bad_error, bad_response),) = rows(
            db_url,
            "SELECT detail, invalid_output_error, invalid_output_response FROM hookline.dead_letters "
            "WHERE event_id = %s",
            event_id,
        )
        assert detail == "gave up after 2 attempt(s)" and "not JSON" in bad_error
        assert "Sure! here it is" in json.dumps(bad_response)
        assert len(fake.calls_to("/v1/messages")) == 4  # two attempts, each with its repair turn

        # the fix: the model (or the pipeline) now produces valid output; replay the dead letter
        fake.set_default(reply(GOOD))
        with psycopg.connect(db_url, autocommit=True) as conn:
            job = conn.execute("SELECT hookline.replay(%s::bigint)", (event_id,)).fetchone()
        assert job and job[0] > 0
        event = await wait_for_status(db_url, event_id)
    assert event["status"] == "succeeded"
    assert rows(db_url, "SELECT replays FROM hookline.events WHERE id = %s", event_id) == [(1,)]
    assert rows(db_url, "SELECT count(*) FROM hookline.dead_letters") == [(0,)]
    assert len(receiver.received) == 1


async def test_replay_reuses_answers_and_never_repeats_actions_unless_asked(
    db_url: str, fake: FakeMessagesAPI, receiver: Receiver
) -> None:
    config = make_config()
    settings = settings_for(db_url, fake)
    fake.set_default(reply(GOOD))
    async with web_server(settings, config) as base, worker_task(settings, config):
        async with httpx.AsyncClient() as client:
            ids = [await deliver(client, base, event_body(f"evt_r{i}")) for i in range(3)]
        for i in ids:
            await wait_for_status(db_url, i)
        assert len(fake.calls_to("/v1/messages")) == 3 and len(receiver.received) == 3

        # plain replay: stored answers reused, succeeded actions not repeated
        with psycopg.connect(db_url, autocommit=True) as conn:
            replayed = conn.execute("SELECT event_id FROM hookline.replay(p_source => 'stripe')").fetchall()
        assert sorted(r[0] for r in replayed) == ids
        for i in ids:
            assert (await wait_for_status(db_url, i))["status"] == "succeeded"
        assert len(fake.calls_to("/v1/messages")) == 3 and len(receiver.received) == 3

        # recompute + force, through the CLI: a new answer supersedes the old one, the action runs again
        fake.set_default(reply({"subject": "Second", "body": "Take"}))
        env = {**os.environ, "DATABASE_URL": db_url}
        proc = await asyncio.create_subprocess_exec(
            sys.executable,
            "-m",
            "app.cli",
            "replay",
            str(ids[0]),
            "--recompute",
            "--force",
            "--timeout",
            "30",
            env=env,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE,
        )
        _, err = await proc.communicate()
        assert proc.returncode == 0, err.decode()
        assert "1/1 finished" in err.decode()
    assert len(fake.calls_to("/v1/messages")) == 4
    assert [r.json()["output"]["subject"] for r in receiver.received] == ["Hello"] * 3 + ["Second"]
    calls = rows(
        db_url, "SELECT status, output->>'subject' FROM hookline.llm_calls WHERE event_id = %s ORDER BY id", ids[0]
    )
    assert calls == [("superseded", "Hello"), ("succeeded", "Second")]
    assert rows(db_url, "SELECT attempts FROM hookline.action_runs WHERE event_id = %s", ids[0]) == [(2,)]


def test_replay_refuses_what_it_cannot_do(conn: psycopg.Connection) -> None:
    conn.execute("INSERT INTO hookline.events (source, delivery_id, payload) VALUES ('s', 'd', '{}')")
    with pytest.raises(psycopg.errors.ObjectNotInPrerequisiteState, match="not finished"):
        conn.execute("SELECT hookline.replay(1)")
    with pytest.raises(psycopg.errors.NoDataFound):
        conn.execute("SELECT hookline.replay(999::bigint)")
    with pytest.raises(psycopg.errors.InvalidParameterValue, match="at least one"):
        conn.execute("SELECT * FROM hookline.replay()")


def test_an_event_id_given_as_text_is_refused_not_taken_for_a_source(conn: psycopg.Connection) -> None:
    """hookline.replay('7') and hookline.replay($1) with an untyped '7' (psycopg sends a str untyped) resolve
    to the bulk form, whose first parameter is p_source: they replayed the events of source '7' (none) and
    said nothing. A source of digits alone that no event has is refused, naming the call that replays the
    event (migration 0029); a source that exists is still replayed."""
    row = conn.execute(
        "INSERT INTO hookline.events (source, delivery_id, payload, status) "
        "VALUES ('stripe', 'd', '{}', 'dead') RETURNING id"
    ).fetchone()
    assert row is not None
    event_id = int(row[0])
    for sql, args in (
        (f"SELECT * FROM hookline.replay('{event_id}')", ()),
        ("SELECT * FROM hookline.replay(%s)", (str(event_id),)),
        ("SELECT * FROM hookline.replay(%s, p_status => 'dead')", (str(event_id),)),
    ):
        with pytest.raises(psycopg.errors.InvalidParameterValue) as refused:
            conn.execute(sql, args)
        assert refused.value.diag.message_primary == (
            f"hookline.replay: no event has source '{event_id}'; to replay event {event_id}, pass its id as a "
            f"bigint: hookline.replay({event_id}::bigint)"
        )
    assert conn.execute("SELECT status, replays FROM hookline.events WHERE id = %s", (event_id,)).fetchone() == (
        "dead",
        0,
    )
    # the documented calls are unchanged: the id form, and the bulk form for a source that exists
    job = conn.execute(f"SELECT hookline.replay({event_id})").fetchone()
    assert job is not None and job[0] > 0
    digits = conn.execute(
        "INSERT INTO hookline.events (source, delivery_id, payload, status) "
        "VALUES ('42', 'e', '{}', 'dead') RETURNING id"
    ).fetchone()
    assert digits is not None
    assert conn.execute("SELECT event_id FROM hookline.replay('42')").fetchall() == [(digits[0],)]
    assert conn.execute("SELECT * FROM hookline.replay(p_source => 'nosuch')").fetchall() == []


async def test_same_ordering_key_runs_one_at_a_time_in_arrival_order(db_url: str, fake: FakeMessagesAPI) -> None:
    config = make_config(actions=[])
    fake.set_default(reply(GOOD))
    settings = settings_for(db_url, fake, worker_concurrency=8)
    async with web_server(settings, config) as base:
        async with httpx.AsyncClient() as client:
            ids = [await deliver(client, base, event_body(f"evt_o{i}", customer="cus_1")) for i in range(6)]
            others = [await deliver(client, base, event_body(f"evt_x{i}", customer=f"cus_{i + 10}")) for i in range(4)]
        async with worker_task(settings, config):
            for i in ids + others:
                assert (await wait_for_status(db_url, i))["status"] == "succeeded"
    spans = rows(
        db_url, "SELECT id, started_at, finished_at FROM hookline.events WHERE id = ANY(%s) ORDER BY started_at", ids
    )
    assert [s[0] for s in spans] == ids, "events of one key must run in arrival order"
    for (_, _, prev_end), (_, next_start, _) in itertools.pairwise(spans):
        assert next_start >= prev_end, "events of one key must not overlap"


async def test_latest_wins_skips_an_older_event_that_arrives_late(
    db_url: str, fake: FakeMessagesAPI, receiver: Receiver
) -> None:
    config = make_config(latest_wins=True)
    fake.set_default(reply(GOOD))
    settings = settings_for(db_url, fake)
    now = int(time.time())
    async with web_server(settings, config) as base, worker_task(settings, config), httpx.AsyncClient() as client:
        newer = await deliver(client, base, event_body("evt_new", customer="cus_9", created=now))
        await wait_for_status(db_url, newer)
        older = await deliver(client, base, event_body("evt_old", customer="cus_9", created=now - 60))
        event = await wait_for_status(db_url, older)
    assert event["status"] == "skipped" and f"event {newer}" in event["detail"]
    assert len(fake.calls_to("/v1/messages")) == 1 and len(receiver.received) == 1


async def test_a_hung_model_call_times_out_and_is_retried(db_url: str, fake: FakeMessagesAPI) -> None:
    config = make_config(timeout_seconds=0.5, actions=[])
    fake.enqueue(hang(), reply(GOOD))
    event = await process_one(db_url, fake, config, event_body("evt_hang"))
    assert event["status"] == "succeeded" and event["attempts"] == 2
    assert rows(db_url, "SELECT count(*) FROM procrastinate_jobs WHERE status = 'doing'") == [(0,)]


async def test_event_history_reaches_the_model(db_url: str, fake: FakeMessagesAPI) -> None:
    config = make_config(history=2, actions=[])
    fake.set_default(reply(GOOD))
    settings = settings_for(db_url, fake)
    async with web_server(settings, config) as base, worker_task(settings, config):
        async with httpx.AsyncClient() as client:
            ids = [
                await deliver(client, base, event_body(f"evt_h{i}", customer="cus_h", note=f"n{i}")) for i in range(3)
            ]
        for i in ids:
            await wait_for_status(db_url, i)
    last = json.loads(fake.calls_to("/v1/messages")[-1].body["messages"][0]["content"])
    assert [h["fields"]["data.object.note"] for h in last["recent_events_for_same_key"]] == ["n0", "n1"]


async def test_retention_prunes_in_batches_and_dedup_still_holds(db_url: str) -> None:
    from worker.runtime import Runtime

    config = make_config()
    settings = make_settings(db_url, payload_retention_days=1, job_retention_hours=1)
    with psycopg.connect(db_url, autocommit=True) as conn:
        conn.execute("""INSERT INTO hookline.events (source, delivery_id, status, body, payload, received_at)
                        SELECT 'stripe', 'old_' || g, 'succeeded', '\\x7b7d', '{}', now() - interval '3 days'
                        FROM generate_series(1, 1200) g""")
        conn.execute(
            "INSERT INTO hookline.events (source, delivery_id, status, body, payload) "
            "VALUES ('stripe', 'fresh', 'succeeded', '\\x7b7d', '{}')"
        )
        conn.execute(
            "SELECT hookline.defer_job('hookline', 'hookline:process_event', '{}') FROM generate_series(1, 1201)"
        )
        conn.execute("UPDATE procrastinate_jobs SET status = 'succeeded'")
        conn.execute("UPDATE procrastinate_events SET at = now() - interval '2 hours'")
        for delivery_id in ("old_1", "fresh"):  # copies of payload text beside the event
            conn.execute(
                "INSERT INTO hookline.llm_calls (event_id, pipeline, model, status, request, response, output) "
                "SELECT id, 'p', 'm', 'succeeded', '{\"messages\": [\"pii\"]}', '{\"content\": \"pii\"}', "
                "'{\"answer\": 1}' FROM hookline.events WHERE delivery_id = %s",
                (delivery_id,),
            )
            conn.execute(
                "INSERT INTO hookline.action_runs (event_id, pipeline, action, action_type, idempotency_key, "
                "status, result) SELECT id, 'p', 'a', 'http', 'k-' || id, 'succeeded', '{\"echo\": \"pii\"}' "
                "FROM hookline.events WHERE delivery_id = %s",
                (delivery_id,),
            )
    rt = Runtime.build(settings, config)
    await rt.open()
    try:
        pruned = await rt.retention(batch=500)
    finally:
        await rt.close()
    assert pruned == {"jobs_deleted": 1201, "payloads_pruned": 1200, "alerts_pruned": 0}
    assert rows(db_url, "SELECT count(*) FROM hookline.events WHERE payload IS NULL") == [(1200,)]
    fresh = "SELECT count(*) FROM hookline.events WHERE delivery_id = 'fresh' AND payload IS NOT NULL"
    assert rows(db_url, fresh) == [(1,)]
    assert rows(db_url, "SELECT count(*) FROM procrastinate_jobs") == [(0,)]
    copies = (
        "SELECT e.delivery_id, c.request, c.response, c.output, a.result FROM hookline.events e "
        "JOIN hookline.llm_calls c ON c.event_id = e.id JOIN hookline.action_runs a ON a.event_id = e.id "
        "ORDER BY e.delivery_id"
    )
    assert rows(db_url, copies) == [
        ("fresh", {"messages": ["pii"]}, {"content": "pii"}, {"answer": 1}, {"echo": "pii"}),
        ("old_1", {"pruned": True}, None, {"answer": 1}, {"echo": "pii"}),  # an action's result is kept
    ]
    with psycopg.connect(db_url, autocommit=True) as conn:
        dup = conn.execute(
            "INSERT INTO hookline.events (source, delivery_id) VALUES ('stripe', 'old_7') "
            "ON CONFLICT (source, delivery_id) DO NOTHING RETURNING id"
        ).fetchone()
    assert dup is None, "a pruned event still deduplicates its delivery id"


async def test_a_retried_replay_does_not_recompute_or_force_again(
    db_url: str, fake: FakeMessagesAPI, receiver: Receiver
) -> None:
    """replay --recompute --force whose http action fails once: the retry reuses the recomputed
    answer and does not force the action that already ran in the replay again."""
    config = make_config(actions=[{"type": "log", "name": "note"}, {"type": "http", "url_env": "HL_CRM_URL"}])
    fake.set_default(reply(GOOD))
    settings = settings_for(db_url, fake)
    async with web_server(settings, config) as base, worker_task(settings, config):
        async with httpx.AsyncClient() as client:
            event_id = await deliver(client, base, event_body("evt_rr"))
        await wait_for_status(db_url, event_id)
        receiver.statuses = [503]
        with psycopg.connect(db_url, autocommit=True) as conn:
            conn.execute("SELECT hookline.replay(%s, p_recompute => true, p_force => true)", (event_id,))
        event = await wait_for_status(db_url, event_id, statuses=("succeeded", "dead"))
    assert event["status"] == "succeeded" and event["attempts"] == 2
    assert len(fake.calls_to("/v1/messages")) == 2, "one call at first, one for the recompute, none for the retry"
    runs = dict(rows(db_url, "SELECT action, attempts FROM hookline.action_runs WHERE event_id = %s", event_id))
    assert runs == {"note": 2, "http#1": 3}
    assert rows(db_url, "SELECT status FROM hookline.llm_calls WHERE event_id = %s ORDER BY id", event_id) == [
        ("superseded",),
        ("succeeded",),
    ]
