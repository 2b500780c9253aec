"""Actions that reach real systems, each against its local fake, driven through ``handle_event``:
a Slack incoming webhook and ``chat.postMessage`` (tests.fakes.slack), SMTP (aiosmtpd in process), a
SQL function in a business schema, an http callback to a sender's API. Plus template errors at
render time, Slack's 429, and ``when`` routing before any model call."""

from __future__ import annotations

import json
from collections.abc import Iterator
from datetime import UTC, datetime
from decimal import Decimal
from typing import Any

import psycopg
import pytest

from app.core.config import Config
from tests import pipeline_models
from tests.fakes.messages_api import FakeMessagesAPI, reply
from tests.fakes.slack import Answer, FakeSlack, rate_limited
from tests.fakes.smtp import SmtpServer
from tests.harness import Receiver, config_from, make_settings, refuse_rows, rows
from worker.actions import sql as sql_action
from worker.runtime import Runtime
from worker.tasks import RetryLater, handle_event

ANSWER = {"summary": "Ada's card was declined", "score": 87, "to": "ada@example.com"}
SCHEMA = {
    "type": "object",
    "properties": {"summary": {"type": "string"}, "score": {"type": "integer"}, "to": {"type": "string"}},
    "required": ["summary", "score", "to"],
}
CRM = """
CREATE SCHEMA crm;
CREATE TABLE crm.lead_scores (event_id bigint PRIMARY KEY, score integer NOT NULL);
CREATE FUNCTION crm.apply_lead_score(event_id bigint, output jsonb) RETURNS integer
LANGUAGE sql AS $$
    INSERT INTO crm.lead_scores VALUES (event_id, (output->>'score')::integer) RETURNING score
$$;
"""


def make_config(actions: list[dict[str, Any]], **over: Any) -> Config:
    pipeline: dict[str, Any] = {
        "source": "github",
        "events": ["issues.*"],
        "fields": ["repository.full_name", "issue.number", "issue.title", "issue.reporter"],
        "instructions": "Score the lead.",
        "output_schema": SCHEMA,
        "retry": {"max_attempts": 3, "backoff_seconds": 0.05, "max_backoff_seconds": 30, "jitter": False},
        "actions": actions,
        **over,
    }
    return config_from(
        {
            "sources": {"github": {"provider": "github", "secrets_env": ["HL_GH_SECRET"]}},
            "pipelines": {"leads": pipeline},
        }
    )


@pytest.fixture
def slack() -> Iterator[FakeSlack]:
    with FakeSlack(token="xoxb-fake") as s:
        yield s


@pytest.fixture
def smtp() -> Iterator[SmtpServer]:
    with SmtpServer(users={"hookline": "p@ss word"}) as s:
        yield s


@pytest.fixture(autouse=True)
def env(monkeypatch: pytest.MonkeyPatch, slack: FakeSlack, smtp: SmtpServer) -> None:
    monkeypatch.setenv("HL_GH_SECRET", "gh-secret")
    monkeypatch.setenv("HL_SLACK_WEBHOOK", slack.webhook_url)
    monkeypatch.setenv("HL_SLACK_TOKEN", "xoxb-fake")
    monkeypatch.setenv("HL_SMTP_URL", smtp.url("hookline", "p@ss word"))
    monkeypatch.setenv("HL_API_TOKEN", "ghp_secret_token")


@pytest.fixture
def make_runtime(db_url: str, fake: FakeMessagesAPI, slack: FakeSlack) -> Any:
    async def make(config: Config) -> Runtime:
        settings = make_settings(
            db_url, anthropic_api_key="sk-test", anthropic_base_url=fake.base_url, slack_api_url=slack.api_url
        )
        rt = Runtime.build(settings, config)
        await rt.open()
        return rt

    return make


def insert_event(db_url: str, delivery_id: str, payload: dict[str, Any] | None = None) -> int:
    payload = payload or {
        "action": "opened",
        "repository": {"full_name": "octo/hello world"},
        "issue": {"number": 42, "title": "Pricing for 50 seats?", "reporter": "ada@example.com"},
    }
    with psycopg.connect(db_url, autocommit=True) as conn:
        row = conn.execute(
            "INSERT INTO hookline.events (source, delivery_id, event_type, tenant, payload) "
            "VALUES ('github', %s, 'issues.opened', 'acme', %s) RETURNING id",
            (delivery_id, json.dumps(payload)),
        ).fetchone()
    assert row is not None
    return int(row[0])


