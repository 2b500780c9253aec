"""The lean worker. Batch claim: one procrastinate job claims further waiting jobs, with their events, in the round trip
that claims its own (``start_events``), and owns them to the end: a terminal outcome finishes the
claimed job in the event's last write, a retry hands it back to the queue.

The job is fetched by the real procrastinate job manager and run through the real task function with
a real ``JobContext``. The handed-over job is finished by its event's last write too; the last tests
run the real procrastinate worker, which then does not finish it again (worker.handover).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import AsyncIterator
from typing import Any

import psycopg
import pytest
from procrastinate import JobContext

from app.core.status import CallStatus
from tests.fakes.messages_api import FakeMessagesAPI, error, reply
from tests.harness import make_settings, rows, wait_for_status, worker_task
from tests.worker.test_pipeline import GOOD, insert_event, make_config
from worker.callwriter import rows_json
from worker.db import Q
from worker.llm import CallRecord, call_row
from worker.main import build_app
from worker.runtime import Runtime
from worker.tasks import RetryLater, handle_event, process_event

pytestmark = pytest.mark.usefixtures("stripe_and_crm")


async def _runtime(db_url: str, fake: FakeMessagesAPI | None, **over: Any) -> Runtime:
    key = {"anthropic_api_key": "sk-test", "anthropic_base_url": fake.base_url} if fake else {}
    settings = make_settings(db_url, **(key | over))
    rt = Runtime.build(settings, make_config(actions=[]))
    await rt.open()
    return rt


@pytest.fixture
async def queue(db_url: str) -> AsyncIterator[Any]:
    """procrastinate's app, with a registered worker id to fetch jobs as."""
    app = build_app(db_url, pool_size=2)
    async with app.open_async():
        worker_id = await app.job_manager.register_worker()
        yield app, worker_id


async def _run_first_job(queue: Any, rt: Runtime) -> tuple[str, int]:
    app, worker_id = queue
    job = await app.job_manager.fetch_job(queues=None, worker_id=worker_id)
    assert job is not None and job.id is not None
    context = JobContext(
        app=app, job=job, additional_context={"runtime": rt}, start_timestamp=time.time(), abort_reason=lambda: None
    )
    return await process_event(context, **job.task_kwargs), job.id


def jobs(db_url: str) -> dict[int, str]:
    """event id → status of its procrastinate job."""
    found = rows(db_url, "SELECT (args->>'event_id')::bigint, status::text FROM procrastinate_jobs")
    return {int(event_id): status for event_id, status in found}


async def test_one_job_claims_the_backlog_within_the_free_concurrency(db_url: str, queue: Any) -> None:
    ids = [insert_event(db_url, f"evt_b{i}") for i in range(10)]
    same_key = [insert_event(db_url, f"evt_k{i}", ordering_key="cus_1") for i in range(2)]
    rt = await _runtime(db_url, None, worker_concurrency=6, worker_claim_batch=6)  # dry run: no key
    try:
        status, _ = await _run_first_job(queue, rt)
    finally:
        await rt.close()
    assert status == "succeeded"
    done = [r[0] for r in rows(db_url, "SELECT id FROM hookline.events WHERE status = 'succeeded' ORDER BY id")]
    assert done == ids[:6]  # its own and 5 more: priority, then age
    by_event = jobs(db_url)
    assert [by_event[i] for i in ids[:6]] == ["succeeded"] * 6  # the handed-over one too, by its event's write
    assert all(by_event[i] == "todo" for i in ids[6:] + same_key)
    # store + finish in one statement: each finished event has its one dry-run call and says so
    for event_id in done:
        assert rows(db_url, "SELECT status FROM hookline.llm_calls WHERE event_id = %s", event_id) == [("dry_run",)]
    details = rows(db_url, "SELECT DISTINCT dry_run, detail FROM hookline.events WHERE status = 'succeeded'")
    assert len(details) == 1 and details[0][0] is True and "dry run" in details[0][1]


async def test_a_lock_is_claimed_one_job_at_a_time(db_url: str, queue: Any) -> None:
    keyed = [insert_event(db_url, f"evt_k{i}", ordering_key="cus_1") for i in range(3)]
    free = insert_event(db_url, "evt_free")
    rt = await _runtime(db_url, None, worker_concurrency=10, worker_claim_batch=10)
    try:
        await _run_first_job(queue, rt)
    finally:
        await rt.close()
    by_event = jobs(db_url)
    # the first keyed job ran; its successors wait for it (procrastinate's lock rule), the free one came along
    assert by_event[keyed[0]] == "succeeded" and by_event[free] == "succeeded"
    assert by_event[keyed[1]] == by_event[keyed[2]] == "todo"


