"""Two workers on one event: a worker whose heartbeat went stale while it lived (it could not reach
Postgres for a while, its process was paused) has its job taken for stalled, and another worker runs
the same event while the first is still posting to Slack. The second finds the first's run
``running`` but younger than the longest a live run lasts: it waits (a hold, not an attempt) instead
of dead-lettering the event as interrupted, and the first's post stands. Before, the second declared
the post interrupted and the event dead, while the first went on to succeed. The first no longer holds
the event's claim, so its outcome is not written (migration 0047); the second's rescheduled run finds
the post recorded and finishes the event without posting again."""

from __future__ import annotations

import asyncio

import pytest

from tests.chaos_support import wait_until
from tests.fakes.messages_api import FakeMessagesAPI, reply
from tests.fakes.slack import FakeSlack
from tests.harness import make_settings, rows
from tests.worker.test_actions import ANSWER, action_rows, insert_event, make_config
from worker.outcomes import Throttled
from worker.runtime import Runtime
from worker.tasks import handle_event


async def test_a_run_still_in_flight_on_another_worker_is_waited_for_not_declared_interrupted(
    db_url: str, fake: FakeMessagesAPI, monkeypatch: pytest.MonkeyPatch, opened: list[Runtime]
) -> None:
    monkeypatch.setenv("HL_GH_SECRET", "gh-secret")
    monkeypatch.setenv("HL_SLACK_TOKEN", "xoxb-fake")
    action = {"type": "slack", "token_env": "HL_SLACK_TOKEN", "channel": "C1", "text": "{{ output.summary }}"}
    with FakeSlack(token="xoxb-fake") as slack:
        settings = make_settings(
            db_url, anthropic_api_key="sk-test", anthropic_base_url=fake.base_url, slack_api_url=slack.api_url
        )
        first, second = Runtime.build(settings, make_config([action])), Runtime.build(settings, make_config([action]))
        for rt in (first, second):
            await rt.open()
            opened.append(rt)
        fake.enqueue(reply(ANSWER))
        event_id = insert_event(db_url, "gh_two_workers")
        slack.hold(2)  # Slack has the post; its answer is slow to come back
        running = asyncio.create_task(handle_event(first, event_id))
        await wait_until(lambda: slack.posts, timeout=20, what="the first worker's post to reach Slack")

        with pytest.raises(Throttled):  # the job taken for stalled, run by another worker meanwhile
            await handle_event(second, event_id)
        assert rows(db_url, "SELECT status FROM hookline.events WHERE id = %s", event_id) == [("throttled",)]

        assert await running == "stale"  # its post is recorded; the event's outcome is the second's
        assert rows(db_url, "SELECT status FROM hookline.events WHERE id = %s", event_id) == [("throttled",)]
        assert await handle_event(second, event_id) == "succeeded"  # its rescheduled run: the post is done
        assert rows(db_url, "SELECT status FROM hookline.events WHERE id = %s", event_id) == [("succeeded",)]
    assert len(slack.posts) == 1
    ((_, _, status, attempts, _, _),) = action_rows(db_url, event_id)
    assert (status, attempts) == ("succeeded", 1)