def action_rows(db_url: str, event_id: int) -> list[tuple[Any, ...]]:
    return rows(
        db_url,
        "SELECT action, action_type, status, attempts, result, error FROM hookline.action_runs "
        "WHERE event_id = %s ORDER BY id",
        event_id,
    )


async def test_every_action_type_reaches_its_fake(
    db_url: str,
    conn: psycopg.Connection[Any],
    make_runtime: Any,
    fake: FakeMessagesAPI,
    slack: FakeSlack,
    smtp: SmtpServer,
    receiver: Receiver,
) -> None:
    conn.execute(CRM)
    base = receiver.url.removesuffix("/hook")
    actions: list[dict[str, Any]] = [
        {
            "type": "http",
            "name": "comment",
            "url": base + '/repos/{{ fields["repository.full_name"] }}/issues/{{ fields["issue.number"] }}/comments',
            "headers": {"Authorization": {"env": "HL_API_TOKEN", "prefix": "Bearer "}},
            "body": '{"body": {{ output.summary | tojson }}}',
        },
        {
            "type": "slack",
            "name": "webhook",
            "webhook_url_env": "HL_SLACK_WEBHOOK",
            "text": "Lead: {{ output.summary }}",
        },
        {
            "type": "slack",
            "name": "bot",
            "token_env": "HL_SLACK_TOKEN",
            "channel": "C0LEADS",
            "text": "{{ output.summary }}",
            "blocks": [{"type": "section", "text": {"type": "mrkdwn", "text": "*{{ fields['issue.title'] }}*"}}],
        },
        {
            "type": "email",
            "name": "mail",
            "smtp_url_env": "HL_SMTP_URL",
            "from": "Hookline <leads@example.com>",
            "to": "{{ fields['issue.reporter'] }}",  # from the payload: the answer never picks a recipient
            "subject": "About issue #{{ fields['issue.number'] }}",
            "body": "Hi! {{ output.summary }} (event {{ event.id }}, {{ event.tenant }})",
        },
        {"type": "sql", "name": "score", "function": "crm.apply_lead_score"},
    ]
    rt = await make_runtime(make_config(actions))
    try:
        async with await psycopg.AsyncConnection.connect(db_url) as aconn:
            assert await sql_action.problems(aconn, rt.config) == []
        fake.enqueue(reply(ANSWER))
        event_id = insert_event(db_url, "gh_1")
        assert await handle_event(rt, event_id) == "succeeded"
    finally:
        await rt.close()

    runs = action_rows(db_url, event_id)
    assert [(r[0], r[1], r[2], r[3]) for r in runs] == [
        ("comment", "http", "succeeded", 1),
        ("webhook", "slack", "succeeded", 1),
        ("bot", "slack", "succeeded", 1),
        ("mail", "email", "succeeded", 1),
        ("score", "sql", "succeeded", 1),
    ]
    results = {r[0]: r[4] for r in runs}

    # http: the path values are single encoded segments, the token came from the environment, one Content-Type
    (call,) = receiver.received
    assert call.path == "/repos/octo%2Fhello%20world/issues/42/comments"
    assert call.headers["authorization"] == "Bearer ghp_secret_token"
    assert call.json() == {"body": ANSWER["summary"]}
    assert call.headers["idempotency-key"] == f"hookline-{event_id}-leads-comment"
    assert results["comment"]["status"] == 200
    assert "ghp_secret_token" not in json.dumps(runs, default=str)

    # slack: the webhook got the text; chat.postMessage got channel, text and blocks; its ts is kept
    hook, bot = slack.posts
    assert hook.path == "/services/T000/B000/secretpath" and hook.body == {"text": f"Lead: {ANSWER['summary']}"}
    assert bot.path == "/api/chat.postMessage" and bot.headers["authorization"] == "Bearer xoxb-fake"
    assert bot.body["channel"] == "C0LEADS" and bot.body["blocks"][0]["text"]["text"] == "*Pricing for 50 seats?*"
    assert results["bot"]["ts"].startswith("1764579600.") and results["bot"]["channel"] == "C0LEADS"
    assert results["webhook"] == {"ok": True, "via": "webhook"}

    # email: through SMTP AUTH, Message-ID from the idempotency key
    (mail,) = smtp.messages
    assert mail.rcpt_tos == ["ada@example.com"] and mail.mail_from == "leads@example.com"
    assert mail.message["Subject"] == "About issue #42"
    assert f"(event {event_id}, acme)" in mail.message.get_content()
    assert mail.message["Message-ID"] == results["mail"]["message_id"]

    # sql: the function ran once, in the transaction that recorded the action
    assert rows(db_url, "SELECT event_id, score FROM crm.lead_scores") == [(event_id, 87)]
    assert results["score"] == {"function": "crm.apply_lead_score", "returned": 87}