async def test_a_claimed_event_that_must_retry_goes_back_to_the_queue(
    db_url: str, queue: Any, fake: FakeMessagesAPI
) -> None:
    fake.set_default(reply(GOOD))
    first = insert_event(db_url, "evt_first")
    flaky = insert_event(db_url, "evt_flaky", note="flaky one")
    fake.enqueue_for("flaky one", error(500, "api_error"))
    rt = await _runtime(db_url, fake, worker_concurrency=4, worker_claim_batch=4)
    try:
        assert (await _run_first_job(queue, rt))[0] == "succeeded"
    finally:
        await rt.close()
    assert rows(db_url, "SELECT status, attempts FROM hookline.events WHERE id = %s", flaky) == [("retrying", 1)]
    job = rows(
        db_url,
        "SELECT status::text, attempts, scheduled_at IS NOT NULL FROM procrastinate_jobs "
        "WHERE (args->>'event_id')::bigint = %s",
        flaky,
    )
    assert job == [("todo", 1, True)]  # handed back, scheduled after its backoff, not left "doing"
    assert rows(db_url, "SELECT status FROM hookline.events WHERE id = %s", first) == [("succeeded",)]


async def test_claimed_jobs_of_a_terminal_event_or_of_one_run_here_are_finished(db_url: str, queue: Any) -> None:
    """The batch claim takes a job whose event is already terminal, and a second job of the event the
    handed-over job runs: each is finished (succeeded) without running its event again. The statement
    that finishes them lacked its claim parameter, so psycopg refused it before sending: the jobs stayed
    ``doing`` under a live worker, holding back their lock."""
    first = insert_event(db_url, "evt_first")
    done = insert_event(db_url, "evt_done_already")
    with psycopg.connect(db_url, autocommit=True) as conn:
        conn.execute("UPDATE hookline.events SET status = 'succeeded', finished_at = now() WHERE id = %s", (done,))
        conn.execute(
            "INSERT INTO procrastinate_jobs (queue_name, task_name, priority, lock, args, status) "
            "SELECT queue_name, task_name, priority, lock, args, 'todo' FROM procrastinate_jobs "
            "WHERE (args->>'event_id')::bigint = %s",
            (first,),
        )
    rt = await _runtime(db_url, None, worker_concurrency=4, worker_claim_batch=4)
    try:
        assert (await _run_first_job(queue, rt))[0] == "succeeded"
    finally:
        await rt.close()
    found = rows(
        db_url,
        "SELECT (args->>'event_id')::bigint, status::text FROM procrastinate_jobs ORDER BY id",
    )
    assert found == [(first, "succeeded"), (done, "succeeded"), (first, "succeeded")]
    assert rows(db_url, "SELECT count(*) FROM hookline.llm_calls WHERE event_id = %s", first) == [(1,)]
    assert rows(db_url, "SELECT count(*) FROM hookline.llm_calls WHERE event_id = %s", done) == [(0,)]


async def test_claim_batch_one_claims_nothing_more(db_url: str, queue: Any) -> None:
    ids = [insert_event(db_url, f"evt_s{i}") for i in range(3)]
    rt = await _runtime(db_url, None, worker_concurrency=10, worker_claim_batch=1)
    try:
        await _run_first_job(queue, rt)
    finally:
        await rt.close()
    by_event = jobs(db_url)
    assert [by_event[i] for i in ids] == ["succeeded", "todo", "todo"]


