"""Metrics after a known workload (exact counts, and every exported metric named in the README), the
private/public split of /metrics, the worker's own metrics port, the event timeline of a real run,
and request ids in the worker's JSON logs."""

from __future__ import annotations

import asyncio
import json
import logging
import time
from decimal import Decimal
from pathlib import Path
from typing import Any

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families

from app.core.config import Config
from app.core.logs import JsonFormatter, bind_log_context, log_context
from app.signatures import sign
from tests.fakes.messages_api import FakeMessagesAPI, error, reply
from tests.harness import (
    Receiver,
    config_from,
    free_port,
    make_settings,
    rows,
    wait_for_status,
    web_server,
    worker_task,
)
from worker.pricing import cost_usd

README = (Path(__file__).resolve().parents[2] / "README.md").read_text()

STRIPE_SECRET = "whsec_observe_test"
USAGE = {
    "input_tokens": 100,
    "output_tokens": 20,
    "cache_creation_input_tokens": 0,
    "cache_read_input_tokens": 0,
    "cache_creation": {"ephemeral_5m_input_tokens": 0, "ephemeral_1h_input_tokens": 0},
}
Samples = dict[tuple[str, frozenset[tuple[str, str]]], float]


def scrape(text: str) -> Samples:
    return {
        (s.name, frozenset(s.labels.items())): s.value
        for family in text_string_to_metric_families(text)
        for s in family.samples
    }


def exported_names(text: str) -> set[str]:
    """The metric names an exposition offers, as a scraper sees them (a counter ``x`` as ``x_total``)."""
    return {f.name + ("_total" if f.type == "counter" else "") for f in text_string_to_metric_families(text)}


def pick(samples: Samples, name: str, **labels: str) -> float:
    """The one sample of ``name`` with exactly these labels (0 when absent)."""
    return samples.get((name, frozenset(labels.items())), 0.0)


def of(samples: Samples, name: str) -> dict[frozenset[tuple[str, str]], float]:
    return {labels: v for (n, labels), v in samples.items() if n == name}


def config(pipeline: dict[str, Any] | None = None, **extra: Any) -> Config:
    return config_from(
        extra
        | {
            "sources": {
                "stripe": {
                    "provider": "stripe",
                    "secrets_env": ["HL_STRIPE_SECRET"],
                    "tenant": "json:data.object.customer",
                    "max_body_bytes": 4096,
                },
            },
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
                    "actions": [{"type": "http", "url_env": "HL_CRM_URL"}],
                    **(pipeline or {}),
                }
            },
        }
    )


def stripe_body(evt_id: str, customer: str = "cus_42") -> bytes:
    data = {"id": evt_id, "type": "invoice.payment_failed", "created": int(time.time())}
    return json.dumps(data | {"data": {"object": {"customer": customer}}}).encode()


def signed(body: bytes) -> dict[str, str]:
    return {**sign("stripe", secret=STRIPE_SECRET, body=body), "content-type": "application/json"}


@pytest.fixture
def env(monkeypatch: pytest.MonkeyPatch, receiver: Receiver) -> None:
    monkeypatch.setenv("HL_STRIPE_SECRET", STRIPE_SECRET)
    monkeypatch.setenv("HL_CRM_URL", receiver.url)


