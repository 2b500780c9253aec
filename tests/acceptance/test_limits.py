"""Safe to leave running: ingest limits, shared model rate limits, tenant budgets, priorities,
breaker and fallback, refusals, loop guard. Real web, worker(s), Postgres and the anthropic SDK
against the fake Messages API."""

from __future__ import annotations

import asyncio
import json
import time
from typing import Any

import httpx
import pytest

from app.core.config import Config
from app.signatures import sign
from tests.fakes.messages_api import FakeMessagesAPI, overloaded, refusal, reply
from tests.harness import (
    Receiver,
    config_from,
    make_settings,
    rows,
    wait_for_status,
    web_server,
    worker_task,
)

SECRET = "whsec_limits_tests"
GOOD = {"subject": "Hello", "urgent": False}
SCHEMA = {
    "type": "object",
    "properties": {"subject": {"type": "string"}, "urgent": {"type": "boolean"}},
    "required": ["subject", "urgent"],
    "additionalProperties": False,
}


@pytest.fixture(autouse=True)
def env(monkeypatch: pytest.MonkeyPatch, receiver: Receiver) -> None:
    monkeypatch.setenv("HL_STRIPE_SECRET", SECRET)
    monkeypatch.setenv("HL_CRM_URL", receiver.url)
    monkeypatch.setenv("HL_OPS_URL", receiver.url.replace("/hook", "/ops"))


def make_config(*, pipelines: dict[str, dict[str, Any]] | None = None, **top: Any) -> Config:
    def pipeline(**over: Any) -> dict[str, Any]:
        return {
            "source": "stripe",
            "events": ["invoice.*"],
            "fields": ["type", "data.object.note"],
            "instructions": "Triage.",
            "output_schema": SCHEMA,
            "retry": {"max_attempts": 3, "backoff_seconds": 0.05, "max_backoff_seconds": 1, "jitter": False},
            "actions": [{"type": "http", "url_env": "HL_CRM_URL"}],
            **over,
        }

    source: dict[str, Any] = {"provider": "stripe", "secrets_env": ["HL_STRIPE_SECRET"], "tenant": "json:tenant"}
    source.update(top.pop("source", {}))
    return config_from(
        {
            "sources": {"stripe": source},
            "pipelines": {name: pipeline(**p) for name, p in (pipelines or {"triage": {}}).items()},
            **top,
        }
    )


def event_body(evt: str, *, etype: str = "invoice.payment_failed", tenant: str | None = None, **obj: Any) -> bytes:
    doc: dict[str, Any] = {
        "id": evt,
        "type": etype,
        "created": int(time.time()),
        "data": {"object": {"note": evt, **obj}},
    }
    if tenant:
        doc["tenant"] = tenant
    return json.dumps(doc).encode()


async def send(client: httpx.AsyncClient, base: str, body: bytes) -> httpx.Response:
    headers = {**sign("stripe", secret=SECRET, body=body), "content-type": "application/json"}
    return await client.post(f"{base}/webhooks/stripe", content=body, headers=headers)


async def deliver(client: httpx.AsyncClient, base: str, body: bytes) -> int:
    resp = await send(client, base, body)
    assert resp.status_code == 200, resp.text
    return int(resp.json()["event_id"])


def settings_for(db_url: str, fake: FakeMessagesAPI, **over: Any) -> Any:
    return make_settings(db_url, anthropic_api_key="sk-test", anthropic_base_url=fake.base_url, **over)


# ------------------------------------------------------------------------------------------- ingest
async def test_the_ingest_limit_answers_429_with_retry_after_and_stores_nothing(db_url: str) -> None:
    config = make_config(source={"rate_limit": {"per_second": 0.01, "burst": 2}})
    settings = make_settings(db_url)
    async with web_server(settings, config) as base, httpx.AsyncClient() as client:
        answers = [await send(client, base, event_body(f"evt_rl_{i}")) for i in range(4)]
    assert [a.status_code for a in answers] == [200, 200, 429, 429]
    assert answers[2].json()["error"] == "rate_limited"
    assert int(answers[2].headers["retry-after"]) >= 1
    assert rows(db_url, "SELECT delivery_id FROM hookline.events ORDER BY id") == [("evt_rl_0",), ("evt_rl_1",)]