async def test_a_failed_store_and_finish_leaves_the_event_to_the_failure_path(
    db_url: str, fake: FakeMessagesAPI
) -> None:
    """The statement that stores the answer also finishes the event; when it fails, the event must
    not be taken for finished: it is retried (and the next run finishes it)."""
    fake.set_default(reply(GOOD))
    event_id = insert_event(db_url, "evt_store_fails")
    with psycopg.connect(db_url, autocommit=True) as conn:
        conn.execute(
            """
            CREATE SEQUENCE finishes;  -- nextval survives the rollback of the failed statement
            CREATE FUNCTION fail_first_finish() RETURNS trigger LANGUAGE plpgsql AS $$
            BEGIN
                IF NEW.status = 'succeeded' AND nextval('finishes') = 1 THEN
                    RAISE EXCEPTION 'injected: the finishing write fails';
                END IF;
                RETURN NEW;
            END $$;
            CREATE TRIGGER fail_first_finish BEFORE UPDATE ON hookline.events
                FOR EACH ROW EXECUTE FUNCTION fail_first_finish();
            """
        )
    rt = await _runtime(db_url, fake)
    try:
        with pytest.raises(RetryLater):
            await handle_event(rt, event_id)
        assert rows(db_url, "SELECT status FROM hookline.events WHERE id = %s", event_id) == [("retrying",)]
        assert await handle_event(rt, event_id) == "succeeded"
    finally:
        await rt.close()
    assert rows(db_url, "SELECT status FROM hookline.events WHERE id = %s", event_id) == [("succeeded",)]
    # the failed statement stored nothing: the answer that finished the event is the only one
    assert rows(db_url, "SELECT status FROM hookline.llm_calls WHERE event_id = %s", event_id) == [("succeeded",)]


async def test_a_pooled_connection_the_server_closed_is_not_lent_again(db_url: str) -> None:
    """The worker's pool checks a connection without a round trip: one whose backend was terminated
    while it sat in the pool (a restart, a failover, pg_terminate_backend) is discarded, and the
    next statement runs on a fresh connection instead of failing."""
    rt = await _runtime(db_url, None)
    try:
        async with rt.db.pool.connection() as conn:
            pid = (await (await conn.execute("SELECT pg_backend_pid()")).fetchone() or [0])[0]
        assert rows(db_url, "SELECT pg_terminate_backend(%s)", pid) == [(True,)]
        for _ in range(100):  # the backend is gone once pg_stat_activity no longer lists it
            if not rows(db_url, "SELECT 1 FROM pg_stat_activity WHERE pid = %s", pid):
                break
            await asyncio.sleep(0.02)
        async with rt.db.pool.connection() as conn:
            again = (await (await conn.execute("SELECT pg_backend_pid()")).fetchone() or [0])[0]
        assert again != pid
    finally:
        await rt.close()


async def test_procrastinates_pool_lends_autocommit_connections_with_the_local_check(queue: Any) -> None:
    """procrastinate's fetch and finish are one round trip each: no BEGIN/COMMIT around the statement
    (autocommit) and no check query before it (the worker's local check, as for its own pool)."""
    from worker.db import check_connection

    app, _ = queue
    pool = app.connector.pool
    assert pool._check is check_connection
    async with pool.connection() as conn:
        assert conn.autocommit
        await conn.execute("SELECT 1")
        assert conn.info.transaction_status == psycopg.pq.TransactionStatus.IDLE  # committed by itself


async def test_the_claim_commits_without_waiting_for_its_wal_flush_and_the_answer_waits(
    db_url: str, queue: Any
) -> None:
    """``start_events`` turns synchronous_commit off for its own transaction only: its commit (and its
    'processing' NOTIFY) does not wait for a WAL flush. The statement that stores the answer and
    finishes the event keeps it on: a paid answer is durable before anyone hears of it."""
    event_id = insert_event(db_url, "evt_async_claim")
    app, worker_id = queue
    job = await app.job_manager.fetch_job(queues=None, worker_id=worker_id)
    assert job is not None
    claim = {"event_id": event_id, "job_id": job.id, "more": 0, "queue": "hookline", "task": "x", "pickup": False}
    record = CallRecord(model="m", status=CallStatus.DRY_RUN, request={})
    answer = rows_json([call_row(event_id, "triage", record, dry=True)])
    with psycopg.connect(db_url) as conn:  # a transaction block, so the setting can be read before COMMIT
        claimed = conn.execute(Q["start_events"], claim).fetchall()
        assert [r[0] for r in claimed] == [event_id]
        assert conn.execute("SHOW synchronous_commit").fetchone() == ("off",)
        conn.commit()
        assert conn.execute("SHOW synchronous_commit").fetchone() == ("on",)  # that transaction only
        stored = conn.execute(Q["insert_calls"], {"rows": answer, "notify": "after_commit"}).fetchall()
        assert len(stored) == 1 and stored[0][1] is not None
        assert conn.execute("SHOW synchronous_commit").fetchone() == ("on",)
        conn.commit()
    assert rows(db_url, f"SELECT status FROM hookline.events WHERE id = {event_id}") == [("processing",)]


