"""An email to several recipients that the SMTP server takes for some and refuses for others
(``RCPT TO`` answered 250 for one, 550 or 451 for another). aiosmtplib sends the message to the
accepted ones and reports the refused ones without raising; the action must not be recorded as sent
to everyone."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest

from app.core.config import Config
from tests.fakes.messages_api import FakeMessagesAPI, reply
from tests.fakes.smtp import SmtpServer
from tests.harness import make_settings
from tests.worker.test_actions import ANSWER, action_rows, insert_event, make_config
from worker.runtime import Runtime
from worker.tasks import RetryLater, handle_event

MAIL: dict[str, Any] = {
    "type": "email",
    "name": "mail",
    "smtp_url_env": "HL_SMTP_URL",
    "from": "leads@example.com",
    "to": ["{{ fields['issue.reporter'] }}", "sales@example.com"],
    "subject": "Issue #{{ fields['issue.number'] }}",
    "body": "{{ output.summary }}",
}


@pytest.fixture
def smtp(monkeypatch: pytest.MonkeyPatch) -> Iterator[SmtpServer]:
    with SmtpServer() as s:
        monkeypatch.setenv("HL_GH_SECRET", "gh-secret")
        monkeypatch.setenv("HL_SMTP_URL", s.url())
        yield s


@pytest.fixture
def make_runtime(db_url: str, fake: FakeMessagesAPI) -> Any:
    async def make(config: Config) -> Runtime:
        rt = Runtime.build(make_settings(db_url, anthropic_api_key="sk-test", anthropic_base_url=fake.base_url), config)
        await rt.open()
        return rt

    return make


async def test_a_recipient_refused_for_good_fails_the_action_instead_of_claiming_it_was_sent(
    db_url: str, make_runtime: Any, fake: FakeMessagesAPI, smtp: SmtpServer
) -> None:
    rt = await make_runtime(make_config([MAIL]))
    try:
        fake.enqueue(reply(ANSWER))
        smtp.refuse_next(550)  # the first recipient (ada@example.com) does not exist
        event_id = insert_event(db_url, "gh_partial_550")
        assert await handle_event(rt, event_id) == "dead"
    finally:
        await rt.close()
    (mail,) = smtp.messages
    assert mail.rcpt_tos == ["sales@example.com"]  # the server delivered to the one it accepted
    (run,) = action_rows(db_url, event_id)
    assert run[2] == "failed", f"recorded {run[2]} with result {run[4]} although a recipient was refused"
    assert "refused 1 of 2 recipient(s)" in run[5] and "550" in run[5]
    assert "ada@example.com" not in run[5]  # the rendered address (payload data) is not echoed


async def test_a_recipient_refused_for_now_is_tried_again_with_the_same_message_id(
    db_url: str, make_runtime: Any, fake: FakeMessagesAPI, smtp: SmtpServer
) -> None:
    rt = await make_runtime(make_config([MAIL]))
    try:
        fake.enqueue(reply(ANSWER))
        smtp.refuse_next(451)  # greylisted: try again later
        event_id = insert_event(db_url, "gh_partial_451")
        try:
            outcome = await handle_event(rt, event_id)
        except RetryLater:
            outcome = "retrying"
        assert outcome == "retrying", "a recipient that may take the message later is tried again"
        assert await handle_event(rt, event_id) == "succeeded"
    finally:
        await rt.close()
    first, second = smtp.messages
    assert first.rcpt_tos == ["sales@example.com"]
    assert second.rcpt_tos == ["ada@example.com", "sales@example.com"]
    assert first.message["Message-ID"] == second.message["Message-ID"]  # the repeat can be folded
    assert [(r[2], r[3]) for r in action_rows(db_url, event_id)] == [("succeeded", 2)]


@pytest.mark.parametrize(
    ("url", "to", "why"),
    [
        ("smtp+starttls://{host}", "ada@example.com", "STARTTLS extension not supported"),
        ("smtp://hookline:pw@{host}", "ada@example.com", "AUTH extension is not supported"),
    ],
)
async def test_a_server_that_lacks_what_the_message_needs_fails_at_once_saying_what(
    db_url: str,
    make_runtime: Any,
    fake: FakeMessagesAPI,
    smtp: SmtpServer,
    monkeypatch: pytest.MonkeyPatch,
    url: str,
    to: str,
    why: str,
) -> None:
    """STARTTLS required (``smtp+starttls://``) or a user given, and the server offers neither: no
    retry changes that. It used to retry until the attempts ran out, each time saying only
    ``SMTPException``."""
    monkeypatch.setenv("HL_SMTP_URL", url.format(host=smtp.url().removeprefix("smtp://")))
    rt = await make_runtime(make_config([{**MAIL, "to": to}]))
    try:
        fake.enqueue(reply(ANSWER))
        event_id = insert_event(db_url, f"gh_unsupported_{why[:5]}")
        assert await handle_event(rt, event_id) == "dead"
    finally:
        await rt.close()
    assert smtp.messages == []
    (run,) = action_rows(db_url, event_id)
    assert run[2] == "failed" and why in run[5], run[5]