async def wait_until(predicate: Any, what: str, timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        await asyncio.sleep(0.1)


def statuses(db_url: str) -> dict[str, tuple[str, str | None]]:
    got = rows(db_url, "SELECT delivery_id, status, detail FROM hookline.events ORDER BY id")
    return {d: (s, det) for d, s, det in got}


# ------------------------------------------------------------------------------------------- shared rate limit
RATE_TOML = """
[sources.stripe]
provider = "stripe"
secrets_env = ["HL_STRIPE_SECRET"]

[pipelines.triage]
source = "stripe"
events = ["invoice.*"]
model = "claude-haiku-5-5"
instructions = "Triage."
output_schema = { type = "object", properties = { subject = { type = "string" } }, required = ["subject"] }

[[pipelines.triage.actions]]
type = "log"

[models."claude-haiku-5-5"]
requests_per_minute = 3
"""


async def test_two_worker_processes_share_one_model_rate_limit(
    db_url: str, fake: FakeMessagesAPI, tmp_path: Any
) -> None:
    from tests.chaos_support import Workers, worker_env

    (tmp_path / "hookline.toml").write_text(RATE_TOML)
    env = worker_env(db_url, tmp_path / "hookline.toml", fake_url=fake.base_url, HL_STRIPE_SECRET=SECRET)
    workers = Workers(tmp_path)
    try:
        for proc in [workers.spawn("a", env), workers.spawn("b", env)]:
            await workers.ready(proc, timeout=120)  # importing the worker takes long on a busy machine
        with psycopg_connect(db_url) as conn:
            for i in range(8):
                conn.execute(
                    "INSERT INTO hookline.events (source, delivery_id, event_type, payload) "
                    "VALUES ('stripe', %s, 'invoice.paid', '{}')",
                    (f"evt_{i}",),
                )
        started = time.monotonic()
        await wait_until(
            lambda: sorted(s for s, _ in statuses(db_url).values()).count("throttled") >= 5, "5 throttled events"
        )
        await wait_until(
            lambda: {s for s, _ in statuses(db_url).values()} <= {"succeeded", "throttled"}, "no event in flight"
        )
        elapsed = time.monotonic() - started
        calls = fake.calls_to("/v1/messages")
        # 3 per minute for both processes together: the bucket starts full (3) and refills 1 per 20 s
        assert 3 <= len(calls) <= 3 + int(elapsed / 20), (len(calls), elapsed)
        done = [d for d, (s, _) in statuses(db_url).items() if s == "succeeded"]
        assert len(done) == len(calls)
        held = [det for s, det in statuses(db_url).values() if s == "throttled"]
        assert all(det and "shared rate limit" in det for det in held), held
        waiting = rows(
            db_url,
            "SELECT count(*) FROM procrastinate_jobs WHERE status = 'todo' AND scheduled_at > now()",
        )
        assert waiting[0][0] == 8 - len(calls)  # rescheduled, not spinning in a worker slot
        both = workers.report()
        assert both.count("throttled for") >= 5
    finally:
        workers.stop_all()


def psycopg_connect(db_url: str) -> Any:
    import psycopg

    return psycopg.connect(db_url, autocommit=True)


# ------------------------------------------------------------------------------------------- tenant budgets
USAGE = {
    "input_tokens": 100,
    "output_tokens": 50,
    "cache_creation_input_tokens": 0,
    "cache_read_input_tokens": 0,
    "cache_creation": {"ephemeral_5m_input_tokens": 0, "ephemeral_1h_input_tokens": 0},
}


def reservation_of(config: Config, body: bytes) -> int:
    """What the worker reserves for one call of this event (estimated input + max_tokens)."""
    from datetime import UTC, datetime

    from worker.limits import estimate_input_tokens
    from worker.prompt import build_request

    pipeline = config.pipelines["triage"]
    event: Any = {"id": 1, "source": "stripe", "event_type": "invoice.payment_failed", "occurred_at": datetime.now(UTC)}
    event["payload"] = json.loads(body)
    request = build_request(pipeline, event)
    return estimate_input_tokens(request) + int(request["max_tokens"])


async def test_a_tenant_at_its_token_cap_waits_for_the_next_window_without_overspend(
    db_url: str, fake: FakeMessagesAPI, receiver: Receiver
) -> None:
    fake.set_default(reply(GOOD, usage=USAGE))  # every call: 150 tokens
    probe = make_config(pipelines={"triage": {"max_tokens": 2000}})
    r = reservation_of(probe, event_body("evt_a0", tenant="a"))
    cap = r + 150 + 75  # room for two calls one after the other, never for a third
    config = make_config(
        pipelines={"triage": {"max_tokens": 2000}},
        source={"ordering_key": "json:tenant"},  # one tenant's events one at a time: a deterministic count
        tenants={"*": {"tokens_per_day": cap}, "b": {"tokens_per_day": 1_000_000}},
        alerts=[{"type": "http", "url_env": "HL_OPS_URL"}],
    )
    settings = settings_for(db_url, fake)
    async with web_server(settings, config) as base, worker_task(settings, config), httpx.AsyncClient() as client:
        a = [await deliver(client, base, event_body(f"evt_a{i}", tenant="a")) for i in range(4)]
        b = [await deliver(client, base, event_body(f"evt_b{i}", tenant="b")) for i in range(3)]
        for eid in a[:2] + b:
            assert (await wait_for_status(db_url, eid))["status"] == "succeeded"
        held = await wait_for_status(db_url, a[2], ("throttled",))
        assert "daily token or USD cap" in str(held["detail"])
        assert statuses(db_url)["evt_a3"][0] == "queued"  # behind a2 in its ordering key
        ((tokens, reserved),) = rows(
            db_url, "SELECT tokens, reserved_tokens FROM hookline.budget_windows WHERE tenant = 'a' AND period = 'day'"
        )
        assert (tokens, reserved) == (300, 0) and tokens <= cap
        await wait_until(lambda: any(x.path == "/ops" for x in receiver.received), "the alert")  # on its own task
        alerts = [x for x in receiver.received if x.path == "/ops"]
        assert len(alerts) == 1 and alerts[0].json()["output"]["tenant"] == "a"  # once per window
        # the UTC day turns: the window moves back one day and the held job's time comes
        rows(db_url, "UPDATE hookline.budget_windows SET window_start = window_start - interval '1 day' RETURNING 1")
        rows(db_url, "UPDATE procrastinate_jobs SET scheduled_at = now() WHERE status = 'todo' RETURNING 1")
        for eid in a[2:]:
            assert (await wait_for_status(db_url, eid))["status"] == "succeeded"
    per_day = rows(db_url, "SELECT tokens FROM hookline.budget_windows WHERE tenant = 'a' AND period = 'day'")
    assert sorted(t for (t,) in per_day) == [300, 300]  # two calls per window, never more than the cap
    assert all(t <= cap for (t,) in per_day)
    ((attempts,),) = rows(db_url, "SELECT attempts FROM hookline.events WHERE delivery_id = 'evt_a2'")
    assert attempts == 1  # waiting is not an attempt


async def test_on_cap_dead_sends_the_event_to_the_dead_letters(db_url: str, fake: FakeMessagesAPI) -> None:
    config = make_config(
        tenants={"*": {"events_per_hour": 1, "on_cap": "dead"}}, source={"ordering_key": "json:tenant"}
    )
    settings = settings_for(db_url, fake)
    async with web_server(settings, config) as base, worker_task(settings, config), httpx.AsyncClient() as client:
        first = await deliver(client, base, event_body("evt_d0", tenant="t"))
        second = await deliver(client, base, event_body("evt_d1", tenant="t"))
        assert (await wait_for_status(db_url, first))["status"] == "succeeded"
        dead = await wait_for_status(db_url, second)
    assert dead["status"] == "dead" and "events_per_hour = 1" in str(dead["last_error"])
    assert len(fake.calls_to("/v1/messages")) == 1


# ------------------------------------------------------------------------------------------- priorities
async def test_urgent_events_overtake_a_routine_backlog(db_url: str, fake: FakeMessagesAPI) -> None:
    config = make_config(
        pipelines={"routine": {"events": ["invoice.*"]}, "urgent": {"events": ["charge.dispute.*"], "priority": 10}}
    )
    settings = settings_for(db_url, fake, worker_concurrency=1)
    async with web_server(settings, config) as base, httpx.AsyncClient() as client:
        routine = [await deliver(client, base, event_body(f"evt_r{i}")) for i in range(8)]
        urgent = await deliver(client, base, event_body("evt_urgent", etype="charge.dispute.created"))
    async with worker_task(settings, config):
        for eid in [*routine, urgent]:
            await wait_for_status(db_url, eid)
    order = [d for (d,) in rows(db_url, "SELECT delivery_id FROM hookline.events ORDER BY started_at, id")]
    assert order[0] == "evt_urgent", order
    assert rows(db_url, "SELECT priority FROM hookline.events WHERE id = %s", urgent) == [(10,)]


# ------------------------------------------------------------------------------------------- breaker and fallback
async def test_breaker_opens_on_529s_fallback_answers_then_a_probe_closes_it(
    db_url: str, fake: FakeMessagesAPI
) -> None:
    config = make_config(
        models={
            "claude-haiku-5-5": {
                "fallback": "claude-haiku-4-5",
                "breaker": {"failures": 2, "window_seconds": 60, "open_seconds": 1},
            }
        },
    )
    fake.set_model_default("claude-haiku-5-5", overloaded())
    settings = settings_for(db_url, fake)

    def calls_of(delivery: str) -> list[tuple[Any, ...]]:
        return rows(
            db_url,
            "SELECT c.model, c.route, c.status, c.requested_model FROM hookline.llm_calls c "
            "JOIN hookline.events e ON e.id = c.event_id WHERE e.delivery_id = %s ORDER BY c.id",
            delivery,
        )

    async with web_server(settings, config) as base, worker_task(settings, config), httpx.AsyncClient() as client:
        for i in range(3):
            eid = await deliver(client, base, event_body(f"evt_o{i}"))
            assert (await wait_for_status(db_url, eid))["status"] == "succeeded"
        assert calls_of("evt_o0") == [
            ("claude-haiku-5-5", "primary", "failed", "claude-haiku-5-5"),
            ("claude-haiku-4-5", "fallback:overloaded", "succeeded", "claude-haiku-5-5"),
        ]
        assert calls_of("evt_o2") == [("claude-haiku-4-5", "fallback:breaker_open", "succeeded", "claude-haiku-5-5")]
        primary = [c for c in fake.calls_to("/v1/messages") if c.body["model"] == "claude-haiku-5-5"]
        assert len(primary) == 2  # the open breaker kept the third call away from the overloaded model
        assert rows(db_url, "SELECT state FROM hookline.breaker_state") in ([("open",)], [("half_open",)])
        fake.set_model_default("claude-haiku-5-5", None)  # the provider recovers
        await wait_until(
            lambda: rows(db_url, "SELECT state FROM hookline.breaker_state") == [("half_open",)], "half-open"
        )
        eid = await deliver(client, base, event_body("evt_o3"))
        assert (await wait_for_status(db_url, eid))["status"] == "succeeded"
    assert calls_of("evt_o3") == [("claude-haiku-5-5", "primary", "succeeded", "claude-haiku-5-5")]
    assert rows(db_url, "SELECT state, failures FROM hookline.breaker_state") == [("closed", 0)]


# ------------------------------------------------------------------------------------------- final answers
async def test_a_refusal_is_not_retried_and_a_cut_answer_gets_one_larger_budget(
    db_url: str, fake: FakeMessagesAPI, receiver: Receiver
) -> None:
    from tests.fakes.messages_api import max_tokens_cut

    config = make_config(pipelines={"triage": {"max_tokens": 300, "max_tokens_cap": 1000}})
    fake.enqueue_for("evt_refuse", refusal("general_harms"))
    fake.enqueue_for("evt_cut", max_tokens_cut(), max_tokens_cut())
    settings = settings_for(db_url, fake)
    async with web_server(settings, config) as base, worker_task(settings, config), httpx.AsyncClient() as client:
        refused = await wait_for_status(db_url, await deliver(client, base, event_body("evt_refuse")))
        cut = await wait_for_status(db_url, await deliver(client, base, event_body("evt_cut")))
    assert refused["status"] == "dead" and refused["attempts"] == 1 and "refused" in str(refused["last_error"])
    ((response, stop),) = rows(
        db_url,
        "SELECT d.invalid_output_response, c.stop_reason FROM hookline.dead_letters d "
        "JOIN hookline.llm_calls c ON c.event_id = d.event_id WHERE d.event_id = %s",
        refused["id"],
    )
    assert stop == "refusal" and response["stop_details"]["category"] == "general_harms"  # the refusal is kept
    assert cut["status"] == "dead" and cut["attempts"] == 1
    budgets = rows(
        db_url, "SELECT request->'max_tokens', route FROM hookline.llm_calls WHERE event_id = %s ORDER BY id", cut["id"]
    )
    assert budgets == [(300, "primary"), (1000, "retry:max_tokens")]
    # one call for the refusal, two for the cut answer: nothing asked twice with the same request
    assert [c.body["max_tokens"] for c in fake.calls_to("/v1/messages")] == [300, 300, 1000]
    assert receiver.received == []
