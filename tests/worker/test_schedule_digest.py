"""Schedule digests. A firing copies fields of other sources' events: the admin API masks them with
each event's own source's ``redact`` paths, as it masks the events themselves.

Real Postgres, the real firing (``worker.schedules.fire``) and the admin API's own read.
"""

from __future__ import annotations

import json
from datetime import UTC, datetime

import asyncpg
import psycopg
import pytest

from app.core.redaction import MASK
from app.web.admin import data
from tests.harness import config_from, make_settings
from worker import schedules
from worker.runtime import Runtime

SCHEMA = {"type": "object"}
SECRET_EMAIL = "ada@secret.example"


@pytest.mark.parametrize(
    "example_fields",
    [
        [],  # whole payloads
        ["data.object"],  # a listed field above the redacted path
        ["data.object.customer_email", "type"],  # the redacted path itself
    ],
)
async def test_a_digest_shows_other_sources_redacted_fields_masked(db_url: str, example_fields: list[str]) -> None:
    cfg = config_from(
        {
            "sources": {
                "stripe": {"provider": "stripe", "secrets_env": ["HL_ST"], "redact": ["data.object.customer_email"]}
            },
            "schedules": {
                "daily": {"cron": "0 9 * * *", "pipeline": "digest", "window": "7d", "example_fields": example_fields}
            },
            "pipelines": {"digest": {"source": "schedule", "instructions": "x", "output_schema": SCHEMA}},
        }
    )
    n = len(example_fields)
    when = datetime(2019, 5, 1 + 10 * n, 9, tzinfo=UTC)  # a window of its own: no other test's events
    payload = {"type": "invoice.payment_failed", "data": {"object": {"customer_email": SECRET_EMAIL, "amount": 5}}}
    with psycopg.connect(db_url, autocommit=True) as c:
        row = c.execute(
            "INSERT INTO hookline.events (source, delivery_id, event_type, payload, received_at, status)"
            " VALUES ('stripe', %s, 'invoice.payment_failed', %s, %s, 'succeeded') RETURNING id",
            (f"evt_redact_{n}", json.dumps(payload), when.replace(hour=8)),
        ).fetchone()
        assert row is not None
    rt = Runtime.build(make_settings(db_url), cfg)
    await rt.open()
    try:
        firing = await schedules.fire(rt, cfg.schedules["daily"], when)
    finally:
        await rt.close()
    assert firing is not None
    conn = await asyncpg.connect(db_url)
    await conn.set_type_codec("jsonb", encoder=json.dumps, decoder=json.loads, schema="pg_catalog")
    try:
        own = await data.event_detail(conn, cfg, row[0])
        digest = await data.event_detail(conn, cfg, firing)
    finally:
        await conn.close()
    assert own is not None and digest is not None
    assert own["event"]["payload"]["data"]["object"]["customer_email"] == MASK
    (example,) = digest["event"]["payload"]["examples"]
    assert SECRET_EMAIL not in json.dumps(digest), example
    assert MASK in json.dumps(example["fields"])
    assert "5" in json.dumps(example["fields"]) or example_fields == ["data.object.customer_email", "type"]
    with psycopg.connect(db_url) as c:  # the stored row keeps the value, as for every redacted field
        stored = c.execute("SELECT payload::text FROM hookline.events WHERE id = %s", (firing,)).fetchone()
        assert stored is not None and SECRET_EMAIL in stored[0]


async def test_a_digest_filter_on_event_types_is_literal_but_for_a_trailing_star(db_url: str) -> None:
    """``events = ["invoice.payment_failed"]`` is that type only: the ``_`` in it is no LIKE wildcard."""
    cfg = config_from(
        {
            "sources": {"stripe": {"provider": "stripe", "secrets_env": ["HL_ST"]}},
            "schedules": {
                "exact": {"cron": "0 9 * * *", "pipeline": "digest", "filter": {"events": ["invoice.payment_failed"]}},
                "prefix": {"cron": "0 9 * * *", "pipeline": "digest", "filter": {"events": ["invoice.*"]}},
            },
            "pipelines": {"digest": {"source": "schedule", "instructions": "x", "output_schema": SCHEMA}},
        }
    )
    when = datetime(2019, 7, 1, 9, tzinfo=UTC)
    with psycopg.connect(db_url, autocommit=True) as c:
        for i, event_type in enumerate(["invoice.payment_failed", "invoice.paymentXfailed", "customer.created"]):
            c.execute(
                "INSERT INTO hookline.events (source, delivery_id, event_type, payload, received_at, status)"
                " VALUES ('stripe', %s, %s, '{}', %s, 'succeeded')",
                (f"evt_like_{i}", event_type, when.replace(hour=8)),
            )
    rt = Runtime.build(make_settings(db_url), cfg)
    await rt.open()
    try:
        exact = await schedules.build_digest(rt, cfg.schedules["exact"], when.replace(hour=0), when)
        prefix = await schedules.build_digest(rt, cfg.schedules["prefix"], when.replace(hour=0), when)
    finally:
        await rt.close()
    assert [c["event_type"] for c in exact["counts"]] == ["invoice.payment_failed"]
    assert sorted(c["event_type"] for c in prefix["counts"]) == ["invoice.paymentXfailed", "invoice.payment_failed"]