async def test_the_fetch_claims_the_event_of_a_lone_job_when_a_slot_is_free(db_url: str) -> None:
    """worker.handover: the fetch that gets a process_event job claims its event in the same statement
    (as start_events would: processing, attempts + 1, started when the job started, stored answers,
    pickup), when nothing else is runnable, the job is no replay and the worker has a free slot. The
    task then runs from that claim without claiming again. Otherwise the fetch claims nothing."""
    from worker.handover import QUIET_SECONDS, QueueConnector

    rt = await _runtime(db_url, None, worker_concurrency=2)  # dry run: no key
    free = [True]
    rt.db.handover.claim_with(free=lambda: free[0], pickup=lambda: True)
    app = build_app(db_url, pool_size=2, handover=rt.db.handover)
    connector = app.connector
    assert isinstance(connector, QueueConnector)

    def event_row(event_id: int) -> tuple[Any, ...]:
        return rows(db_url, "SELECT status, attempts FROM hookline.events WHERE id = %s", event_id)[0]

    async def fetch() -> Any:
        await asyncio.sleep(QUIET_SECONDS * 2)  # past the quiet time after a lone job: a real fetch
        job = await app.job_manager.fetch_job(queues=None, worker_id=worker_id)
        assert job is not None and job.id is not None
        return job

    try:
        async with app.open_async():
            worker_id = await app.job_manager.register_worker()
            # a lone event: claimed by the fetch, and run from that claim
            lone = insert_event(db_url, "evt_fc_lone")
            job = await fetch()
            assert event_row(lone) == ("processing", 1)
            started = rows(
                db_url,
                """SELECT e.started_at = pe.at FROM hookline.events e, procrastinate_events pe
                   WHERE e.id = %s AND pe.job_id = %s AND pe.type = 'started'""",
                lone,
                job.id,
            )
            assert started == [(True,)]  # one transaction: the job's start is the event's
            claim = rt.db.handover.claimed(job.id)
            assert claim is not None and claim["id"] == lone and claim["job_id"] is None
            assert claim["event_id"] == lone and claim["answers"] == {}  # type: ignore[typeddict-item]
            assert claim["pickup_s"] is not None and claim["pickup_s"] >= 0
            assert rt.db.handover.claimed(job.id) is None  # taken once
            rt.db.handover.keep_claim(job.id, claim)
            context = JobContext(
                app=app,
                job=job,
                additional_context={"runtime": rt},
                start_timestamp=time.time(),
                abort_reason=lambda: None,
            )
            assert await process_event(context, **job.task_kwargs) == "succeeded"
            assert event_row(lone) == ("succeeded", 1)  # not claimed a second time
            assert connector.fetch_claims == 1

            # a backlog: start_events claims the job's event and a batch of others, not the fetch
            backlog = [insert_event(db_url, f"evt_fc_b{i}") for i in range(2)]
            job = await fetch()
            assert rt.db.handover.claimed(job.id) is None
            assert [event_row(e) for e in backlog] == [("queued", 0)] * 2
            await fetch()  # the second of the backlog, now lone: claimed
            assert [event_row(e)[0] for e in backlog] == ["queued", "processing"]

            # no free slot: not claimed
            free[0] = False
            busy = insert_event(db_url, "evt_fc_busy")
            job = await fetch()
            assert rt.db.handover.claimed(job.id) is None and event_row(busy) == ("queued", 0)
            free[0] = True

            # a replay (recompute, force_actions): never claimed by the fetch
            with psycopg.connect(db_url, autocommit=True) as conn:
                conn.execute("UPDATE hookline.events SET status = 'succeeded' WHERE id = %s", (busy,))
                conn.execute("SELECT hookline.replay(%s, true, false)", (busy,))
            job = await fetch()
            assert rt.db.handover.claimed(job.id) is None and event_row(busy) == ("queued", 0)

            # an event already terminal: the claim says so (no row), as start_events does
            done = insert_event(db_url, "evt_fc_done")
            with psycopg.connect(db_url, autocommit=True) as conn:
                conn.execute("UPDATE hookline.events SET status = 'skipped' WHERE id = %s", (done,))
            job = await fetch()
            claim = rt.db.handover.claimed(job.id)
            assert claim is not None and claim["id"] is None and claim["event_id"] == done
            assert connector.fetch_claims == 3 and connector.fetch_claim_failures == 0
    finally:
        await rt.close()


