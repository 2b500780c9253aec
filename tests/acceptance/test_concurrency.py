"""Concurrency caps across worker processes: ``concurrency = { per_tenant }`` holds a tenant's events in
flight to the cap whatever the number of workers, counted at the fake Messages API, while another
tenant's events go on. Two real worker processes, real Postgres, the anthropic SDK against the fake."""

from __future__ import annotations

import json
from typing import Any

import psycopg

from tests.acceptance.test_limits import SECRET, statuses, wait_until
from tests.fakes.messages_api import FakeMessagesAPI, reply, slow
from tests.harness import rows

TOML = """
[sources.stripe]
provider = "stripe"
secrets_env = ["HL_STRIPE_SECRET"]

[pipelines.triage]
source = "stripe"
events = ["invoice.*"]
fields = ["id"]
model = "claude-haiku-5-5"
instructions = "Triage."
output_schema = { type = "object", properties = { subject = { type = "string" } }, required = ["subject"] }
concurrency = { per_tenant = 2 }

[[pipelines.triage.actions]]
type = "log"
"""


async def test_per_tenant_caps_events_in_flight_across_two_worker_processes(
    db_url: str, fake: FakeMessagesAPI, tmp_path: Any
) -> None:
    from tests.chaos_support import Workers, worker_env

    fake.set_default(slow(1.0, reply({"subject": "ok"})))  # a slow model: calls overlap unless capped
    (tmp_path / "hookline.toml").write_text(TOML)
    env = worker_env(db_url, tmp_path / "hookline.toml", fake_url=fake.base_url, HL_STRIPE_SECRET=SECRET)
    workers = Workers(tmp_path)  # 2 processes x concurrency 4: room for all 6 of tenant a at once
    try:
        for proc in [workers.spawn("a", env), workers.spawn("b", env)]:
            await workers.ready(proc, timeout=120)
        with psycopg.connect(db_url, autocommit=True) as conn:
            for delivery, tenant in [*[(f"evt_a{i}", "a") for i in range(6)], ("evt_b0", "b"), ("evt_b1", "b")]:
                conn.execute(
                    "INSERT INTO hookline.events (source, delivery_id, event_type, payload, tenant) "
                    "VALUES ('stripe', %s, 'invoice.paid', %s, %s)",
                    (delivery, json.dumps({"id": delivery}), tenant),
                )
        await wait_until(
            lambda: [s for s, _ in statuses(db_url).values()] == ["succeeded"] * 8, "every event done", timeout=90
        )
        calls = fake.calls_to("/v1/messages")
        assert len(calls) == 8  # all finish, each answered once
        assert fake.max_in_flight("/v1/messages", "evt_a") == 2  # never more than per_tenant at the fake
        assert fake.max_in_flight("/v1/messages", "evt_b") == 2  # tenant b has its own two slots
        a_calls = [c for c in calls if "evt_a" in json.dumps(c.body)]
        b_calls = [c for c in calls if "evt_b" in json.dumps(c.body)]
        # tenant b was not held behind tenant a's backlog: both its answers came before a's last call began
        assert max(c.done_at or 0 for c in b_calls) <= max(c.at for c in a_calls)
        log = workers.report()
        assert "concurrency of pipeline triage: tenant 'a' has 2 event(s) in flight (per_tenant = 2)" in log
        assert rows(db_url, "SELECT count(*) FROM hookline.concurrency_slots") == [(0,)]  # every slot given back
        waits = rows(db_url, "SELECT attempts, infra_failures FROM hookline.events WHERE tenant = 'a'")
        assert waits == [(1, 0)] * 6  # waiting for a slot is neither an attempt nor a failure
    finally:
        workers.stop_all()
