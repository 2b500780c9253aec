"""Two workers on one event: a job procrastinate took for stalled while its worker lived (a blocked
event loop, a long pause) is run by a second worker while the first still runs it. Each run claimed the
event (hookline.claim_events_v2: claims + 1); only the run holding the current claim writes the event's
outcome (migrations 0047, 0048). The first run, finishing last, used to dead-letter an event the second had
finished, or put it back to retrying; now it ends ``stale`` and writes nothing of its outcome.

The overlap is made without a clock: the first run's model call is held by the fake until the second
run has finished, or the sql action's function waits on an advisory lock the test holds.
"""

from __future__ import annotations

import asyncio
from typing import Any

import psycopg
import pytest

from tests.chaos_support import wait_until
from tests.fakes.messages_api import FakeMessagesAPI, error, held, reply, server_error
from tests.harness import make_settings, rows
from tests.worker.test_actions import ANSWER, action_rows, insert_event, make_config
from worker.outcomes import STALE, RetryLater, claim_of, infrastructure_failure
from worker.runtime import Runtime
from worker.tasks import handle_event

#: a sql action whose function waits for the test's advisory lock, and counts its committed calls
LEDGER = """
CREATE SCHEMA ledger;
CREATE TABLE ledger.calls (event_id bigint NOT NULL);
CREATE FUNCTION ledger.record(event_id bigint, output jsonb) RETURNS integer
LANGUAGE plpgsql AS $$
BEGIN
    PERFORM pg_advisory_xact_lock(4401);
    INSERT INTO ledger.calls VALUES (event_id);
    RETURN 1;
END
$$;
"""


async def _two(db_url: str, fake: FakeMessagesAPI, opened: list[Runtime], actions: list[dict[str, Any]]) -> Any:
    settings = make_settings(db_url, anthropic_api_key="sk-test", anthropic_base_url=fake.base_url)
    pair = Runtime.build(settings, make_config(actions)), Runtime.build(settings, make_config(actions))
    for rt in pair:
        await rt.open()
        opened.append(rt)
    return pair


def _event(db_url: str, event_id: int) -> tuple[Any, ...]:
    ((row),) = rows(db_url, "SELECT status, attempts, last_error FROM hookline.events WHERE id = %s", event_id)
    return tuple(row)


@pytest.mark.parametrize(
    ("late", "before"),
    [
        (error(400, "invalid_request_error"), "dead"),  # a permanent failure: the dead-letter path
        (server_error(), "retrying"),  # a transient one: the retry path
    ],
    ids=["dead", "retry"],
)
async def test_a_stale_run_failing_last_leaves_the_outcome_of_the_run_that_claimed_after_it(
    db_url: str, fake: FakeMessagesAPI, opened: list[Runtime], late: Any, before: str
) -> None:
    first, second = await _two(db_url, fake, opened, [])
    fake.enqueue(held(then=late), reply(ANSWER))
    event_id = insert_event(db_url, "gh_stale_fails")
    running = asyncio.create_task(handle_event(first, event_id))
    await wait_until(lambda: fake.in_flight() == 1, timeout=20, what="the first run's model call")

    assert await handle_event(second, event_id) == "succeeded"  # the job, taken for stalled, run again
    assert _event(db_url, event_id) == ("succeeded", 2, None)

    fake.open_gate()  # the first run's call fails now, after the second run finished the event
    await asyncio.wait([running])
    assert _event(db_url, event_id) == ("succeeded", 2, None), f"the stale run's {before!r} overwrote it"
    assert running.result() == STALE  # it returned "dead" / raised RetryLater
    assert rows(db_url, "SELECT count(*) FROM hookline.dead_letters WHERE event_id = %s", event_id) == [(0,)]


@pytest.mark.parametrize("late", [error(400, "invalid_request_error"), server_error()], ids=["dead", "retry"])
async def test_a_stale_run_outliving_a_replay_leaves_the_replays_run_its_event(
    db_url: str, fake: FakeMessagesAPI, opened: list[Runtime], conn: psycopg.Connection[Any], late: Any
) -> None:
    """Migration 0048: the first run outlives the second run's outcome *and* a replay of the event. The
    replay starts again at attempts 0, so the replay's run claims attempts 1, the first run's token under
    0047: its late dead letter or retry was written over the replay's run, whose own outcome was then
    refused. The claim's token (hookline.events.claims) is now never handed out twice for one event."""
    first, second = await _two(db_url, fake, opened, [])
    fake.enqueue(held(then=late), reply(ANSWER))
    event_id = insert_event(db_url, "gh_stale_replayed")
    running = asyncio.create_task(handle_event(first, event_id))
    await wait_until(lambda: fake.in_flight() == 1, timeout=20, what="the first run's model call")
    assert await handle_event(second, event_id) == "succeeded"

    conn.execute("SELECT hookline.replay(%s::bigint)", (event_id,))
    (claimed,) = await second.db.start(event_id=event_id, job_id=None, more=0, queue=None, task=None, pickup=False)
    assert _event(db_url, event_id) == ("processing", 1, None)  # the replay's run holds the event

    fake.open_gate()  # the first run's call fails now, while the replay's run holds the event
    await asyncio.wait([running])
    assert _event(db_url, event_id) == ("processing", 1, None), "the stale run's outcome overwrote the replay's run"
    assert running.result() == STALE

    # the replay's run goes on from its claim (reusing the stored answer) and its outcome lands
    assert await handle_event(second, event_id, claimed=claimed, preloaded=True) == "succeeded"
    assert _event(db_url, event_id) == ("succeeded", 1, None)
    assert len(fake.calls_to("/v1/messages")) == 2