async def test_slack_429_waits_for_retry_after_and_posts_once(
    db_url: str, make_runtime: Any, fake: FakeMessagesAPI, slack: FakeSlack
) -> None:
    rt = await make_runtime(
        make_config([{"type": "slack", "token_env": "HL_SLACK_TOKEN", "channel": "C1", "text": "{{ output.summary }}"}])
    )
    try:
        fake.enqueue(reply(ANSWER))
        slack.enqueue(rate_limited(retry_after=7))
        event_id = insert_event(db_url, "gh_429")
        with pytest.raises(RetryLater) as e:
            await handle_event(rt, event_id)
        assert e.value.delay >= 7, "Slack's Retry-After is a floor for the next attempt"
        assert "Slack answered 429" in str(e.value)
        assert await handle_event(rt, event_id) == "succeeded"
    finally:
        await rt.close()
    assert len(slack.posts) == 2  # the refused one and the posted one
    assert len(fake.calls_to("/v1/messages")) == 1
    assert [(r[2], r[3]) for r in action_rows(db_url, event_id)] == [("succeeded", 2)]


async def test_slack_internal_error_may_have_posted_so_it_is_not_posted_again(
    db_url: str, make_runtime: Any, fake: FakeMessagesAPI, slack: FakeSlack
) -> None:
    """``internal_error`` and ``fatal_error``: Slack's reference says part of the operation may have
    succeeded. The message may be out, so the action fails for good instead of posting again."""
    rt = await make_runtime(
        make_config([{"type": "slack", "token_env": "HL_SLACK_TOKEN", "channel": "C1", "text": "{{ output.summary }}"}])
    )
    try:
        fake.enqueue(reply(ANSWER))
        slack.enqueue(Answer(200, json.dumps({"ok": False, "error": "internal_error"}).encode()))
        event_id = insert_event(db_url, "gh_internal")
        assert await handle_event(rt, event_id) == "dead"
    finally:
        await rt.close()
    assert len(slack.posts) == 1
    (run,) = action_rows(db_url, event_id)
    assert run[2] == "failed" and "may or may not have posted" in run[5]


async def test_a_posted_message_whose_record_meets_a_database_blip_is_recorded_not_dead_lettered(
    db_url: str, make_runtime: Any, fake: FakeMessagesAPI, slack: FakeSlack
) -> None:
    """The Slack post went out; recording it fails once as a server shutting down does (SQLSTATE 57P01,
    raised by a trigger of the real table). The outcome is known: it is written again until it lands.
    It used to leave the run ``running``, and the event's next run dead-lettered it as "may have been
    posted" (a replay would then post it twice)."""
    refuse_rows(
        db_url,
        "test_outcome_refusals",
        "hookline.action_runs",
        event="UPDATE",
        when="NEW.status = 'succeeded'",
        errcode="admin_shutdown",
    )
    rt = await make_runtime(
        make_config([{"type": "slack", "webhook_url_env": "HL_SLACK_WEBHOOK", "text": "{{ output.summary }}"}])
    )
    try:
        fake.enqueue(reply(ANSWER))
        event_id = insert_event(db_url, "gh_blip")
        assert await handle_event(rt, event_id) == "succeeded"
    finally:
        await rt.close()
    assert len(slack.posts) == 1
    assert [r[2] for r in action_rows(db_url, event_id)] == ["succeeded"]
    assert rows(db_url, "SELECT nextval('test_outcome_refusals')") == [(3,)]  # refused once, then landed