async def test_metrics_exact_counts_after_a_known_workload(
    db_url: str, env: None, fake: FakeMessagesAPI, receiver: Receiver
) -> None:
    worker_port = free_port()
    settings = make_settings(
        db_url,
        anthropic_api_key="sk-test",
        anthropic_base_url=fake.base_url,
        metrics_token="scrape-me",
        worker_metrics_port=worker_port,
        host="127.0.0.1",
    )
    fake.set_default(reply({"subject": "About your invoice"}, usage=USAGE))
    cfg = config()
    async with web_server(settings, cfg) as base, worker_task(settings, cfg), httpx.AsyncClient() as client:
        ids = []
        for evt, customer in (("evt_1", "cus_42"), ("evt_2", "cus_7")):
            body = stripe_body(evt, customer)
            resp = await client.post(f"{base}/webhooks/stripe", content=body, headers=signed(body))
            assert resp.status_code == 200, resp.text
            ids.append(resp.json()["event_id"])
        dup = stripe_body("evt_1")
        assert (await client.post(f"{base}/webhooks/stripe", content=dup, headers=signed(dup))).status_code == 200
        bad = stripe_body("evt_bad")
        headers = {**sign("stripe", secret="whsec_someone_else", body=bad), "content-type": "application/json"}
        assert (await client.post(f"{base}/webhooks/stripe", content=bad, headers=headers)).status_code == 401
        assert (await client.post(f"{base}/webhooks/nope", content=b"{}")).status_code == 404
        assert (await client.put(f"{base}/webhooks/stripe", content=b"{}")).status_code == 405
        big = b"{" + b" " * 5000 + b"}"
        assert (await client.post(f"{base}/webhooks/stripe", content=big, headers=signed(big))).status_code == 413
        notjson = b"not json"
        resp = await client.post(f"{base}/webhooks/stripe", content=notjson, headers=signed(notjson))
        assert resp.status_code == 400
        for event_id in ids:
            assert (await wait_for_status(db_url, event_id))["status"] == "succeeded"

        assert (await client.get(f"{base}/metrics")).status_code == 401
        wrong = await client.get(f"{base}/metrics", headers={"authorization": "Bearer nope"})
        assert wrong.status_code == 401 and "scrape-me" not in wrong.text
        resp = await client.get(f"{base}/metrics", headers={"authorization": "Bearer scrape-me"})
        assert resp.status_code == 200
        web = scrape(resp.text)
        worker_text = (await client.get(f"http://127.0.0.1:{worker_port}/metrics")).text
        worker = scrape(worker_text)
    # the README's metrics reference names every family either process exports
    exported = exported_names(resp.text) | exported_names(worker_text)
    assert "hookline_ingest_requests_total" in exported and "hookline_worker_jobs_total" in exported
    assert sorted(n for n in exported if f"`{n}`" not in README and f"`{n}{{" not in README) == []

    requests = of(web, "hookline_ingest_requests_total")
    assert requests == {
        frozenset({("source", "stripe"), ("outcome", "accepted")}): 2,
        frozenset({("source", "stripe"), ("outcome", "duplicate")}): 1,
        frozenset({("source", "stripe"), ("outcome", "invalid_signature")}): 1,
        frozenset({("source", ""), ("outcome", "unknown_source")}): 1,
        frozenset({("source", "stripe"), ("outcome", "method_not_allowed")}): 1,
        frozenset({("source", "stripe"), ("outcome", "payload_too_large")}): 1,
        frozenset({("source", "stripe"), ("outcome", "bad_request")}): 1,
    }
    assert pick(web, "hookline_ingest_duration_seconds_count", source="stripe") == 7
    assert pick(web, "hookline_ingest_duration_seconds_count", source="") == 1
    assert of(web, "hookline_signature_failures_total") == {
        frozenset({("source", "stripe"), ("provider", "stripe"), ("reason", "bad_signature")}): 1
    }
    model = "claude-haiku-5-5"
    assert of(web, "hookline_llm_calls_total") == {frozenset({("model", model), ("outcome", "succeeded")}): 2}
    assert of(web, "hookline_llm_tokens_total") == {  # no [tenants.NAME]: both tenants summed as '*'
        frozenset({("model", model), ("tenant", "*"), ("kind", k)}): n for k, n in (("input", 200), ("output", 40))
    }
    one_call = float(cost_usd(model, USAGE) or Decimal(0))
    assert one_call > 0
    cost = of(web, "hookline_llm_cost_usd_total")
    assert cost.keys() == {frozenset({("model", model), ("tenant", "*")})}
    assert all(v == pytest.approx(2 * one_call) for v in cost.values())
    assert of(web, "hookline_events_finished_total") == {
        frozenset({("pipeline", "recovery"), ("status", "succeeded")}): 2
    }
    assert pick(web, "hookline_dead_letters") == 0
    helps = {f.name: f.documentation for f in text_string_to_metric_families(resp.text)}
    assert "nobody dismissed" in helps["hookline_dead_letters"]  # it counts hookline.dead_letter_counts.open
    assert pick(web, "hookline_database_up") == 1
    assert pick(web, "hookline_events_last_hour", status="succeeded") == 2

    assert pick(worker, "hookline_actions_total", pipeline="recovery", type="http", outcome="succeeded") == 2
    assert pick(worker, "hookline_llm_latency_seconds_count", model=model, outcome="succeeded") == 2
    assert pick(worker, "hookline_pickup_delay_seconds_count") == 2
    assert pick(worker, "hookline_jobs_in_flight") == 0
    assert pick(worker, "hookline_worker_jobs_total", status="succeeded") == 2

    # the timeline of a real run, and the request id stored with the event
    steps = rows(
        db_url,
        "SELECT step, name, status FROM hookline.event_timeline WHERE event_id = %s ORDER BY at, step_rank, ref_id",
        ids[0],
    )
    assert steps == [
        ("received", None, None),
        ("queued", None, None),
        ("started", None, None),
        ("model_call", model, "succeeded"),
        ("action", "http#0", "succeeded"),
        ("finished", None, "succeeded"),
    ]