async def test_a_stale_run_succeeding_last_leaves_a_later_runs_dead_letter(
    db_url: str, fake: FakeMessagesAPI, opened: list[Runtime]
) -> None:
    """The group commit's finish (insert_calls: the answer and the outcome in one statement) is fenced
    too: the first run's answer is stored, but the event stays as the run holding the claim left it."""
    first, second = await _two(db_url, fake, opened, [])
    fake.enqueue(held(then=reply(ANSWER)), error(400, "invalid_request_error"))
    event_id = insert_event(db_url, "gh_stale_succeeds")
    running = asyncio.create_task(handle_event(first, event_id))
    await wait_until(lambda: fake.in_flight() == 1, timeout=20, what="the first run's model call")

    assert await handle_event(second, event_id) == "dead"
    fake.open_gate()
    await asyncio.wait([running])
    assert _event(db_url, event_id)[:2] == ("dead", 2)  # was: succeeded, over the dead letter
    assert running.result() == STALE
    assert rows(db_url, "SELECT status FROM hookline.llm_calls WHERE event_id = %s ORDER BY id", event_id) == [
        ("failed",),
        ("succeeded",),
    ]  # what the first run paid for is kept


async def test_the_sql_action_of_two_runs_is_called_once_and_the_run_that_lost_goes_on(
    db_url: str, fake: FakeMessagesAPI, opened: list[Runtime], conn: psycopg.Connection[Any]
) -> None:
    """Both runs call the function at once; the record of the one that commits second finds the run
    succeeded, so its call is rolled back. That run holds the event's claim: it used to dead-letter the
    event ('the action run is no longer running') although the function was called, once."""
    conn.execute(LEDGER)
    action = {"type": "sql", "name": "book", "function": "ledger.record"}
    first, second = await _two(db_url, fake, opened, [action])
    fake.enqueue(reply(ANSWER))
    event_id = insert_event(db_url, "gh_sql_twice")
    waiting = "SELECT count(*) FROM pg_stat_activity WHERE wait_event_type = 'Lock' AND wait_event = 'advisory'"
    conn.execute("SELECT pg_advisory_lock(4401)")
    try:
        running = asyncio.create_task(handle_event(first, event_id))
        await wait_until(lambda: rows(db_url, waiting) == [(1,)], timeout=20, what="the first run's call")
        taken = asyncio.create_task(handle_event(second, event_id))  # reuses the stored answer
        await wait_until(lambda: rows(db_url, waiting) == [(2,)], timeout=20, what="the second run's call")
    finally:
        conn.execute("SELECT pg_advisory_unlock(4401)")  # the first in line (the first run) commits first

    assert await running == STALE
    assert await taken == "succeeded"
    assert _event(db_url, event_id)[:2] == ("succeeded", 2)
    assert rows(db_url, "SELECT count(*) FROM ledger.calls") == [(1,)]
    ((_, _, status, attempts, result, _),) = action_rows(db_url, event_id)
    assert (status, attempts, result["returned"]) == ("succeeded", 2, 1)
    assert len(fake.calls_to("/v1/messages")) == 1


async def test_a_stale_runs_database_failure_is_not_counted_on_the_later_runs_event(
    db_url: str, fake: FakeMessagesAPI, opened: list[Runtime]
) -> None:
    """A run that fails outside the pipeline (a database error) after another run claimed the event
    since counts nothing on the event's infra_failures (50 dead-letter it, under the later run) and
    raises no RetryLater for a job that is the later run's now: it ends ``stale``."""
    first, second = await _two(db_url, fake, opened, [])
    event_id = insert_event(db_url, "gh_stale_infra")
    start = {"event_id": event_id, "job_id": None, "more": 0, "queue": None, "task": None, "pickup": False}
    (mine,) = await first.db.start(**start)
    (later,) = await second.db.start(**start)  # the job, taken for stalled, claimed again
    assert claim_of(later) == claim_of(mine) + 1

    failed = psycopg.errors.QueryCanceled("canceling statement due to statement timeout")
    assert await infrastructure_failure(first, event_id, 1, failed, claim=claim_of(mine)) == STALE
    assert rows(db_url, "SELECT infra_failures FROM hookline.events WHERE id = %s", event_id) == [(0,)]

    with pytest.raises(RetryLater):  # the run holding the claim counts its own failure
        await infrastructure_failure(second, event_id, 1, failed, claim=claim_of(later))
    assert rows(db_url, "SELECT infra_failures FROM hookline.events WHERE id = %s", event_id) == [(1,)]


async def test_a_failure_after_the_runs_own_hold_committed_is_counted_and_rescheduled(
    db_url: str, fake: FakeMessagesAPI, opened: list[Runtime]
) -> None:
    """The run's own hold (or retry) committed and its answer was lost (a connection dropped after the
    commit): the event is no longer ``processing``, but the claim is still this run's. The failure is
    counted and the job rescheduled, as before the claim fenced it; ended ``stale``, the job stayed
    doing under a live worker and nothing ran the held event again."""
    first, _ = await _two(db_url, fake, opened, [])
    event_id = insert_event(db_url, "gh_own_hold")
    start = {"event_id": event_id, "job_id": None, "more": 0, "queue": None, "task": None, "pickup": False}
    (mine,) = await first.db.start(**start)
    with psycopg.connect(db_url, autocommit=True) as conn:  # the run's own hold, committed
        conn.execute("UPDATE hookline.events SET status = 'throttled' WHERE id = %s", (event_id,))

    failed = psycopg.errors.AdminShutdown("terminating connection due to administrator command")
    with pytest.raises(RetryLater):
        await infrastructure_failure(first, event_id, 1, failed, claim=claim_of(mine))
    assert rows(db_url, "SELECT infra_failures FROM hookline.events WHERE id = %s", event_id) == [(1,)]