async def test_procrastinate_does_not_settle_again_a_job_its_events_write_finished(db_url: str) -> None:
    """worker.handover: procrastinate's own finish_job and retry_job for a handed-over job that the
    event's last write already finished are answered without a statement (sent, procrastinate's SQL
    would raise: the job is no longer 'doing'); for any other job they are sent as before."""
    from procrastinate.exceptions import ConnectorException
    from procrastinate.jobs import Status

    from worker.handover import Handover

    first, second, third = (insert_event(db_url, f"evt_h{i}") for i in range(3))
    handover = Handover()
    app = build_app(db_url, pool_size=2, handover=handover)
    async with app.open_async():
        worker_id = await app.job_manager.register_worker()
        a, b, c = [await app.job_manager.fetch_job(queues=None, worker_id=worker_id) for _ in range(3)]
        assert a is not None and b is not None and c is not None
        assert a.id is not None and b.id is not None and c.id is not None
        by_job = {a.id: first, b.id: second, c.id: third}
        handed = (a.id, b.id)
        for job_id in handed:
            handover.begin(job_id)
        with psycopg.connect(db_url, autocommit=True) as conn:  # the events' own writes finish a and c
            for job_id in (a.id, c.id):
                conn.execute(
                    Q["finish_event"],
                    {
                        "event_id": by_job[job_id],
                        "status": "succeeded",
                        "dry_run": True,
                        "detail": None,
                        "error": None,
                        "job_id": job_id,
                        "claim": None,
                    },
                )
        handover.finished(a.id)
        handover.finished(c.id)  # claimed by this worker itself, not handed over: not procrastinate's to settle
        for job_id in handed:
            handover.end(job_id)
        assert len(handover) == 1
        await app.job_manager.finish_job_by_id_async(a.id, Status.SUCCEEDED, delete_job=False)  # skipped
        await app.job_manager.finish_job_by_id_async(b.id, Status.SUCCEEDED, delete_job=False)  # sent
        with pytest.raises(ConnectorException):  # a job nobody recorded as finished: sent, and refused
            await app.job_manager.finish_job_by_id_async(c.id, Status.SUCCEEDED, delete_job=False)
        with pytest.raises(ConnectorException):  # skipped once only
            await app.job_manager.finish_job_by_id_async(a.id, Status.SUCCEEDED, delete_job=False)
    assert handover.skipped == 1 and len(handover) == 0
    assert rows(db_url, "SELECT status::text, attempts FROM procrastinate_jobs ORDER BY id") == [("succeeded", 1)] * 3


async def test_the_real_worker_finishes_each_job_in_its_events_last_write(
    db_url: str, fake: FakeMessagesAPI, caplog: pytest.LogCaptureFixture
) -> None:
    """The real procrastinate worker, one job at a time (no batch claim): every handed-over job is
    finished in the same transaction as its event (the stored answer, or a skip with no pipeline), a
    job whose event must retry is retried by procrastinate, and nothing is settled twice."""
    fake.set_default(reply(GOOD))
    answered = [insert_event(db_url, f"evt_r{i}") for i in range(4)]
    skipped = insert_event(db_url, "evt_r_skip", event_type="customer.created")  # no pipeline: its own finish
    flaky = insert_event(db_url, "evt_r_flaky", note="flaky one")
    fake.enqueue_for("flaky one", error(500, "api_error"))
    settings = make_settings(
        db_url, anthropic_api_key="sk-test", anthropic_base_url=fake.base_url, worker_claim_batch=1
    )
    with caplog.at_level(logging.WARNING):
        async with worker_task(settings, make_config(actions=[])):
            for eid in [*answered, skipped, flaky]:
                await wait_for_status(db_url, eid, timeout=30)
    got = rows(
        db_url,
        """SELECT e.id, e.status, j.status::text, j.attempts,
                  e.finished_at = (SELECT max(pe.at) FROM procrastinate_events pe
                                   WHERE pe.job_id = j.id AND pe.type = 'succeeded')
           FROM hookline.events e JOIN procrastinate_jobs j ON (j.args ->> 'event_id')::bigint = e.id
           ORDER BY e.id""",
    )
    expected = [(eid, "succeeded", "succeeded", 1, True) for eid in answered]
    expected += [(skipped, "skipped", "succeeded", 1, True), (flaky, "succeeded", "succeeded", 2, True)]
    assert got == expected
    assert rows(db_url, "SELECT count(*) FROM procrastinate_events WHERE type = 'deferred_for_retry'") == [(1,)]
    assert [r.getMessage() for r in caplog.records if r.levelno >= logging.ERROR] == []