async def test_worker_jobs_count_the_runs_that_were_rescheduled(
    db_url: str, env: None, fake: FakeMessagesAPI, receiver: Receiver
) -> None:
    """hookline_worker_jobs_total counts every job run by how it ended: a run that failed and will be
    retried is ``retrying``, one held by a limit ``throttled``. A job procrastinate handed over counted
    neither (only a job claimed with another's said ``retrying``, for a hold too)."""
    worker_port = free_port()
    settings = make_settings(
        db_url, anthropic_api_key="sk-test", anthropic_base_url=fake.base_url, worker_metrics_port=worker_port
    )
    fake.enqueue(error(500, "api_error"))
    fake.set_default(reply({"subject": "About your invoice"}, usage=USAGE))
    cfg = config(
        {"retry": {"max_attempts": 3, "backoff_seconds": 0.05, "jitter": False}},
        tenants={"*": {"events_per_hour": 1}},
    )
    async with web_server(settings, cfg) as base, worker_task(settings, cfg), httpx.AsyncClient() as client:
        first = stripe_body("evt_retried")
        resp = await client.post(f"{base}/webhooks/stripe", content=first, headers=signed(first))
        assert (await wait_for_status(db_url, resp.json()["event_id"]))["status"] == "succeeded"
        second = stripe_body("evt_held")  # the same tenant, over its events_per_hour
        resp = await client.post(f"{base}/webhooks/stripe", content=second, headers=signed(second))
        await wait_for_status(db_url, resp.json()["event_id"], ("throttled",))
        worker: Samples = {}
        for _ in range(100):  # the counter is written just after the event's status
            worker = scrape((await client.get(f"http://127.0.0.1:{worker_port}/metrics")).text)
            if pick(worker, "hookline_worker_jobs_total", status="throttled"):
                break
            await asyncio.sleep(0.05)
    assert of(worker, "hookline_worker_jobs_total") == {
        frozenset({("status", "retrying")}): 1,
        frozenset({("status", "succeeded")}): 1,
        frozenset({("status", "throttled")}): 1,
    }


async def test_public_metrics_hide_tenant_and_signature_reason(db_url: str, env: None) -> None:
    settings = make_settings(db_url)
    cfg = config()
    async with web_server(settings, cfg) as base, httpx.AsyncClient() as client:
        body = stripe_body("evt_pub", "cus_secret_tenant")
        assert (await client.post(f"{base}/webhooks/stripe", content=body, headers=signed(body))).status_code == 200
        for header in ("t=1,v1=00", "garbage"):
            headers = signed(body) | {"stripe-signature": header}
            assert (await client.post(f"{base}/webhooks/stripe", content=body, headers=headers)).status_code == 401
        rows(
            db_url,
            "INSERT INTO hookline.llm_calls (event_id, pipeline, model, status, request, input_tokens, cost_usd) "
            "SELECT id, 'recovery', 'claude-haiku-5-5', 'succeeded', '{}', 10, 0.5 FROM hookline.events "
            "RETURNING id",
        )
        resp = await client.get(f"{base}/metrics")
    assert resp.status_code == 200
    assert "reason=" not in resp.text and "tenant=" not in resp.text and "cus_secret_tenant" not in resp.text
    samples = scrape(resp.text)
    assert of(samples, "hookline_signature_failures_total") == {
        frozenset({("source", "stripe"), ("provider", "stripe")}): 2
    }
    assert pick(samples, "hookline_llm_tokens_total", model="claude-haiku-5-5", kind="input") == 10
    assert pick(samples, "hookline_llm_cost_usd_total", model="claude-haiku-5-5") == 0.5


async def test_tenant_label_names_only_configured_tenants(db_url: str, env: None) -> None:
    """The tenant comes from the payload: a sender minting tenants must not mint series. A tenant with
    its own [tenants.NAME] keeps its label, '' (no tenant) stays '', every other tenant is summed as '*'."""
    settings = make_settings(db_url, metrics_token="scrape-me")
    cfg = config(tenants={"cus_42": {"events_per_hour": 1000}})
    async with web_server(settings, cfg) as base, httpx.AsyncClient() as client:
        for n, customer in enumerate(("cus_42", "cus_x1", "cus_x2", "cus_x3")):
            body = stripe_body(f"evt_t{n}", customer)
            assert (await client.post(f"{base}/webhooks/stripe", content=body, headers=signed(body))).status_code == 200
        rows(
            db_url,
            "INSERT INTO hookline.llm_calls (event_id, pipeline, model, status, request, input_tokens, cost_usd) "
            "SELECT id, 'recovery', 'm', 'succeeded', '{}', 10, 0.5 FROM hookline.events RETURNING id",
        )
        resp = await client.get(f"{base}/metrics", headers={"authorization": "Bearer scrape-me"})
    samples = scrape(resp.text)
    assert of(samples, "hookline_llm_tokens_total") == {
        frozenset({("model", "m"), ("tenant", "cus_42"), ("kind", "input")}): 10,
        frozenset({("model", "m"), ("tenant", "*"), ("kind", "input")}): 30,
    }
    assert of(samples, "hookline_llm_cost_usd_total") == {
        frozenset({("model", "m"), ("tenant", "cus_42")}): 0.5,
        frozenset({("model", "m"), ("tenant", "*")}): 1.5,
    }


