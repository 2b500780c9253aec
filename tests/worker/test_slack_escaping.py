"""Text from the payload or the model's answer posted to Slack is text, not Slack markup.

Slack reads ``&``, ``<`` and ``>`` as control characters in message text and text objects: ``<!channel>``
notifies everyone in the channel, ``<https://evil.example|https://github.com/login>`` is a link that
shows one address and opens another. A GitHub issue title (or a model that repeats it) must not be able
to do that through ``{{ fields[...] }}`` or ``{{ output... }}``; the markup the template itself writes
keeps working, and values in URL fields of blocks stay as they are."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest

from app.core.config import Config
from tests.fakes.messages_api import FakeMessagesAPI, reply
from tests.fakes.slack import FakeSlack
from tests.harness import make_settings
from tests.worker.test_actions import ANSWER, insert_event, make_config
from worker.runtime import Runtime
from worker.tasks import handle_event

HOSTILE = "<!channel> reset now: <https://evil.example|https://github.com/login> & more"
PAYLOAD = {
    "action": "opened",
    "repository": {"full_name": "octo/hello"},
    "issue": {"number": 7, "title": HOSTILE, "reporter": "ada@example.com"},
}
ESCAPED = "&lt;!channel&gt; reset now: &lt;https://evil.example|https://github.com/login&gt; &amp; more"


@pytest.fixture
def slack(monkeypatch: pytest.MonkeyPatch) -> Iterator[FakeSlack]:
    with FakeSlack(token="xoxb-fake") as s:
        monkeypatch.setenv("HL_GH_SECRET", "gh-secret")
        monkeypatch.setenv("HL_SLACK_WEBHOOK", s.webhook_url)
        monkeypatch.setenv("HL_SLACK_TOKEN", "xoxb-fake")
        yield s


async def run(db_url: str, fake: FakeMessagesAPI, slack: FakeSlack, config: Config, answer: dict[str, Any]) -> None:
    settings = make_settings(
        db_url, anthropic_api_key="sk-test", anthropic_base_url=fake.base_url, slack_api_url=slack.api_url
    )
    rt = Runtime.build(settings, config)
    await rt.open()
    try:
        fake.enqueue(reply(answer))
        assert await handle_event(rt, insert_event(db_url, "gh_hostile", PAYLOAD)) == "succeeded"
    finally:
        await rt.close()


async def test_payload_text_cannot_mention_the_channel_or_disguise_a_link(
    db_url: str, fake: FakeMessagesAPI, slack: FakeSlack
) -> None:
    text = "New issue <https://github.com/{{ fields['repository.full_name'] }}|#{{ fields['issue.number'] }}>: "
    actions: list[dict[str, Any]] = [
        {
            "type": "slack",
            "name": "hook",
            "webhook_url_env": "HL_SLACK_WEBHOOK",
            "text": text + "{{ fields['issue.title'] }}",
        },
        {
            "type": "slack",
            "name": "bot",
            "token_env": "HL_SLACK_TOKEN",
            "channel": "C1",
            "text": "{{ output.summary }}",
            "blocks": [
                {"type": "section", "text": {"type": "mrkdwn", "text": "*{{ fields['issue.title'] }}*"}},
                {
                    "type": "actions",
                    "elements": [
                        {
                            "type": "button",
                            "text": {"type": "plain_text", "text": "Open"},
                            "url": "https://github.com/search?q={{ fields['issue.number'] }}&type=issues",
                        }
                    ],
                },
            ],
        },
    ]
    await run(db_url, fake, slack, make_config(actions), {**ANSWER, "summary": "Ada says: " + HOSTILE})
    hook, bot = slack.posts
    assert hook.body["text"] == "New issue <https://github.com/octo/hello|#7>: " + ESCAPED
    assert bot.body["text"] == "Ada says: " + ESCAPED
    assert bot.body["blocks"][0]["text"]["text"] == f"*{ESCAPED}*"
    assert bot.body["blocks"][1]["elements"][0]["url"] == "https://github.com/search?q=7&type=issues"
