"""An action's error names the place, never the value it refused: ``action_runs.error`` and
``events.last_error`` are shown by the dashboard and the admin API, and the values come from the
payload or the model's answer. Driven through ``handle_event`` against real Postgres and a local SMTP
server: an SMTP URL whose password holds '/' (refused by name, works percent-encoded), an email ``to``
that renders to no single address, and a ``sql`` function a value of the answer breaks (class 22)."""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any
from urllib.parse import quote

import psycopg
import pytest

from app.core.config import Config
from tests.fakes.messages_api import FakeMessagesAPI, reply
from tests.fakes.smtp import SmtpServer
from tests.harness import config_from, make_settings, rows
from worker.runtime import Runtime
from worker.tasks import handle_event

PASSWORD = "BHk3PwLEAK/d+tail"  # the shape of an AWS SES SMTP password
VALUE = "SECRET-not-an-address-nor-a-number"
SCHEMA = {"type": "object", "properties": {"to": {"type": "string"}}, "required": ["to"]}
CRM = """
CREATE SCHEMA crm;
CREATE TABLE crm.scores (event_id bigint PRIMARY KEY, score integer NOT NULL);
CREATE FUNCTION crm.record(event_id bigint, output jsonb) RETURNS integer LANGUAGE plpgsql AS $$
DECLARE
    n integer;
BEGIN
    n := (output->>'to')::integer;
    INSERT INTO crm.scores VALUES (event_id, n);
    RETURN n;
END $$;
"""


@pytest.fixture
def smtp() -> Iterator[SmtpServer]:
    with SmtpServer(users={"AKIAEXAMPLE": PASSWORD}) as s:
        yield s


def make_config(action: dict[str, Any]) -> Config:
    pipeline = {
        "source": "github",
        "events": ["*"],
        "instructions": "x",
        "output_schema": SCHEMA,
        "retry": {"max_attempts": 2, "backoff_seconds": 0.05, "max_backoff_seconds": 1, "jitter": False},
        "actions": [{"name": "act", **action}],
    }
    return config_from(
        {
            "sources": {"github": {"provider": "github", "secrets_env": ["HL_GH_SECRET"]}},
            "pipelines": {"p": pipeline},
        }
    )


async def run_once(db_url: str, fake: FakeMessagesAPI, config: Config, answer: dict[str, Any], delivery: str) -> int:
    rt = Runtime.build(make_settings(db_url, anthropic_api_key="sk-test", anthropic_base_url=fake.base_url), config)
    await rt.open()
    try:
        fake.enqueue(reply(answer))
        with psycopg.connect(db_url, autocommit=True) as conn:
            row = conn.execute(
                "INSERT INTO hookline.events (source, delivery_id, event_type, payload) "
                "VALUES ('github', %s, 'issues.opened', %s) RETURNING id",
                (delivery, json.dumps(answer)),  # the payload holds the same values (an email's to reads fields)
            ).fetchone()
        assert row is not None
        await handle_event(rt, int(row[0]))
    finally:
        await rt.close()
    return int(row[0])


def outcome(db_url: str, event_id: int) -> tuple[str, str, str]:
    ((status, error),) = rows(db_url, "SELECT status, error FROM hookline.action_runs WHERE event_id = %s", event_id)
    ((last_error,),) = rows(db_url, "SELECT last_error FROM hookline.events WHERE id = %s", event_id)
    return status, error or "", last_error or ""


async def test_an_smtp_password_with_a_slash_is_refused_by_name_and_works_encoded(
    db_url: str, fake: FakeMessagesAPI, smtp: SmtpServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("HL_GH_SECRET", "gh-secret")
    action = {"type": "email", "smtp_url_env": "HL_SMTP_URL", "from": "ops@example.com", "to": "{{ fields.to }}",
              "subject": "s", "body": "b"}  # fmt: skip
    host = f"127.0.0.1:{smtp.controller.port}"
    monkeypatch.setenv("HL_SMTP_URL", f"smtp://AKIAEXAMPLE:{PASSWORD}@{host}")
    bad = await run_once(db_url, fake, make_config(action), {"to": "ada@example.com"}, "gh_raw")
    status, error, last_error = outcome(db_url, bad)
    assert status == "failed" and "HL_SMTP_URL is not a valid smtp://" in error and error in last_error
    assert "percent-encode reserved characters in the user and password" in error
    assert "PwLEAK" not in error + last_error and "d+tail" not in error + last_error
    assert smtp.messages == []
    monkeypatch.setenv("HL_SMTP_URL", f"smtp://AKIAEXAMPLE:{quote(PASSWORD, safe='')}@{host}")
    good = await run_once(db_url, fake, make_config(action), {"to": "ada@example.com"}, "gh_encoded")
    assert outcome(db_url, good)[0] == "succeeded"
    assert [m.rcpt_tos for m in smtp.messages] == [["ada@example.com"]]


@pytest.mark.parametrize(
    ("to", "why"),
    [
        (VALUE, ""),
        (f"{VALUE}@x.io, b@y.io", " (2 addresses)"),
        (f"{VALUE}@x.io\r\nBcc: b@y.io", " (it holds a line break)"),
    ],
)
async def test_an_email_to_that_is_not_one_address_names_the_template(
    to: str, why: str, db_url: str, fake: FakeMessagesAPI, smtp: SmtpServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("HL_GH_SECRET", "gh-secret")
    monkeypatch.setenv("HL_SMTP_URL", smtp.url())
    action = {"type": "email", "smtp_url_env": "HL_SMTP_URL", "from": "ops@example.com", "to": "{{ fields.to }}",
              "subject": "s", "body": "b"}  # fmt: skip
    event_id = await run_once(db_url, fake, make_config(action), {"to": to}, "gh_to")
    status, error, last_error = outcome(db_url, event_id)
    assert status == "failed"
    assert error == f"email action act: to '{{{{ fields.to }}}}': the rendered value is not one email address{why}"
    assert "SECRET" not in json.dumps([error, last_error])
    assert smtp.messages == []


async def test_a_sql_data_exception_names_the_place_not_the_value(
    db_url: str, conn: psycopg.Connection[Any], fake: FakeMessagesAPI, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Postgres quotes the input it refused (``invalid input syntax for type integer: "…"``); the
    stored error keeps the rule and names the line of the function instead."""
    monkeypatch.setenv("HL_GH_SECRET", "gh-secret")
    conn.execute(CRM)
    event_id = await run_once(
        db_url, fake, make_config({"type": "sql", "function": "crm.record"}), {"to": VALUE}, "gh_sql"
    )
    status, error, last_error = outcome(db_url, event_id)
    assert status == "failed"
    assert error == (
        "sql action act: crm.record failed: 22P02 InvalidTextRepresentation: invalid input syntax for type integer: "
        "<value not shown> (PL/pgSQL function crm.record(bigint,jsonb) line 5 at assignment)"
    )
    assert "SECRET" not in json.dumps([error, last_error])
    assert rows(db_url, "SELECT count(*) FROM crm.scores") == [(0,)]