async def test_a_fetch_that_could_only_come_back_empty_is_not_sent(db_url: str) -> None:
    """worker.handover: after a fetch that got a job and left nothing runnable, procrastinate's next
    fetch (at once) is answered "no job" without a statement, unless a notification arrived since the
    fetch was sent; a later fetch, or one after a notification, goes to Postgres."""
    from worker.handover import QUIET_SECONDS, QueueConnector

    first, second = insert_event(db_url, "evt_q1"), insert_event(db_url, "evt_q2")
    app = build_app(db_url, pool_size=2)
    connector = app.connector
    assert isinstance(connector, QueueConnector)
    heard: list[str] = []

    async def on_notification(*, channel: str, payload: str) -> None:
        heard.append(payload)

    async def notified(n: int) -> None:
        for _ in range(250):
            if len(heard) >= n:
                return
            await asyncio.sleep(0.02)
        raise AssertionError(f"expected {n} notifications, heard {len(heard)}")

    def event_of(job: Any) -> int:
        assert job is not None
        return int(job.task_kwargs["event_id"])

    async with app.open_async():
        worker_id = await app.job_manager.register_worker()

        async def fetch() -> Any:
            return await app.job_manager.fetch_job(queues=None, worker_id=worker_id)

        assert event_of(await fetch()) == first  # another job waits: the next fetch is sent
        assert event_of(await fetch()) == second  # the last runnable job
        assert await fetch() is None and connector.fetches_spared == 1  # nothing could be there: spared
        assert await fetch() is None and connector.fetches_spared == 1  # sent: one fetch is spared, once

        listening = asyncio.create_task(
            connector.listen_notify(on_notification=on_notification, channels=["procrastinate_any_queue_v1"])
        )
        try:
            third = []
            for attempt in range(100):  # LISTEN is in place once a job insert is heard
                third.append(insert_event(db_url, f"evt_q3_{attempt}"))
                await asyncio.sleep(0.05)
                if heard:
                    break
            for event_id in third:  # the last of them leaves nothing runnable: quiet
                assert event_of(await fetch()) == event_id
            before = len(heard)
            fourth = insert_event(db_url, "evt_q4")  # committed after that fetch: its NOTIFY comes
            await notified(before + 1)
            assert event_of(await fetch()) == fourth and connector.fetches_spared == 1  # sent, and found it
            await asyncio.sleep(2 * QUIET_SECONDS)
            assert await fetch() is None and connector.fetches_spared == 1  # too late to be that fetch: sent
        finally:
            listening.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await listening


#: procrastinate's listener has run (and committed) its last LISTEN, that of the hookline queue
_LISTENING = """SELECT count(*) FROM pg_stat_activity
WHERE datname = current_database() AND state = 'idle' AND query LIKE 'LISTEN "procrastinate\\_queue\\_v1#hookline"%%'"""


