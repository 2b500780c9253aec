"""An action cut off by its pipeline's ``timeout_seconds`` (the model took most of it) is bounded by
what is left of it, so it ends the way its own timeout ends: recorded in ``action_runs`` (never left
``running``) and classified by what was sent. A Slack post whose connection was never accepted sent
nothing, so the next attempt posts it; before, the pipeline's timeout cancelled it mid-connect, its
row stayed ``running``, and the next attempt took that for a worker killed mid-post and dead-lettered
a message that was never sent."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from tests.fakes.messages_api import FakeMessagesAPI, reply
from tests.fakes.slack import FakeSlack
from tests.harness import make_settings
from tests.worker.test_actions import ANSWER, action_rows, insert_event, make_config
from worker.runtime import Runtime
from worker.tasks import RetryLater, handle_event


@pytest.mark.parametrize("kind", ["slack", "http"])
async def test_an_action_cut_off_by_the_pipeline_timeout_is_recorded_and_retried_if_nothing_was_sent(
    db_url: str, fake: FakeMessagesAPI, unreachable: str, monkeypatch: pytest.MonkeyPatch, kind: str
) -> None:
    monkeypatch.setenv("HL_GH_SECRET", "gh-secret")
    monkeypatch.setenv("HL_TARGET", unreachable + "/services/T000/B000/secretpath")
    await asyncio.sleep(0.2)  # the fillers take the accept queue
    action: dict[str, Any] = (
        {"type": "slack", "webhook_url_env": "HL_TARGET", "text": "{{ output.summary }}"}
        if kind == "slack"
        else {"type": "http", "url_env": "HL_TARGET"}
    )
    # the pipeline allows 1.5 s; the action's own timeout (HOOKLINE_OUTBOUND_TIMEOUT) is 30 s
    config = make_config([action], timeout_seconds=1.5)
    settings = make_settings(db_url, anthropic_api_key="sk-test", anthropic_base_url=fake.base_url, outbound_timeout=30)
    rt = Runtime.build(settings, config)
    await rt.open()
    try:
        fake.enqueue(reply(ANSWER))
        event_id = insert_event(db_url, f"gh_deadline_{kind}")
        with pytest.raises(RetryLater):
            await handle_event(rt, event_id)
        ((_, _, status, attempts, _, error),) = action_rows(db_url, event_id)
        assert (status, attempts) == ("failed", 1), f"the cut-off action was left {status!r} with error {error!r}"
        assert "time" in error.lower()
        if kind == "slack":  # nothing was sent: the next attempt posts it (once)
            with FakeSlack() as slack:
                monkeypatch.setenv("HL_TARGET", slack.webhook_url)
                assert await handle_event(rt, event_id) == "succeeded"
            assert len(slack.posts) == 1
    finally:
        await rt.close()


async def test_a_sql_action_cut_off_by_the_pipeline_timeout_is_rolled_back_and_recorded(
    db_url: str, fake: FakeMessagesAPI, conn: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Its ``statement_timeout`` is cut the same way: Postgres cancels the call (rolled back, so exactly
    once still holds) and the run is recorded ``failed``, not left ``running``."""
    monkeypatch.setenv("HL_GH_SECRET", "gh-secret")
    conn.execute(
        "CREATE SCHEMA crm; CREATE FUNCTION crm.slow(event_id bigint, output jsonb) RETURNS void "
        "LANGUAGE sql AS $$ SELECT pg_sleep(30) $$"
    )
    config = make_config([{"type": "sql", "function": "crm.slow"}], timeout_seconds=1.5)
    rt = Runtime.build(make_settings(db_url, anthropic_api_key="sk-test", anthropic_base_url=fake.base_url), config)
    await rt.open()
    try:
        fake.enqueue(reply(ANSWER))
        event_id = insert_event(db_url, "gh_deadline_sql")
        with pytest.raises(RetryLater):
            await handle_event(rt, event_id)
    finally:
        await rt.close()
    ((_, _, status, attempts, _, error),) = action_rows(db_url, event_id)
    assert (status, attempts) == ("failed", 1), f"the cut-off action was left {status!r} with error {error!r}"
    assert "57014" in error  # query_canceled: statement_timeout
