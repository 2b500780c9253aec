"""The worker's log lines about an event never carry a value its source's ``redact`` hides: an
invalid model answer's error (jsonschema quotes the bad value) and an action's error (a template that
looks a value up, an exception of a python action) read ``[redacted]`` in the "attempt N failed" and
"is dead" lines, and so does a ``log`` action's line where the answer repeats one, as where the event
is shown; the stored ``last_error`` keeps the text whole (masked when shown, and by retention). Driven
through ``handle_event`` against real Postgres."""

from __future__ import annotations

import json
import logging
from typing import Any

import psycopg
import pytest

from app.core.config import Config
from tests.fakes.messages_api import FakeMessagesAPI, reply
from tests.harness import config_from, make_settings, rows, wait_for_status, worker_task
from worker.actions import ActionContext
from worker.runtime import Runtime
from worker.tasks import RetryLater, handle_event

EMAIL = "alice.secret@example.com"
PAYLOAD = {"customer": {"email": EMAIL}, "plan": "pro"}


def refuse(ctx: ActionContext) -> None:
    """A python action whose exception quotes the payload's value."""
    raise ValueError(f"no customer {ctx.payload['customer']['email']}")


def make_config(schema: dict[str, Any], actions: list[dict[str, Any]]) -> Config:
    pipeline = {
        "source": "shop",
        "events": ["*"],
        "fields": ["customer.email", "plan"],
        "instructions": "x",
        "output_schema": schema,
        "retry": {"max_attempts": 2, "backoff_seconds": 0.05, "max_backoff_seconds": 1, "jitter": False},
        "actions": actions,
    }
    source = {"provider": "github", "secrets_env": ["HL_GH_SECRET"], "redact": ["customer.email"]}
    return config_from({"sources": {"shop": source}, "pipelines": {"p": pipeline}})


async def run_until_done(db_url: str, fake: FakeMessagesAPI, config: Config) -> int:
    """Store the event and run it until it ends (at most two runs: a retry, then the last attempt)."""
    with psycopg.connect(db_url, autocommit=True) as conn:
        row = conn.execute(
            "INSERT INTO hookline.events (source, delivery_id, event_type, payload) "
            "VALUES ('shop', 'd1', 'order.paid', %s) RETURNING id",
            (json.dumps(PAYLOAD),),
        ).fetchone()
    assert row is not None
    rt = Runtime.build(make_settings(db_url, anthropic_api_key="sk-test", anthropic_base_url=fake.base_url), config)
    await rt.open()
    try:
        for _ in range(2):
            try:
                await handle_event(rt, int(row[0]))
                break
            except RetryLater:
                pass
    finally:
        await rt.close()
    return int(row[0])


def worker_lines(caplog: pytest.LogCaptureFixture) -> list[str]:
    return [r.getMessage() for r in caplog.records if r.name.startswith("hookline")]


