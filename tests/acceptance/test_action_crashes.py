"""A worker killed (SIGKILL) between an action's call and its record, with real worker children:

* ``sql``: the call and its record share a transaction; the kill rolls both back, the next worker
  calls again and commits: exactly one row in the business table.
* ``slack``: the message may be out and Slack has no idempotency key: the next worker does not post
  again (at most once); the event is a dead letter that says why.

(``http`` redelivers with the same idempotency key: tests/acceptance/test_chaos.py.)
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import psycopg
import pytest

from tests.chaos_support import Workers, freshest_heartbeat_age, query, wait_until, worker_env
from tests.fakes.messages_api import FakeMessagesAPI, reply
from tests.fakes.slack import FakeSlack

STALLED_AFTER = 2.0
LOCK = 4242
CRM = f"""
CREATE SCHEMA crm;
CREATE TABLE crm.lead_scores (event_id bigint NOT NULL, score integer NOT NULL);
CREATE FUNCTION crm.apply_lead_score(event_id bigint, output jsonb) RETURNS integer
LANGUAGE plpgsql AS $$
BEGIN
    INSERT INTO crm.lead_scores VALUES (event_id, (output->>'score')::integer);
    PERFORM pg_advisory_xact_lock({LOCK});  -- the test holds it: the worker stops between call and commit
    RETURN (output->>'score')::integer;
END $$;
"""
CONFIG = """
[sources.github]
provider = "github"
secrets_env = ["HL_GH_SECRET"]

[pipelines.leads]
source = "github"
instructions = "Score the lead."
output_schema = { type = "object", properties = { score = { type = "integer" } }, required = ["score"] }

[[pipelines.leads.actions]]
type = "KIND"
EXTRA
"""


@pytest.fixture
def workers(tmp_path: Path) -> Iterator[Workers]:
    w = Workers(tmp_path)
    yield w
    w.stop_all()


def insert_event(db_url: str, delivery_id: str) -> int:
    got = query(
        db_url,
        "INSERT INTO hookline.events (source, delivery_id, event_type, payload) "
        "VALUES ('github', %s, 'issues.opened', %s) RETURNING id",
        delivery_id,
        json.dumps({"issue": {"number": 1}}),
    )
    return int(got[0][0])


def runs(db_url: str, event_id: int) -> list[tuple[Any, ...]]:
    return query(db_url, "SELECT action, status, attempts FROM hookline.action_runs WHERE event_id = %s", event_id)


async def restart_after_kill(db_url: str, workers: Workers, env: dict[str, str], victim: Any) -> None:
    victim.kill()
    await wait_until(
        lambda: freshest_heartbeat_age(db_url) > STALLED_AFTER + 0.2,
        timeout=15,
        what="the killed worker's heartbeat to go stale",
        report=workers.report,
    )
    await workers.start("B", env)


async def wait_status(db_url: str, event_id: int, workers: Workers) -> str:
    def check() -> str | None:
        got = query(db_url, "SELECT status FROM hookline.events WHERE id = %s", event_id)[0][0]
        return str(got) if got in ("succeeded", "dead", "skipped") else None

    status: str = await wait_until(check, timeout=40, what=f"event {event_id} to finish", report=workers.report)
    return status


async def test_sql_action_is_exactly_once_across_a_kill_between_call_and_record(
    db_url: str, conn: psycopg.Connection[Any], tmp_path: Path, workers: Workers, fake: FakeMessagesAPI
) -> None:
    conn.execute(CRM)
    config = tmp_path / "hookline.toml"
    config.write_text(CONFIG.replace("KIND", "sql").replace("EXTRA", 'function = "crm.apply_lead_score"'))
    env = worker_env(db_url, config, fake_url=fake.base_url, stalled=STALLED_AFTER, HL_GH_SECRET="x")
    fake.enqueue(reply({"score": 87}))
    conn.execute("SELECT pg_advisory_lock(%s)", (LOCK,))
    a = await workers.start("A", env)
    event_id = insert_event(db_url, "gh_sql_kill")

    def worker_inside_the_call() -> bool:
        got = query(
            db_url,
            "SELECT count(*) FROM pg_stat_activity WHERE application_name = 'hookline-worker' "
            "AND wait_event_type = 'Lock' AND wait_event = 'advisory'",
        )
        return bool(got[0][0])

    await wait_until(
        worker_inside_the_call, timeout=30, what="the worker to be inside the sql call", report=workers.report
    )
    assert runs(db_url, event_id) == [("sql#0", "running", 1)]
    a.kill()
    conn.execute("SELECT pg_advisory_unlock(%s)", (LOCK,))  # the dead worker's backend may now finish: no COMMIT comes
    await wait_until(
        lambda: (
            not query(
                db_url,
                "SELECT 1 FROM pg_stat_activity WHERE application_name = 'hookline-worker' AND xact_start IS NOT NULL "
                "AND pid <> pg_backend_pid()",
            )
        ),
        timeout=15,
        what="the killed worker's open transaction to end",
    )
    assert query(db_url, "SELECT count(*) FROM crm.lead_scores") == [(0,)], "the kill rolled the call back"

    await restart_after_kill(db_url, workers, env, a)
    assert await wait_status(db_url, event_id, workers) == "succeeded"
    assert query(db_url, "SELECT event_id, score FROM crm.lead_scores") == [(event_id, 87)], "exactly once"
    assert runs(db_url, event_id) == [("sql#0", "succeeded", 2)]
    assert len(fake.calls_to("/v1/messages")) == 1, "the stored answer was reused"


async def test_slack_action_is_at_most_once_across_a_kill_mid_post(
    db_url: str, tmp_path: Path, workers: Workers, fake: FakeMessagesAPI
) -> None:
    with FakeSlack(token="xoxb-fake") as slack:
        config = tmp_path / "hookline.toml"
        config.write_text(
            CONFIG.replace("KIND", "slack").replace(
                # a short timeout: the next worker waits out a running post for its timeout + 5 s
                "EXTRA",
                'token_env = "HL_SLACK_TOKEN"\nchannel = "C1"\ntext = "{{ output.score }}"\ntimeout_seconds = 3',
            )
        )
        env = worker_env(
            db_url,
            config,
            fake_url=fake.base_url,
            stalled=STALLED_AFTER,
            HL_GH_SECRET="x",
            HL_SLACK_TOKEN="xoxb-fake",
            HOOKLINE_SLACK_API_URL=slack.api_url,
        )
        fake.enqueue(reply({"score": 87}))
        slack.hold(30)  # Slack got the post (and will show it) but the answer never reaches the worker
        a = await workers.start("A", env)
        event_id = insert_event(db_url, "gh_slack_kill")
        await wait_until(
            lambda: len(slack.posts) == 1, timeout=30, what="the post to reach Slack", report=workers.report
        )
        await restart_after_kill(db_url, workers, env, a)
        assert await wait_status(db_url, event_id, workers) == "dead"
        assert len(slack.posts) == 1, "not posted twice"
    assert runs(db_url, event_id) == [("slack#0", "failed", 2)]
    (err,) = query(db_url, "SELECT last_error FROM hookline.events WHERE id = %s", event_id)[0]
    assert "outcome unknown" in err and "at most" in err and f"hookline replay {event_id}" in err
