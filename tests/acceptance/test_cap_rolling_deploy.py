"""A rolling deploy that raises a tenant cap: the old release's workers still run for a while after a
new worker starts, and one of them may take a job the new worker woke at its start, check it against
the old cap and hold it again until the window reopens. The new worker wakes the throttled events
again during its first minutes, so the last wake is one with the new config. Real web, worker,
Postgres; the fake Messages API.

The old worker's re-hold is set up deterministically: the held event is kept out of the new worker's
start wake (its status is set aside), then given back its ``throttled`` status, with its job still held
for the hour, once that start wake is done: exactly the state an old worker leaves when it takes the
woken job first."""

from __future__ import annotations

import pytest

import worker.main
from tests.acceptance.test_cap_redeploy import OPS, held_at_one_per_hour, job_runs
from tests.acceptance.test_limits import GOOD, USAGE, env, make_config, settings_for  # noqa: F401
from tests.fakes.messages_api import FakeMessagesAPI, reply
from tests.harness import Receiver, rows, wait_for_status, worker_task


def held_for_later(db_url: str, event_id: int) -> bool:
    ((later,),) = rows(
        db_url,
        "SELECT scheduled_at > now() + interval '1 minute' FROM procrastinate_jobs WHERE args->>'event_id' = %s",
        str(event_id),
    )
    return bool(later)


async def test_an_event_held_again_by_an_old_worker_after_the_start_is_released_by_a_later_wake(
    db_url: str, fake: FakeMessagesAPI, receiver: Receiver, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(worker.main, "REWAKE_EVERY", 0.5)  # each minute in production
    monkeypatch.setattr(worker.main, "REWAKE_FOR", 60.0)
    fake.set_default(reply(GOOD, usage=USAGE))
    _, second = await held_at_one_per_hour(db_url, fake)  # held by a worker of the old release (cap 1)
    runs = job_runs(db_url, second)
    rows(db_url, "UPDATE hookline.events SET status = 'queued' WHERE id = %s RETURNING id", second)
    raised = make_config(tenants={"*": {"events_per_hour": 1000}}, alerts=OPS)
    async with worker_task(settings_for(db_url, fake), raised):  # returns once the start wake is done
        assert held_for_later(db_url, second) and job_runs(db_url, second) == runs  # the start wake missed it
        # ... as if an old worker had taken the woken job first and held it again at its cap of 1/hour
        rows(db_url, "UPDATE hookline.events SET status = 'throttled' WHERE id = %s RETURNING id", second)
        assert (await wait_for_status(db_url, second))["status"] == "succeeded"
    assert len(fake.calls_to("/v1/messages")) == 2