async def test_an_invalid_answer_quoting_a_redacted_value_is_logged_masked(
    db_url: str, fake: FakeMessagesAPI, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    monkeypatch.setenv("HL_GH_SECRET", "gh-secret")
    schema = {"type": "object", "properties": {"count": {"type": "integer"}}, "required": ["count"]}
    fake.enqueue(*[reply({"count": EMAIL})] * 4)  # each attempt: the answer and its repair turn
    with caplog.at_level(logging.INFO):
        event_id = await run_until_done(db_url, fake, make_config(schema, []))
    ((status, last_error),) = rows(db_url, "SELECT status, last_error FROM hookline.events WHERE id = %s", event_id)
    assert status == "dead" and f"'{EMAIL}' is not of type 'integer'" in last_error  # stored whole
    lines = worker_lines(caplog)
    failed = [line for line in lines if "attempt 1 failed" in line]
    dead = [line for line in lines if "is dead" in line]
    assert len(failed) == 1 and len(dead) == 1, lines
    for line in (*failed, *dead):
        assert "'[redacted]' is not of type 'integer'" in line
    assert not [line for line in lines if "alice" in line]


@pytest.mark.parametrize(
    "action",
    [
        {"type": "http", "url_env": "HL_CRM_URL", "body": "{{ {'pro': 'a'}[fields['customer.email']] }}"},
        {"type": "python", "target": f"{__name__}:refuse"},
    ],
    ids=["template", "python"],
)
async def test_an_action_error_quoting_a_redacted_value_is_logged_masked(
    action: dict[str, Any],
    db_url: str,
    fake: FakeMessagesAPI,
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
) -> None:
    monkeypatch.setenv("HL_GH_SECRET", "gh-secret")
    monkeypatch.setenv("HL_CRM_URL", "https://crm.example.com/hook")
    schema = {"type": "object", "properties": {"s": {"type": "string"}}, "required": ["s"]}
    fake.enqueue(reply({"s": "ok"}))
    with caplog.at_level(logging.INFO):
        event_id = await run_until_done(db_url, fake, make_config(schema, [{"name": "act", **action}]))
    ((status, last_error),) = rows(db_url, "SELECT status, last_error FROM hookline.events WHERE id = %s", event_id)
    assert status == "dead" and EMAIL in last_error  # stored whole
    lines = worker_lines(caplog)
    dead = [line for line in lines if "is dead" in line]
    assert len(dead) == 1 and "[redacted]" in dead[0], lines
    assert not [line for line in lines if "alice" in line]


async def test_a_log_action_masks_a_redacted_value_the_answer_repeats(
    db_url: str, fake: FakeMessagesAPI, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    """The ``log`` action's line is the answer as the event's page shows it."""
    monkeypatch.setenv("HL_GH_SECRET", "gh-secret")
    schema = {"type": "object", "properties": {"s": {"type": "string"}}, "required": ["s"]}
    fake.enqueue(reply({"s": f"write to {EMAIL}"}))
    with caplog.at_level(logging.INFO):
        event_id = await run_until_done(db_url, fake, make_config(schema, [{"type": "log", "name": "out"}]))
    assert rows(db_url, "SELECT status FROM hookline.events WHERE id = %s", event_id) == [("succeeded",)]
    logged = [r.getMessage() for r in caplog.records if r.name == "hookline.output"]
    assert logged == [f'p/out event {event_id}: {{"s": "write to [redacted]"}}']


#: the event's skipped outcome is refused once by Postgres, quoting the payload's redacted value
REFUSE_SKIP_ONCE = """
CREATE SEQUENCE test_refusals;
CREATE FUNCTION test_refuse_skip() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    IF NEW.status = 'skipped' AND nextval('test_refusals') = 1 THEN
        RAISE EXCEPTION 'refused for %', NEW.payload #>> '{customer,email}';
    END IF;
    RETURN NEW;
END $$;
CREATE TRIGGER test_refuse_skip BEFORE UPDATE ON hookline.events FOR EACH ROW EXECUTE FUNCTION test_refuse_skip();
"""


async def test_a_failure_outside_the_pipeline_quoting_a_redacted_value_is_logged_masked(
    db_url: str, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    """A database error that escapes the pipelines (here the skipped outcome's write, refused with the
    value in its message) is an infrastructure failure: its "job run failed outside the pipeline" line
    quoted the error in clear. The real worker runs the event again, and it ends skipped."""
    monkeypatch.setenv("HL_GH_SECRET", "gh-secret")
    source = {"provider": "github", "secrets_env": ["HL_GH_SECRET"], "redact": ["customer.email"]}
    pipeline = {
        "source": "shop",
        "events": ["*"],
        "instructions": "x",
        "output_schema": {"type": "object"},
        "when": "payload.plan == 'free'",
    }
    skipping = config_from({"sources": {"shop": source}, "pipelines": {"p": pipeline}})
    with psycopg.connect(db_url, autocommit=True) as conn:
        conn.execute(REFUSE_SKIP_ONCE)
        ((event_id,),) = conn.execute(
            "INSERT INTO hookline.events (source, delivery_id, event_type, payload) "
            "VALUES ('shop', 'd1', 'order.paid', %s) RETURNING id",
            (json.dumps(PAYLOAD),),
        ).fetchall()
    with caplog.at_level(logging.INFO):
        async with worker_task(make_settings(db_url), skipping):
            done = await wait_for_status(db_url, event_id)
    assert done["status"] == "skipped", done
    lines = worker_lines(caplog)
    failed = [line for line in lines if "failed outside the pipeline" in line]
    assert len(failed) == 1 and "refused for [redacted]" in failed[0], lines
    assert not [line for line in lines if "alice" in line]
