"""``replay --force`` redoes actions with a key the earlier runs never sent (``-replay-N``, N the
event's ``replays``), so a receiver that drops repeats by ``Idempotency-Key`` / ``webhook-id`` or a
mail server by ``Message-ID`` takes the repeat the user asked for. Retries within that forced run
keep its key, so they are still dropped as repeats; ``action_runs.idempotency_key`` is the key sent.
Before, every run sent ``hookline-{event}-{pipeline}-{action}`` and the forced repeat was dropped."""

from __future__ import annotations

from typing import Any

import pytest

from tests.fakes.messages_api import FakeMessagesAPI, reply
from tests.fakes.smtp import SmtpServer
from tests.harness import Receiver, make_settings, rows
from tests.worker.test_actions import ANSWER, insert_event, make_config
from worker.runtime import Runtime
from worker.tasks import RetryLater, handle_event


def stored_keys(db_url: str, event_id: int) -> dict[str, str]:
    got = rows(db_url, "SELECT action, idempotency_key FROM hookline.action_runs WHERE event_id = %s", event_id)
    return dict(got)


async def test_a_forced_replay_sends_new_keys_that_its_retries_keep(
    db_url: str,
    fake: FakeMessagesAPI,
    receiver: Receiver,
    monkeypatch: pytest.MonkeyPatch,
    opened: list[Runtime],
) -> None:
    monkeypatch.setenv("HL_GH_SECRET", "gh-secret")
    monkeypatch.setenv("HL_TARGET", receiver.url)
    with SmtpServer() as smtp:
        monkeypatch.setenv("HL_SMTP_URL", smtp.url())
        actions: list[dict[str, Any]] = [
            {
                "type": "email",
                "name": "mail",
                "smtp_url_env": "HL_SMTP_URL",
                "from": "leads@example.com",
                "to": "{{ fields['issue.reporter'] }}",
                "subject": "Lead",
                "body": "{{ output.summary }}",
            },
            {"type": "http", "name": "hook", "url_env": "HL_TARGET"},
        ]
        settings = make_settings(db_url, anthropic_api_key="sk-test", anthropic_base_url=fake.base_url)
        rt = Runtime.build(settings, make_config(actions))
        await rt.open()
        opened.append(rt)
        fake.enqueue(reply(ANSWER))
        event_id = insert_event(db_url, "gh_forced_keys")
        assert await handle_event(rt, event_id) == "succeeded"
        first = {"mail": f"hookline-{event_id}-leads-mail", "hook": f"hookline-{event_id}-leads-hook"}
        assert stored_keys(db_url, event_id) == first  # a run without force: the key as it always was

        rows(db_url, "SELECT hookline.replay(%s::bigint, false, true)", event_id)
        receiver.statuses.append(503)  # the forced http request fails once: the job retries it
        with pytest.raises(RetryLater):
            await handle_event(rt, event_id, force_actions=True)
        # procrastinate runs the retry with the job's arguments: force_actions still True
        assert await handle_event(rt, event_id, force_actions=True) == "succeeded"
        forced = {name: f"{key}-replay-1" for name, key in first.items()}
        assert stored_keys(db_url, event_id) == forced

        assert [(r.headers["idempotency-key"], r.headers["webhook-id"]) for r in receiver.received] == [
            (first["hook"], first["hook"]),
            (forced["hook"], forced["hook"]),  # the forced repeat: a key the receiver never saw
            (forced["hook"], forced["hook"]),  # its retry: the same key, dropped if the 503 had gone through
        ]
        sent = [(m.message["X-Hookline-Idempotency-Key"], m.message["Message-ID"]) for m in smtp.messages]
        assert [key for key, _ in sent] == [first["mail"], forced["mail"]]
        assert sent[0][1] != sent[1][1], "the forced message must not carry the Message-ID of the first"

        rows(db_url, "SELECT hookline.replay(%s::bigint, false, true)", event_id)  # forced again: yet another key
        assert await handle_event(rt, event_id, force_actions=True) == "succeeded"
        assert stored_keys(db_url, event_id) == {name: f"{key}-replay-2" for name, key in first.items()}
        assert receiver.received[-1].headers["idempotency-key"] == f"{first['hook']}-replay-2"