async def test_breaker_state_is_a_gauge_per_model(db_url: str, env: None) -> None:
    rows(
        db_url,
        "INSERT INTO hookline.breakers (model, state, failures, opened_at, open_until) VALUES "
        "('m-closed', 'closed', 0, NULL, NULL), "
        "('m-open', 'open', 5, now(), now() + interval '1 hour'), "
        "('m-probe', 'open', 5, now() - interval '2 minutes', now() - interval '1 minute') RETURNING model",
    )
    async with web_server(make_settings(db_url), config()) as base, httpx.AsyncClient() as client:
        resp = await client.get(f"{base}/metrics")
    samples = scrape(resp.text)
    assert of(samples, "hookline_breaker_state") == {
        frozenset({("model", "m-closed")}): 0,
        frozenset({("model", "m-open")}): 1,
        frozenset({("model", "m-probe")}): 2,  # open_until passed: the next call is the half-open probe
    }


async def test_worker_json_logs_carry_event_and_request_ids(
    db_url: str, env: None, caplog: pytest.LogCaptureFixture
) -> None:
    settings = make_settings(db_url)  # no API key: dry run, still a full pass through the worker
    cfg = config()
    caplog.set_level(logging.INFO)
    async with web_server(settings, cfg) as base, worker_task(settings, cfg):
        body = stripe_body("evt_log")
        async with httpx.AsyncClient() as client:
            resp = await client.post(
                f"{base}/webhooks/stripe", content=body, headers=signed(body) | {"x-request-id": "req-abc-123"}
            )
        assert resp.headers["x-request-id"] == "req-abc-123"
        event_id = resp.json()["event_id"]
        await wait_for_status(db_url, event_id)
    assert rows(db_url, "SELECT request_id FROM hookline.events WHERE id = %s", event_id) == [("req-abc-123",)]
    fmt = JsonFormatter()
    lines: list[dict[str, Any]] = [json.loads(fmt.format(r)) for r in caplog.records]
    web = [x for x in lines if x["logger"] == "hookline.ingest" and x.get("event_id") == event_id]
    assert web and web[0]["request_id"] == "req-abc-123"
    finished = [x for x in lines if x["logger"] == "hookline.worker" and x.get("status") == "succeeded"]
    assert finished and finished[-1]["event_id"] == event_id and finished[-1]["request_id"] == "req-abc-123"


def test_log_context_is_scoped() -> None:
    log = logging.getLogger("hookline.test")
    with log_context(event_id=7):
        bind_log_context(request_id="r", tenant=None)
        inside = log.makeRecord("hookline.test", logging.INFO, "", 0, "m", (), None)
    outside = log.makeRecord("hookline.test", logging.INFO, "", 0, "m", (), None)
    assert (inside.event_id, inside.request_id) == (7, "r")  # type: ignore[attr-defined]
    assert not hasattr(inside, "tenant") and not hasattr(outside, "event_id")


async def test_scrapes_arriving_together_share_one_set_of_cluster_queries(
    db_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """/metrics is public without a token: twenty scrapes at once must not make Postgres run twenty
    sets of its queries. The queries are the real ones, on the real pool; only their start is counted
    (and held a moment, so that the scrapes overlap whatever the machine's speed)."""

    from app.web import metrics

    real, started = metrics.cluster_figures, 0

    async def counted(pool: Any, tenants: Any = (), **kw: Any) -> Any:
        nonlocal started
        started += 1
        await asyncio.sleep(0.5)
        return await real(pool, tenants, **kw)

    monkeypatch.setattr(metrics, "cluster_figures", counted)
    settings = make_settings(db_url)
    async with web_server(settings, config_from({})) as base, httpx.AsyncClient(timeout=30) as client:
        answers = await asyncio.gather(*(client.get(f"{base}/metrics") for _ in range(20)))
        assert all(a.status_code == 200 for a in answers)
        assert all(pick(scrape(a.text), "hookline_database_up") == 1.0 for a in answers)
        together = started
        assert together <= 2, f"{together} sets of cluster queries for 20 concurrent scrapes"
        later = await client.get(f"{base}/metrics")  # after they ended: a fresh set, no answer kept
    assert later.status_code == 200 and started == together + 1