async def test_a_template_error_at_render_time_is_a_permanent_failure_with_its_message(
    db_url: str, make_runtime: Any, fake: FakeMessagesAPI, slack: FakeSlack
) -> None:
    rt = await make_runtime(
        make_config([{"type": "slack", "webhook_url_env": "HL_SLACK_WEBHOOK", "text": "{{ output.sumary }}"}])
    )
    try:
        fake.enqueue(reply(ANSWER))
        event_id = insert_event(db_url, "gh_tpl")
        assert await handle_event(rt, event_id) == "dead"
    finally:
        await rt.close()
    assert slack.posts == []
    (run,) = action_rows(db_url, event_id)
    assert run[2] == "failed" and "text: template error" in run[5] and "has no attribute 'sumary'" in run[5]
    (ev,) = rows(db_url, "SELECT status, last_error, detail FROM hookline.events WHERE id = %s", event_id)
    assert ev[0] == "dead" and "has no attribute 'sumary'" in ev[1] and ev[2] == "permanent error"


@pytest.mark.parametrize(
    ("returned", "kept"),
    [
        ({"at": datetime(2025, 1, 2, 3, 4, 5, tzinfo=UTC)}, {"at": "2025-01-02T03:04:05+00:00"}),
        ({"ratio": float("nan"), "big": float("inf")}, {"ratio": "nan", "big": "inf"}),
        (["a\x00b", "\ud800"], ["a\ufffdb", "\ufffd"]),
        ({"ids": (1, 2), "price": Decimal("9.99"), 3: "three"}, {"ids": [1, 2], "price": "9.99", "3": "three"}),
    ],
    ids=["datetime", "nan", "nul-and-surrogate", "tuple-decimal-int-key"],
)
async def test_a_python_action_returning_what_jsonb_cannot_hold_succeeds_once(
    db_url: str, make_runtime: Any, fake: FakeMessagesAPI, returned: Any, kept: Any
) -> None:
    """The function ran, so its run is recorded succeeded, with its value made JSON; the record never
    fails after the side effect (which left the row running and ran the function again on retry)."""
    pipeline_models.GIVE_BACK.update(value=returned, calls=0)
    rt = await make_runtime(make_config([{"type": "python", "target": "tests.pipeline_models:give_back"}]))
    try:
        fake.enqueue(reply(ANSWER))
        event_id = insert_event(db_url, "gh_py")
        assert await handle_event(rt, event_id) == "succeeded"
    finally:
        await rt.close()
    assert pipeline_models.GIVE_BACK["calls"] == 1
    ((_, _, status, attempts, result, error),) = action_rows(db_url, event_id)
    assert (status, attempts, error) == ("succeeded", 1, None)
    assert result == {"returned": kept}


async def test_an_http_answer_with_a_nul_byte_is_recorded_and_sent_once(
    db_url: str, make_runtime: Any, fake: FakeMessagesAPI, receiver: Receiver
) -> None:
    """A receiver answering binary (a NUL byte, which jsonb refuses) does not fail the record after the
    request went through (the row left running, the request sent again on every retry)."""
    receiver.answer = b"ok\x00\x01"
    rt = await make_runtime(make_config([{"type": "http", "url": receiver.url}]))
    try:
        fake.enqueue(reply(ANSWER))
        event_id = insert_event(db_url, "gh_nul")
        assert await handle_event(rt, event_id) == "succeeded"
    finally:
        await rt.close()
    assert len(receiver.received) == 1
    ((_, _, status, attempts, result, _),) = action_rows(db_url, event_id)
    assert (status, attempts, result) == ("succeeded", 1, {"status": 200, "body": "ok\ufffd\x01"})