async def test_lone_events_each_cost_one_fetch_and_none_waits_for_the_poll(
    db_url: str, fake: FakeMessagesAPI, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The real worker, events arriving one at a time, a 30 s poll: each is woken by its NOTIFY and
    started at once, and the empty fetch after each is spared."""
    import worker.main

    apps: list[Any] = []
    real_build_app = worker.main.build_app

    def build_app_kept(*args: Any, **kwargs: Any) -> Any:
        apps.append(real_build_app(*args, **kwargs))
        return apps[-1]

    monkeypatch.setattr(worker.main, "build_app", build_app_kept)
    fake.set_default(reply(GOOD))
    settings = make_settings(
        db_url,
        anthropic_api_key="sk-test",
        anthropic_base_url=fake.base_url,
        worker_claim_batch=1,
        worker_poll_interval=30.0,
    )
    async with worker_task(settings, make_config(actions=[])):
        for _ in range(500):  # procrastinate LISTENs once it runs; an insert before that waits for the poll
            if rows(db_url, _LISTENING) != [(0,)]:
                break
            await asyncio.sleep(0.02)
        else:
            raise AssertionError(
                f"procrastinate is not listening: {rows(db_url, 'SELECT state, query FROM pg_stat_activity')}"
            )
        for i in range(5):
            eid = insert_event(db_url, f"evt_lone{i}")
            await wait_for_status(db_url, eid, timeout=15)  # half the poll interval: the NOTIFY woke it
    assert rows(db_url, "SELECT count(*) FROM hookline.events WHERE status = 'succeeded'") == [(5,)]
    assert apps and apps[0].connector.fetches_spared >= 1
    # each fetch claimed its event, and the task did not claim it again (that would count a second attempt)
    assert apps[0].connector.fetch_claims == 5
    assert rows(db_url, "SELECT DISTINCT attempts FROM hookline.events") == [(1,)]


async def test_an_empty_fetch_during_which_a_job_was_announced_is_sent_again(
    db_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A job that commits after a fetch's snapshot and announces itself while the fetch runs: procrastinate
    would clear its wake-up when the empty fetch returns and leave the job to the next poll; the
    connector fetches again and finds it."""
    import procrastinate

    from worker.handover import QueueConnector

    app = build_app(db_url, pool_size=2)
    connector = app.connector
    assert isinstance(connector, QueueConnector)
    real_fetch = procrastinate.PsycopgConnector.execute_query_one_async
    late: list[int] = []

    async def fetch_then_a_job_arrives(self: Any, query: Any, **arguments: Any) -> dict[str, Any]:
        row: dict[str, Any] = await real_fetch(self, query, **arguments)
        if "fetch_job" in query and not late:  # committed after this fetch's snapshot,
            # and its NOTIFY reached the listener while the fetch ran
            late.append(insert_event(db_url, "evt_late"))
            connector._notified = True
        return row

    monkeypatch.setattr(procrastinate.PsycopgConnector, "execute_query_one_async", fetch_then_a_job_arrives)
    async with app.open_async():
        worker_id = await app.job_manager.register_worker()
        job = await app.job_manager.fetch_job(queues=None, worker_id=worker_id)
    assert job is not None and job.task_kwargs["event_id"] == late[0]
    assert connector.refetches == 1


async def test_the_loop_is_woken_each_time_its_listens_are_in_place(db_url: str) -> None:
    """A job committed while the worker was not listening (its start-up, or while its LISTEN connection
    is opened again) notified nobody: once the LISTENs are in place the connector wakes procrastinate's
    loop, as a job_inserted notification would, at start and after the connection died."""
    import json

    from worker.handover import QueueConnector

    app = build_app(db_url, pool_size=2)
    connector = app.connector
    assert isinstance(connector, QueueConnector)
    channel = "procrastinate_queue_v1#hookline"
    heard: list[dict[str, Any]] = []
    probes = asyncio.Queue[None]()

    async def on_notification(*, channel: str, payload: str) -> None:
        heard.append(json.loads(payload))
        if heard[-1]["type"] == "job_inserted":
            # woken: a NOTIFY sent now reaches the listener, so its LISTENs were in place already
            with psycopg.connect(db_url, autocommit=True) as c:
                c.execute("SELECT pg_notify(%s, %s)", (channel, json.dumps({"type": "probe", "n": len(heard)})))
        else:
            probes.put_nowait(None)

    async with app.open_async():
        listening = asyncio.create_task(connector.listen_notify(on_notification=on_notification, channels=[channel]))
        try:
            await asyncio.wait_for(probes.get(), timeout=10)
            assert heard == [{"type": "job_inserted"}, {"type": "probe", "n": 1}] and connector.listens == 1
            with psycopg.connect(db_url, autocommit=True) as c:  # the LISTEN connection dies
                killed = c.execute(
                    "SELECT pg_terminate_backend(pid) FROM pg_stat_activity"
                    " WHERE datname = current_database() AND query LIKE 'LISTEN %%'"
                ).fetchall()
            assert killed == [(True,)]
            await asyncio.wait_for(probes.get(), timeout=20)
            assert heard[2:] == [{"type": "job_inserted"}, {"type": "probe", "n": 3}] and connector.listens == 2
        finally:
            listening.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await listening
