"""An action cancelled by its pipeline's ``timeout_seconds`` before it returned (a ``python`` action
has no timeout of its own) is recorded ``failed`` saying so, never left ``running`` while its event
ends: before, the cancellation skipped the record, and an event that died of it kept a run that
claimed to be in progress forever."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from tests.fakes.messages_api import FakeMessagesAPI, reply
from tests.fakes.slack import FakeSlack
from tests.harness import make_settings, rows
from tests.worker.test_actions import ANSWER, action_rows, insert_event, make_config
from worker.runtime import Runtime
from worker.tasks import RetryLater, handle_event

#: Set by :func:`never_returns` once it runs (a test puts its own event here).
started: asyncio.Event | None = None


async def never_returns(ctx: Any) -> None:
    if started is not None:
        started.set()
    await asyncio.sleep(3600)


async def test_a_python_action_cut_off_by_the_pipeline_timeout_is_recorded_failed(
    db_url: str, fake: FakeMessagesAPI, monkeypatch: pytest.MonkeyPatch, opened: list[Runtime]
) -> None:
    monkeypatch.setenv("HL_GH_SECRET", "gh-secret")
    action = {"type": "python", "name": "slow", "target": f"{__name__}:never_returns"}
    config = make_config([action], timeout_seconds=1.5, retry={"max_attempts": 1})
    rt = Runtime.build(make_settings(db_url, anthropic_api_key="sk-test", anthropic_base_url=fake.base_url), config)
    await rt.open()
    opened.append(rt)
    fake.enqueue(reply(ANSWER))
    event_id = insert_event(db_url, "gh_cut_off")
    assert await handle_event(rt, event_id) == "dead"
    ((_, _, status, attempts, _, error),) = action_rows(db_url, event_id)
    assert (status, attempts) == ("failed", 1), f"the event is dead, its action run {status!r}"
    assert "timeout_seconds" in error and "outcome unknown" in error
    assert rows(db_url, "SELECT count(*) FROM hookline.action_runs WHERE finished_at IS NULL") == [(0,)]


async def test_a_python_action_cut_off_by_a_shutdown_is_recorded_failed_and_its_event_handed_back(
    db_url: str, fake: FakeMessagesAPI, monkeypatch: pytest.MonkeyPatch, opened: list[Runtime]
) -> None:
    monkeypatch.setenv("HL_GH_SECRET", "gh-secret")
    action = {"type": "python", "name": "slow", "target": f"{__name__}:never_returns"}
    rt = Runtime.build(
        make_settings(db_url, anthropic_api_key="sk-test", anthropic_base_url=fake.base_url), make_config([action])
    )
    await rt.open()
    opened.append(rt)
    fake.enqueue(reply(ANSWER))
    event_id = insert_event(db_url, "gh_shutdown")
    monkeypatch.setattr(f"{__name__}.started", asyncio.Event())
    run = asyncio.create_task(handle_event(rt, event_id))
    assert started is not None
    await started.wait()
    run.cancel()  # what procrastinate does to a running job once HOOKLINE_SHUTDOWN_TIMEOUT is over
    with pytest.raises(asyncio.CancelledError):
        await run
    assert rows(db_url, "SELECT status, detail FROM hookline.events WHERE id = %s", event_id) == [
        ("retrying", "handed back to the queue")
    ]
    ((_, _, status, _, _, error),) = action_rows(db_url, event_id)
    assert status == "failed" and "the worker shut down" in error and "outcome unknown" in error


async def test_a_follow_up_cut_off_before_it_posted_posts_on_the_next_attempt(
    db_url: str, fake: FakeMessagesAPI, monkeypatch: pytest.MonkeyPatch, opened: list[Runtime]
) -> None:
    """A follow-up waits for the web process to say whether the HTTP reply carried the answer; the
    pipeline's timeout cut that wait off. Nothing was posted, so the next attempt posts (at most once
    holds); before, its run stayed ``running`` and the next attempt dead-lettered it as interrupted."""
    monkeypatch.setenv("HL_GH_SECRET", "gh-secret")
    action = {"type": "slack_response", "allowed_hosts": ["127.0.0.1"], "text": "Late: {{ output.summary }}"}
    config = make_config([action], respond="sync", respond_timeout_ms=60000, timeout_seconds=1.5)
    rt = Runtime.build(make_settings(db_url, anthropic_api_key="sk-test", anthropic_base_url=fake.base_url), config)
    await rt.open()
    opened.append(rt)
    with FakeSlack() as slack:
        fake.enqueue(reply(ANSWER))
        event_id = insert_event(db_url, "gh_follow_up", {"response_url": slack.webhook_url})
        rows(db_url, "UPDATE hookline.events SET respond_sync = true WHERE id = %s RETURNING id", event_id)
        with pytest.raises(RetryLater):  # the web process has not said yet: the wait outlasts the pipeline
            await handle_event(rt, event_id)
        ((_, _, status, _, _, error),) = action_rows(db_url, event_id)
        assert status == "failed" and "nothing was sent" in error
        assert slack.posts == []
        rows(db_url, "UPDATE hookline.events SET sync_reply = 'default' WHERE id = %s RETURNING id", event_id)
        assert await handle_event(rt, event_id) == "succeeded"
        assert [p.body["text"] for p in slack.posts] == [f"Late: {ANSWER['summary']}"]