async def test_an_http_redirect_is_a_permanent_failure_and_is_not_followed(
    db_url: str, make_runtime: Any, fake: FakeMessagesAPI, receiver: Receiver
) -> None:
    """A 3xx is not followed (it could carry the signed request elsewhere) and not retried: the same
    answer would come back on every try."""
    receiver.status = 302
    rt = await make_runtime(make_config([{"type": "http", "url": receiver.url}]))
    try:
        fake.enqueue(reply(ANSWER))
        event_id = insert_event(db_url, "gh_302")
        assert await handle_event(rt, event_id) == "dead"
    finally:
        await rt.close()
    assert len(receiver.received) == 1
    ((_, _, status, attempts, _, error),) = action_rows(db_url, event_id)
    assert (status, attempts) == ("failed", 1) and "receiver answered 302" in error


async def test_a_json_body_that_renders_to_broken_json_fails_before_anything_is_sent(
    db_url: str, make_runtime: Any, fake: FakeMessagesAPI, receiver: Receiver
) -> None:
    """A value inserted between quotes without | tojson breaks the JSON when it holds a quote: a
    permanent failure naming the fix, and the receiver gets nothing."""
    action = {"type": "http", "url": receiver.url, "body": '{"text": "{{ output.summary }}"}'}
    rt = await make_runtime(make_config([action]))
    try:
        fake.enqueue(reply({**ANSWER, "summary": 'Asks "how much?"'}))
        event_id = insert_event(db_url, "gh_broken_json")
        assert await handle_event(rt, event_id) == "dead"
    finally:
        await rt.close()
    assert receiver.received == []
    ((_, _, status, _, _, error),) = action_rows(db_url, event_id)
    assert status == "failed" and "is sent as JSON but is not JSON" in error and "| tojson" in error


async def test_templates_see_long_strings_whole_while_the_model_sees_them_clipped(
    db_url: str, make_runtime: Any, fake: FakeMessagesAPI, receiver: Receiver
) -> None:
    """The 4,000-character clip is for the model's context and bill; an action quoting a field (an
    e-mail quoting the customer's message) gets all of it."""
    title = "x" * 4500 + "the end"
    payload = {"repository": {"full_name": "o/r"}, "issue": {"number": 7, "title": title, "reporter": "a@b.c"}}
    text = {"type": "http", "url": receiver.url, "headers": {"Content-Type": "text/plain"}}
    rt = await make_runtime(make_config([{**text, "body": "{{ fields['issue.title'] }}"}]))
    try:
        fake.enqueue(reply(ANSWER))
        assert await handle_event(rt, insert_event(db_url, "gh_long", payload)) == "succeeded"
    finally:
        await rt.close()
    assert [r.body.decode() for r in receiver.received] == [title]
    (call,) = fake.calls_to("/v1/messages")
    prompt = json.dumps(call.body)
    assert "the end" not in prompt and "more characters cut" in prompt


async def test_when_filters_events_before_any_model_call(db_url: str, make_runtime: Any, fake: FakeMessagesAPI) -> None:
    rt = await make_runtime(make_config([], when="payload.issue.number > 100 and event.tenant == 'acme'"))
    try:
        small = insert_event(db_url, "gh_small")
        odd = insert_event(db_url, "gh_odd", {"action": "opened"})
        assert await handle_event(rt, small) == "skipped"
        assert await handle_event(rt, odd) == "skipped"
        assert fake.calls_to("/v1/messages") == [], "filtered events never reach the model"
        fake.enqueue(reply(ANSWER))
        big = insert_event(db_url, "gh_big", {"repository": {"full_name": "o/r"}, "issue": {"number": 4242}})
        assert await handle_event(rt, big) == "succeeded"
    finally:
        await rt.close()
    assert len(fake.calls_to("/v1/messages")) == 1
    details = dict(rows(db_url, "SELECT delivery_id, detail FROM hookline.events WHERE delivery_id LIKE 'gh_%%'"))
    assert details["gh_small"] == "pipeline leads: when is false"
    assert details["gh_odd"].startswith("pipeline leads: expression error:") and "issue" in details["gh_odd"]
    assert rows(db_url, "SELECT count(*) FROM hookline.llm_calls") == [(1,)]


async def test_sql_functions_are_checked_against_pg_proc(db_url: str, conn: psycopg.Connection[Any]) -> None:
    conn.execute(CRM)
    conn.execute("CREATE FUNCTION crm.wrong_shape(a integer) RETURNS void LANGUAGE sql AS $$ SELECT $$")
    conn.execute("DROP ROLE IF EXISTS hl_worker_no_exec")
    conn.execute("CREATE ROLE hl_worker_no_exec")
    conn.execute("REVOKE EXECUTE ON FUNCTION crm.apply_lead_score(bigint, jsonb) FROM PUBLIC")
    config = make_config(
        [
            {"type": "sql", "function": "crm.apply_lead_score"},
            {"type": "sql", "function": "crm.wrong_shape"},
            {"type": "sql", "function": "crm.missing"},
        ]
    )
    async with await psycopg.AsyncConnection.connect(db_url) as aconn:
        owner = await sql_action.problems(aconn, config)
        await aconn.execute("SET ROLE hl_worker_no_exec")
        other = await sql_action.problems(aconn, config)
        await aconn.execute("RESET ROLE")
    assert owner == [
        "pipelines.leads.actions.1.function: crm.wrong_shape must take (event_id bigint, output jsonb); "
        "found (a integer)",
        "pipelines.leads.actions.2.function: no function crm.missing in pg_proc "
        "(see the README for what a DBA creates)",
    ]
    assert other[0] == (
        "pipelines.leads.actions.0.function: this role may not call crm.apply_lead_score "
        "(GRANT USAGE ON SCHEMA and EXECUTE)"
    )
    conn.execute("DROP ROLE hl_worker_no_exec")


async def test_a_failed_run_never_overwrites_the_outcome_another_run_recorded(db_url: str, make_runtime: Any) -> None:
    """Two runs of one event share an action's record (the second took the job of a worker thought
    dead). The first recorded ``succeeded`` (a sql action, with its call); the second's call then
    failed: its ``failed`` changes nothing, so no retry or replay runs the action again."""
    rt = await make_runtime(make_config([]))
    try:
        event_id = insert_event(db_url, "gh_two_runs")
        [(run_id,)] = rows(
            db_url,
            "INSERT INTO hookline.action_runs (event_id, pipeline, action, action_type, status, idempotency_key,"
            " result, finished_at) VALUES (%s, 'leads', 'score', 'sql', 'succeeded', 'k', '{\"returned\": 1}',"
            " now()) RETURNING id",
            event_id,
        )
        changed = await rt.db.run("finish_action", id=run_id, status="failed", result=None, error="lock timeout")
    finally:
        await rt.close()
    assert changed == 0
    assert [(r[2], r[4], r[5]) for r in action_rows(db_url, event_id)] == [("succeeded", {"returned": 1}, None)]
    # the other way round: a run that succeeded after another run's failure landed says what happened last
    rows(db_url, "UPDATE hookline.action_runs SET status = 'failed', result = NULL, error = 'x' RETURNING 1")
    rt = await make_runtime(make_config([]))
    try:
        changed = await rt.db.run("finish_action", id=run_id, status="succeeded", result={"ok": True}, error=None)
    finally:
        await rt.close()
    assert changed == 1
    assert [(r[2], r[4], r[5]) for r in action_rows(db_url, event_id)] == [("succeeded", {"ok": True}, None)]


async def test_an_address_the_smtp_server_cannot_take_fails_at_once(
    db_url: str, make_runtime: Any, fake: FakeMessagesAPI, monkeypatch: pytest.MonkeyPatch
) -> None:
    """An address beyond ASCII (``ada@bücher.example``) to a server that does not offer SMTPUTF8: every
    attempt would fail alike, so the first one fails for good (it was tried through every attempt)."""
    mail = {
        "type": "email",
        "smtp_url_env": "HL_SMTP_URL",
        "from": "leads@example.com",
        "to": "ada@bücher.example",
        "subject": "Hi",
        "body": "{{ output.summary }}",
    }
    with SmtpServer(smtputf8=False) as ascii_only:
        monkeypatch.setenv("HL_SMTP_URL", ascii_only.url())
        rt = await make_runtime(make_config([mail]))
        try:
            fake.enqueue(reply(ANSWER))
            event_id = insert_event(db_url, "gh_utf8")
            assert await handle_event(rt, event_id) == "dead"
        finally:
            await rt.close()
        assert ascii_only.messages == []
    (run,) = action_rows(db_url, event_id)
    assert run[2] == "failed" and "SMTPUTF8 is not supported" in run[5], run
