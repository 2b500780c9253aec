"""Chaos: workers killed and stopped mid-job, Postgres restarted under traffic, duplicates mid-flight.

Every worker here is a child process (``python -m worker``) that the test signals like a PaaS does;
Postgres is real (the restart test gets a dedicated embedded server it can stop and start); the
model is the fake Messages API over HTTP; the http action goes to a local receiver. The promises
checked: an acknowledged event is never lost, a model answer is paid for once, a side effect
happens once (or, when a worker dies mid-delivery, again with the same idempotency key), a job is
never left in ``doing``, and a worker never exits on a database outage.

On failure the report carries every worker child's log ("worker children" section).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import signal
import time
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import httpx
import psycopg
import pytest

from app.core import migrations
from app.core.config import load_config
from app.signatures import verify
from tests.chaos_support import (
    ANSWER,
    OUT_SECRET,
    STRIPE_SECRET,
    Delivery,
    RestartablePostgres,
    ScratchDatabases,
    Workers,
    deliver,
    drop_orphans,
    event_status,
    freshest_heartbeat_age,
    process_jobs,
    query,
    session_db,
    slow_receiver,
    stripe_event,
    stripe_headers,
    unhandled_web_errors,
    wait_for_log,
    wait_until,
    worker_env,
    write_config,
)
from tests.fakes.messages_api import FakeMessagesAPI, reply, slow
from tests.harness import ROOT, make_settings, web_server

MESSAGES = "/v1/messages"
STALLED_AFTER = 2.0  # HOOKLINE_STALLED_AFTER of every worker child (chaos_support.worker_env)
TERMINAL = ("succeeded", "dead", "skipped")


# ------------------------------------------------------------------------------------------ fixtures
@pytest.fixture(scope="session")
def scratch(pg_server: Any) -> Iterator[ScratchDatabases]:
    s = ScratchDatabases(admin_url=pg_server.url("postgres"), url_for=pg_server.url)
    yield s
    s.close()


@pytest.fixture
def chaos_db(scratch: ScratchDatabases) -> Iterator[str]:
    name = scratch.create()
    yield scratch.url_for(name)
    scratch.drop(name)


@pytest.fixture
def workers(tmp_path: Path) -> Iterator[Workers]:
    w = Workers(tmp_path)
    yield w
    w.stop_all()


@pytest.fixture
def fake() -> Iterator[FakeMessagesAPI]:
    with FakeMessagesAPI() as f:
        yield f


@pytest.fixture
def web_env(monkeypatch: pytest.MonkeyPatch) -> None:
    """The in-process web server reads the source secret from os.environ, like `hookline web`."""
    monkeypatch.setenv("HL_CHAOS_STRIPE_SECRET", STRIPE_SECRET)


@contextlib.contextmanager
def explained(request: pytest.FixtureRequest, workers: Workers) -> Iterator[None]:
    """On failure, attach every worker child's output to the pytest report."""
    try:
        yield
    except BaseException:
        request.node.add_report_section("call", "worker children", workers.report())
        raise


# ------------------------------------------------------------------------------------------ helpers
@contextlib.asynccontextmanager
async def web(db_url: str, config_path: Path, **over: Any) -> AsyncIterator[str]:
    """hookline's web app (in-process uvicorn); yields the stripe source's webhook URL."""
    settings = make_settings(db_url, **over)
    async with web_server(settings, load_config(config_path)) as base:
        yield f"{base}/webhooks/stripe"


async def send(db_url: str, config_path: Path, body: bytes) -> dict[str, Any]:
    """One signed delivery over real HTTP; returns the JSON acknowledgement."""
    async with web(db_url, config_path) as url, httpx.AsyncClient() as client:
        return await post_event(client, url, body)


async def post_event(client: httpx.AsyncClient, url: str, body: bytes) -> dict[str, Any]:
    resp = await client.post(url, content=body, headers=stripe_headers(body))
    assert resp.status_code == 200, resp.text
    data: dict[str, Any] = resp.json()
    return data


async def wait_calls(fake: FakeMessagesAPI, count: int, workers: Workers, timeout: float = 20.0) -> None:
    try:
        await asyncio.to_thread(fake.wait_for_calls, MESSAGES, count, timeout)
    except TimeoutError as e:
        raise AssertionError(f"{e}\n{workers.report()}") from None


def one(db_url: str, sql: str, *params: Any) -> Any:
    got = query(db_url, sql, *params)
    assert len(got) == 1 and len(got[0]) == 1, got
    return got[0][0]


def actions_of(db_url: str, event_id: int) -> list[tuple[str, str, int]]:
    return [
        (str(a), str(s), int(n))
        for a, s, n in query(
            db_url,
            "SELECT action, status, attempts FROM hookline.action_runs WHERE event_id = %s ORDER BY action",
            event_id,
        )
    ]


def calls_of(db_url: str, event_id: int) -> list[str]:
    return [
        str(s)
        for (s,) in query(db_url, "SELECT status FROM hookline.llm_calls WHERE event_id = %s ORDER BY id", event_id)
    ]


def event_and_jobs(db_url: str, event_id: int) -> str:
    ev = query(db_url, "SELECT status, attempts, last_error, detail FROM hookline.events WHERE id = %s", event_id)
    return f"event {event_id}: {ev}; process_event jobs (id, status, attempts): {process_jobs(db_url)}"


async def wait_terminal(db_url: str, event_id: int, workers: Workers, timeout: float = 30.0) -> str:
    """The event's terminal status. Fails fast when its job ended ``failed`` while the event is not
    terminal: nothing would ever run it again (no retry, no stalled-job recovery, no dead letter)."""

    def check() -> str | None:
        status = event_status(db_url, event_id)
        if status in TERMINAL:
            return status
        if any(s == "failed" for _, s, _ in process_jobs(db_url)):
            return f"stranded: {event_and_jobs(db_url, event_id)}"
        return None

    status: str = await wait_until(
        check,
        timeout=timeout,
        what=f"event {event_id} to finish",
        report=lambda: f"{event_and_jobs(db_url, event_id)}\n{workers.report()}",
    )
    return status


async def wait_stalled(db_url: str, workers: Workers) -> None:
    """Wait out HOOKLINE_STALLED_AFTER since the dead worker's last heartbeat: from then on a starting
    worker hands its job back at once (before that, only the every-minute maintenance would)."""
    await wait_until(
        lambda: freshest_heartbeat_age(db_url) > STALLED_AFTER + 0.2,
        timeout=15,
        what="the killed worker's heartbeat to go stale",
        report=workers.report,
    )


def assert_no_job_left_behind(db_url: str, workers: Workers) -> None:
    left = query(
        db_url,
        "SELECT id, status::text FROM procrastinate_jobs WHERE task_name = 'hookline:process_event' "
        "AND status <> 'succeeded'",
    )
    assert left == [], f"process_event jobs not succeeded: {left}\n{workers.report()}"


# ------------------------------------------------------------------------------------------ 1. SIGKILL
async def test_sigkill_during_the_model_call_does_everything_exactly_once(
    chaos_db: str,
    tmp_path: Path,
    workers: Workers,
    fake: FakeMessagesAPI,
    web_env: None,
    request: pytest.FixtureRequest,
) -> None:
    """Worker A is SIGKILLed inside a slow model call (nothing stored yet). Worker B, started once A's
    heartbeat is stale, hands the job back and runs it: one answer stored, each action once, the
    receiver hit once, the job succeeded (not left in ``doing``)."""
    config = write_config(tmp_path)
    fake.enqueue(slow(30, then=reply(ANSWER)), reply(ANSWER))  # the 30 s sleep ends when the fake stops
    with slow_receiver() as receiver, explained(request, workers):
        env = worker_env(chaos_db, config, fake_url=fake.base_url, receiver_url=receiver.url)
        a = workers.spawn("A", env)
        event_id = (await send(chaos_db, config, stripe_event("evt_kill_llm")))["event_id"]
        await workers.ready(a)
        await wait_calls(fake, 1, workers)  # worker A is inside the (slow) model call
        a.kill()
        killed_at = time.monotonic()
        assert [s for _, s, _ in process_jobs(chaos_db)] == ["doing"]  # what a dead worker leaves behind
        await wait_stalled(chaos_db, workers)

        await workers.start("B", env)
        assert await wait_terminal(chaos_db, event_id, workers) == "succeeded"
        print(
            f"\nSIGKILL mid model call: event succeeded {time.monotonic() - killed_at:.1f}s after the kill "
            f"(of which {STALLED_AFTER}s+ waiting for the heartbeat to go stale)"
        )

        assert one(chaos_db, "SELECT attempts FROM hookline.events WHERE id = %s", event_id) == 2
        calls = fake.calls_to(MESSAGES)
        assert [c.status for c in calls] == [None, 200], "one call cut off by the kill, one answered"
        assert query(chaos_db, "SELECT status, output FROM hookline.llm_calls WHERE event_id = %s", event_id) == [
            ("succeeded", ANSWER)
        ]
        assert actions_of(chaos_db, event_id) == [("http#0", "succeeded", 1), ("log#1", "succeeded", 1)]
        (got,) = receiver.received
        assert json.loads(got.body)["output"] == ANSWER
        # one job: handed back once by B's start-up recovery (attempts 1), then succeeded (attempts 2)
        assert [(s, n) for _, s, n in process_jobs(chaos_db)] == [("succeeded", 2)]
        assert_no_job_left_behind(chaos_db, workers)


async def test_sigkill_during_the_http_action_reuses_the_answer_and_redelivers_with_the_same_key(
    chaos_db: str,
    tmp_path: Path,
    workers: Workers,
    fake: FakeMessagesAPI,
    web_env: None,
    request: pytest.FixtureRequest,
) -> None:
    """The worker dies after the receiver got the POST, before it answered. Observed: the receiver
    gets the POST again from the next worker (at-least-once): the same envelope as JSON (not byte for
    byte: the stored answer's keys come back in jsonb order), the same Idempotency-Key and webhook-id,
    validly signed; so a receiver that dedupes on the key acts once.
    The model answer was stored before the action, so it is reused: one model call in all."""
    config = write_config(tmp_path)
    fake.enqueue(reply(ANSWER))
    with slow_receiver(delays=[60.0]) as receiver, explained(request, workers):
        env = worker_env(chaos_db, config, fake_url=fake.base_url, receiver_url=receiver.url)
        a = workers.spawn("A", env)
        event_id = (await send(chaos_db, config, stripe_event("evt_kill_http")))["event_id"]
        await workers.ready(a)
        await asyncio.to_thread(receiver.wait_for, 1, 20)  # A's POST arrived; the receiver holds its answer
        assert calls_of(chaos_db, event_id) == ["succeeded"], "the answer is stored before any action runs"
        assert actions_of(chaos_db, event_id) == [("http#0", "running", 1)]
        a.kill()
        killed_at = time.monotonic()
        await wait_stalled(chaos_db, workers)

        await workers.start("B", env)
        assert await wait_terminal(chaos_db, event_id, workers) == "succeeded"
        print(f"\nSIGKILL mid http action: event succeeded {time.monotonic() - killed_at:.1f}s after the kill")

        assert len(fake.calls_to(MESSAGES)) == 1, "the stored answer was reused, the model not called again"
        assert calls_of(chaos_db, event_id) == ["succeeded"]
        first, second = receiver.received  # exactly two deliveries: the interrupted one and the repeat
        for d in (first, second):
            verify("standard_webhooks", secrets=[OUT_SECRET], headers=d.headers, body=d.body)
            assert json.loads(d.body)["output"] == ANSWER
        assert (
            first.headers["idempotency-key"]
            == second.headers["idempotency-key"]
            == first.headers["webhook-id"]
            == second.headers["webhook-id"]
            == f"hookline-{event_id}-recovery-http#0"
        )
        # Same envelope, but not byte for byte: the repeat carries the answer as stored (jsonb orders
        # object keys its own way), the first one the answer as parsed from the API response.
        assert json.loads(first.body) == json.loads(second.body)
        assert actions_of(chaos_db, event_id) == [("http#0", "succeeded", 2), ("log#1", "succeeded", 1)]
        assert [(s, n) for _, s, n in process_jobs(chaos_db)] == [("succeeded", 2)]
        assert_no_job_left_behind(chaos_db, workers)


# ------------------------------------------------------------------------------------------ 2. Postgres restart
def _listening(db_url: str, dbname: str) -> bool:
    """Some session of this database is LISTENing (only the worker's listener runs LISTEN)."""
    got = query(db_url, "SELECT count(*) FROM pg_stat_activity WHERE datname = %s AND query ILIKE 'LISTEN %%'", dbname)
    return bool(got[0][0])


async def _pickup_latency(
    db_url: str, tag: str, workers: Workers, fake: FakeMessagesAPI, timeout: float = 40.0
) -> float:
    """INSERT an event directly (as a watched table or psql would) and time commit → started_at,
    both on the database clock. Returns once the probe is finished and the worker idle again: a
    NOTIFY that arrives while procrastinate 3.10 is inside a fetch is lost (its worker loop clears
    the wake-up flag after every fetch), so a probe sent mid-fetch would measure the poll interval."""
    body = stripe_event(tag, email=f"{tag}@example.com")
    fake.enqueue_for(f"{tag}@example.com", reply(ANSWER))  # no 0.4 s wait for the probes
    with psycopg.connect(db_url, autocommit=True) as conn:
        row = conn.execute(
            "INSERT INTO hookline.events (source, delivery_id, event_type, body, payload) "
            "VALUES ('stripe', %s, 'invoice.payment_failed', %s, %s::jsonb) RETURNING id, clock_timestamp()",
            (tag, body, body.decode()),
        ).fetchone()
    assert row is not None
    event_id, inserted = row
    started = await wait_until(
        lambda: query(db_url, "SELECT started_at FROM hookline.events WHERE id = %s", event_id)[0][0],
        timeout=timeout,
        what=f"probe {tag} to be picked up",
        report=workers.report,
        interval=0.01,
    )
    await wait_terminal(db_url, event_id, workers, timeout=20)
    await asyncio.sleep(0.2)
    return float((started - inserted).total_seconds())


def _events_by_state(db_url: str) -> tuple[list[tuple[Any, ...]], list[tuple[Any, ...]]]:
    """(in progress, stranded): events not succeeded whose job may still run them, and those whose
    job ended ``failed`` (nothing will ever run them again). Rows: event id, status, job id."""
    rows = query(
        db_url,
        "SELECT e.id, e.status, j.id, j.status::text FROM hookline.events e "
        "LEFT JOIN procrastinate_jobs j ON (j.args->>'event_id')::bigint = e.id "
        "WHERE e.status <> 'succeeded' ORDER BY e.id",
    )
    live = [r[:3] for r in rows if r[3] != "failed"]
    stranded = [r[:3] for r in rows if r[3] == "failed"]
    return live, stranded


def _job_error(log: str, job_id: int) -> str:
    """The exception line procrastinate logged for a job that ended with an error."""
    marker = f"[{job_id}](event_id="
    lines = log.splitlines()
    for i, line in enumerate(lines):
        if marker in line and "ended with status: Error" in line:
            for follow in lines[i + 1 :]:
                if follow[:4].isdigit():  # the next log line: the traceback is over
                    break
                if follow and not follow.startswith((" ", "\t", "Traceback")):
                    return follow.split(" action=")[0]
    return "(no error logged)"


async def test_postgres_restart_under_a_stream_of_requests_loses_nothing(
    tmp_path: Path, workers: Workers, fake: FakeMessagesAPI, web_env: None, request: pytest.FixtureRequest
) -> None:
    """Senders keep delivering (8/s for 8 s) while Postgres is stopped (fast) and started again.
    Every request is answered 200 or 503 + Retry-After; every acknowledged delivery is stored once
    and processed; the worker never exits, its NOTIFY wake-up comes back; latencies are recorded
    in bench-results/restart-latency.json."""
    if os.environ.get("DATABASE_URL"):
        pytest.skip("DATABASE_URL points at an external server, which this test cannot restart")
    config = write_config(tmp_path)
    rate, duration, restart_at, down_for = 8.0, 8.0, 2.0, 1.5
    deliveries = [
        Delivery(f"evt_stream_{i:03d}", stripe_event(f"evt_stream_{i:03d}")) for i in range(int(rate * duration))
    ]
    marks: dict[str, float] = {}
    pg = RestartablePostgres(ROOT / ".hookline" / "chaos-pg")
    dbname = session_db("restart")
    admin = pg.url("postgres")
    try:
        with psycopg.connect(admin, autocommit=True) as c:
            drop_orphans(c, "restart")
            c.execute(f'DROP DATABASE IF EXISTS "{dbname}" WITH (FORCE)')
            c.execute(f'CREATE DATABASE "{dbname}"')
        db_url = pg.url(dbname)
        migrations.migrate(db_url)
        with explained(request, workers), slow_receiver() as receiver:
            # Every model call takes 0.4 s, so at 8 requests/s a few jobs are always mid-call when
            # Postgres stops. A 30 s poll interval: only NOTIFY can explain a pickup in under 3 s.
            fake.set_default(slow(0.4, then=reply(ANSWER)))
            w = await workers.start(
                "W",
                worker_env(
                    db_url,
                    config,
                    fake_url=fake.base_url,
                    receiver_url=receiver.url,
                    poll=30.0,
                    shutdown=2.0,
                    HOOKLINE_WORKER_CONCURRENCY="10",
                ),
            )
            await wait_until(
                lambda: _listening(db_url, dbname), timeout=10, what="the worker's LISTEN", report=workers.report
            )
            before = [await _pickup_latency(db_url, f"probe_before_{i}", workers, fake) for i in range(3)]

            def restart() -> None:
                marks["stop"] = time.monotonic()
                pg.stop("fast")
                time.sleep(down_for)
                pg.start()
                marks["started"] = time.monotonic()

            async def watch_listen() -> None:
                await wait_until(
                    lambda: _listening(db_url, dbname),
                    timeout=30,
                    what="the worker to LISTEN again after the restart",
                    report=workers.report,
                )
                marks["listening"] = time.monotonic()

            async with web(db_url, config, retry_after_seconds=1, db_timeout=2.0) as url, httpx.AsyncClient() as client:
                with unhandled_web_errors() as web_errors:
                    t0 = time.monotonic()
                    senders: list[asyncio.Task[None]] = []
                    restarter: asyncio.Future[None] | None = None
                    for i, d in enumerate(deliveries):
                        if restarter is None and time.monotonic() - t0 >= restart_at:
                            restarter = asyncio.ensure_future(asyncio.to_thread(restart))
                        senders.append(asyncio.create_task(deliver(client, url, d, give_up_after=30.0)))
                        await asyncio.sleep(max(0.0, t0 + (i + 1) / rate - time.monotonic()))
                    assert restarter is not None
                    await restarter
                    listen_watch = asyncio.create_task(watch_listen())
                    await asyncio.gather(*senders)

            got_503 = sum(1 for d in deliveries if 503 in d.statuses)
            assert got_503 > 0, "no sender noticed the restart; the test proved nothing"
            problems = {d.delivery_id: d.problems for d in deliveries if d.problems}
            assert problems == {}, (
                f"every request gets 200 or 503 + Retry-After: {problems}\nunhandled in the web app: {web_errors!r}"
            )

            # reconcile: every acknowledged delivery is stored, once, and processed
            acked = {d.delivery_id: d.event_id for d in deliveries}
            stored = dict(
                query(db_url, "SELECT delivery_id, id FROM hookline.events WHERE delivery_id LIKE 'evt_stream_%%'")
            )
            assert stored == acked, "acknowledged deliveries missing from (or different in) hookline.events"
            await wait_until(
                lambda: not _events_by_state(db_url)[0],
                timeout=60,
                what="every event to finish",
                report=lambda: f"{_events_by_state(db_url)}\n{workers.report()}",
                interval=0.2,
            )
            marks["all_done"] = time.monotonic()
            await listen_watch

            # the wake-up is back: with a 30 s poll interval only NOTIFY explains a pickup under 3 s
            after = [await _pickup_latency(db_url, f"probe_after_{i}", workers, fake) for i in range(3)]
            assert max(after) < 3.0, (
                f"pickup after the restart took {max(after):.2f}s with a 30s poll interval: "
                f"the NOTIFY wake-up is not back\n{workers.report()}"
            )
            await wait_until(
                lambda: not _events_by_state(db_url)[0],
                timeout=20,
                what="the probes to finish",
                report=lambda: f"{_events_by_state(db_url)}\n{workers.report()}",
                interval=0.2,
            )

            stranded = _events_by_state(db_url)[1]
            errors = {event_id: _job_error(w.output(), job_id) for event_id, _, job_id in stranded}
            assert errors == {}, f"stranded events: {errors}"
            done = query(db_url, "SELECT id FROM hookline.events WHERE status = 'succeeded'")
            answers = query(
                db_url,
                "SELECT e.id, count(c.id) FROM hookline.events e LEFT JOIN hookline.llm_calls c "
                "ON c.event_id = e.id AND c.status = 'succeeded' WHERE e.status = 'succeeded' "
                "GROUP BY e.id HAVING count(c.id) <> 1",
            )
            assert answers == [], f"succeeded events without exactly one stored answer: {answers}"
            keys = [r.headers["idempotency-key"] for r in receiver.received]
            expected = {f"hookline-{e}-recovery-http#0" for (e,) in done}
            assert set(keys) == expected, "every succeeded event's http action was delivered, and only those"
            per_event = query(
                db_url,
                "SELECT e.id, count(j.id) FROM hookline.events e LEFT JOIN procrastinate_jobs j "
                "ON (j.args->>'event_id')::bigint = e.id GROUP BY e.id HAVING count(j.id) <> 1",
            )
            assert per_event == [], f"events without exactly one job: {per_event}"
            left = query(db_url, "SELECT id, status::text FROM procrastinate_jobs WHERE status IN ('todo', 'doing')")
            assert left == [], f"jobs left behind: {left}"

            assert w.proc.poll() is None, "the worker exited on a database outage"
            assert "restarting" in w.output(), "the worker loop was expected to restart after the outage"
            results = {
                "pickup_latency_before_restart_s": [round(x, 4) for x in before],
                "pickup_latency_after_restart_s": [round(x, 4) for x in after],
                "postgres_down_s": round(marks["started"] - marks["stop"], 2),
                "worker_listening_again_after_postgres_up_s": round(marks["listening"] - marks["started"], 2),
                "all_events_finished_after_postgres_up_s": round(marks["all_done"] - marks["started"], 2),
                "deliveries": len(deliveries),
                "deliveries_answered_503_at_least_once": got_503,
                "http_500_answers": sum(d.statuses.count(500) for d in deliveries),
                "sender_attempts": sum(len(d.statuses) for d in deliveries),
                "events": len(done) + len(stranded),
                "events_stranded": len(stranded),
                "model_calls": len(fake.calls_to(MESSAGES)),
                "http_action_deliveries": len(keys),
                "worker_poll_interval_s": 30.0,
                "worker_shutdown_timeout_s": 2.0,
            }
    finally:
        workers.stop_all()
        with contextlib.suppress(psycopg.Error), psycopg.connect(admin, autocommit=True) as c:
            c.execute(f'DROP DATABASE IF EXISTS "{dbname}" WITH (FORCE)')
        pg.close()

    print("\nPostgres restart under load:", json.dumps(results, indent=2))
    out = ROOT / "bench-results"
    out.mkdir(exist_ok=True)
    (out / "restart-latency.json").write_text(json.dumps(results, indent=2) + "\n")


# ------------------------------------------------------------------------------------------ 3. SIGTERM
async def test_sigterm_finishes_the_running_job_and_takes_no_new_one(
    chaos_db: str,
    tmp_path: Path,
    workers: Workers,
    fake: FakeMessagesAPI,
    web_env: None,
    request: pytest.FixtureRequest,
) -> None:
    """A PaaS deploy: SIGTERM while a 2 s model call runs, HOOKLINE_SHUTDOWN_TIMEOUT=60. The worker
    finishes that job, exits 0 as soon as it is done (well before the timeout), unregisters, and takes
    nothing new: an event sent after the signal waits (queued) for the next worker."""
    config = write_config(tmp_path)
    fake.enqueue(slow(2, then=reply(ANSWER)))
    with slow_receiver() as receiver, explained(request, workers):
        env = worker_env(chaos_db, config, fake_url=fake.base_url, receiver_url=receiver.url, shutdown=60.0)
        a = workers.spawn("A", env)
        async with web(chaos_db, config) as url, httpx.AsyncClient() as client:
            first = (await post_event(client, url, stripe_event("evt_term_1")))["event_id"]
            await workers.ready(a)
            await wait_calls(fake, 1, workers)
            a.proc.send_signal(signal.SIGTERM)
            signalled = time.monotonic()
            await wait_for_log(a, "shutdown requested", timeout=5, report=workers.report)
            second = (await post_event(client, url, stripe_event("evt_term_2")))["event_id"]
            code = await asyncio.to_thread(a.proc.wait, 70)
        exited_in = time.monotonic() - signalled
        print(f"\nSIGTERM with a 2s model call in flight: exit code {code} after {exited_in:.1f}s")
        assert code == 0, workers.report()
        assert exited_in < 45, "the worker waited for the shutdown timeout, not for its job\n" + workers.report()
        assert event_status(chaos_db, first) == "succeeded", event_and_jobs(chaos_db, first)
        assert len(receiver.received) == 1 and len(fake.calls_to(MESSAGES)) == 1
        assert event_status(chaos_db, second) == "queued", "a stopping worker took a new job"
        assert [s for _, s, _ in process_jobs(chaos_db)] == ["succeeded", "todo"]
        assert one(chaos_db, "SELECT count(*) FROM procrastinate_workers") == 0, "the worker unregistered"

        b = await workers.start("B", {**env, "HOOKLINE_WORKER_LOOP": "asyncio"})
        assert await wait_terminal(chaos_db, second, workers) == "succeeded"
        assert len(fake.calls_to(MESSAGES)) == 2 and len(receiver.received) == 2
        assert_no_job_left_behind(chaos_db, workers)
        # A ran on uvloop (the default) and B on the standard loop: both take SIGTERM and jobs alike
        assert "concurrency 4, uvloop loop," in a.output() and "concurrency 4, asyncio loop," in b.output()


async def test_sigterm_past_the_shutdown_timeout_hands_the_job_back(
    chaos_db: str,
    tmp_path: Path,
    workers: Workers,
    fake: FakeMessagesAPI,
    web_env: None,
    request: pytest.FixtureRequest,
) -> None:
    """SIGTERM while a 20 s model call runs, HOOKLINE_SHUTDOWN_TIMEOUT=1: the worker exits within
    seconds, the job is back in ``todo`` and the event ``retrying``; a fresh worker completes it once."""
    config = write_config(tmp_path)
    fake.enqueue(slow(20, then=reply(ANSWER)), reply(ANSWER))
    with slow_receiver() as receiver, explained(request, workers):
        env = worker_env(chaos_db, config, fake_url=fake.base_url, receiver_url=receiver.url, shutdown=1.0)
        a = workers.spawn("A", env)
        event_id = (await send(chaos_db, config, stripe_event("evt_term_slow")))["event_id"]
        await workers.ready(a)
        await wait_calls(fake, 1, workers)
        a.proc.send_signal(signal.SIGTERM)
        signalled = time.monotonic()
        code = await asyncio.to_thread(a.proc.wait, 20)
        exited_in = time.monotonic() - signalled
        print(
            f"\nSIGTERM with a 20s model call in flight, 1s shutdown timeout: exit code {code} after {exited_in:.1f}s"
        )
        assert code == 0, workers.report()
        assert exited_in < 15, "the worker waited for the 20 s call past its 1 s timeout\n" + workers.report()
        assert [s for _, s, _ in process_jobs(chaos_db)] == ["todo"], "the job is handed back to the queue"
        ((status, error),) = query(chaos_db, "SELECT status, last_error FROM hookline.events WHERE id = %s", event_id)
        assert status == "retrying" and "interrupted" in error, (status, error)
        # the call was sent: it is recorded, failed, with why (a shutdown; not a breaker failure), no answer
        assert calls_of(chaos_db, event_id) == ["failed"] and receiver.received == []
        ((call_error,),) = query(chaos_db, "SELECT error FROM hookline.llm_calls WHERE event_id = %s", event_id)
        assert "interrupted" in call_error, call_error

        await workers.start("B", env)
        assert await wait_terminal(chaos_db, event_id, workers) == "succeeded"
        assert calls_of(chaos_db, event_id) == ["failed", "succeeded"]
        assert len(fake.calls_to(MESSAGES)) == 2  # the abandoned one and the one that counted
        assert len(receiver.received) == 1
        assert actions_of(chaos_db, event_id) == [("http#0", "succeeded", 1), ("log#1", "succeeded", 1)]
        assert_no_job_left_behind(chaos_db, workers)


# ------------------------------------------------------------------------------------------ 4. duplicates
async def test_duplicate_delivery_while_the_first_is_processing(
    chaos_db: str,
    tmp_path: Path,
    workers: Workers,
    fake: FakeMessagesAPI,
    web_env: None,
    request: pytest.FixtureRequest,
) -> None:
    """The sender retries (same delivery id) while the first delivery's model call is still running:
    ``200 duplicate`` with the same event_id, and still one row, one job, one model call, one action."""
    config = write_config(tmp_path)
    fake.enqueue(slow(4, then=reply(ANSWER)))
    body = stripe_event("evt_dup_inflight")
    with slow_receiver() as receiver, explained(request, workers):
        a = workers.spawn("A", worker_env(chaos_db, config, fake_url=fake.base_url, receiver_url=receiver.url))
        async with web(chaos_db, config) as url, httpx.AsyncClient() as client:
            first = await post_event(client, url, body)
            assert first["status"] == "accepted"
            await workers.ready(a)
            await wait_calls(fake, 1, workers)
            assert event_status(chaos_db, first["event_id"]) == "processing"
            again = await post_event(client, url, body)
            assert again == {"status": "duplicate", "event_id": first["event_id"]}
            assert event_status(chaos_db, first["event_id"]) == "processing", "the duplicate came too late"
            assert await wait_terminal(chaos_db, first["event_id"], workers) == "succeeded"
            late = await post_event(client, url, body)
            assert late == {"status": "duplicate", "event_id": first["event_id"]}
        await asyncio.sleep(0.5)  # room for a wrongly created second job to run
        assert query(chaos_db, "SELECT count(*) FROM hookline.events") == [(1,)]
        assert len(process_jobs(chaos_db)) == 1
        assert len(fake.calls_to(MESSAGES)) == 1
        assert len(receiver.received) == 1
        assert one(chaos_db, "SELECT attempts FROM hookline.events") == 1


# ------------------------------------------------------------------------------------------ 5. rolling deploy
async def test_a_worker_starting_during_a_long_job_does_not_take_it_over(
    chaos_db: str,
    tmp_path: Path,
    workers: Workers,
    fake: FakeMessagesAPI,
    web_env: None,
    request: pytest.FixtureRequest,
) -> None:
    """Rolling deploy / scale-up: a new worker starts while an old one is inside a long http action.
    Only a worker whose heartbeat stopped may lose its jobs (HOOKLINE_STALLED_AFTER=2 here, so the
    heartbeat must come more often than procrastinate's default 10 s)."""
    config = write_config(tmp_path)
    fake.enqueue(reply(ANSWER))
    with slow_receiver(delays=[60.0]) as receiver, explained(request, workers):
        env = worker_env(chaos_db, config, fake_url=fake.base_url, receiver_url=receiver.url)
        a = workers.spawn("A", env)
        event_id = (await send(chaos_db, config, stripe_event("evt_rolling")))["event_id"]
        await workers.ready(a)
        a_ready = time.monotonic()
        await asyncio.to_thread(receiver.wait_for, 1, 20)  # A's action is in flight; the receiver holds it
        # B starts more than HOOKLINE_STALLED_AFTER after A registered: only A's heartbeats keep the job A's
        await asyncio.sleep(max(0.0, a_ready + STALLED_AFTER + 0.5 - time.monotonic()))
        await workers.start("B", env)
        await asyncio.sleep(1.0)  # B's start-up recovery and its first maintenance run are done
        assert event_status(chaos_db, event_id) == "processing", event_and_jobs(chaos_db, event_id)
        assert "stalled" not in workers.report(), "a live worker's job was handed to another worker"
        receiver.release()
        assert await wait_terminal(chaos_db, event_id, workers) == "succeeded"
        await asyncio.sleep(0.5)  # room for a stolen copy to finish too
        assert len(fake.calls_to(MESSAGES)) == 1, "the job ran twice"
        assert len(receiver.received) == 1, "the job ran twice"
        assert one(chaos_db, "SELECT attempts FROM hookline.events WHERE id = %s", event_id) == 1
        assert [(s, n) for _, s, n in process_jobs(chaos_db)] == [("succeeded", 1)]


# ------------------------------------------------------------------------------------------ 6. killed backend
async def test_a_database_connection_killed_mid_statement_does_not_strand_the_event(
    chaos_db: str,
    tmp_path: Path,
    workers: Workers,
    fake: FakeMessagesAPI,
    web_env: None,
    request: pytest.FixtureRequest,
) -> None:
    """The worker's connection dies in the middle of its last statement (Postgres restart, failover,
    pg_terminate_backend, a network cut). A row lock held by the test parks the worker's final
    ``hookline.finish_event(… 'succeeded' …)`` so that the kill lands exactly there. The event must
    still finish: the job retried, the stored answer reused, the done actions skipped."""
    config = write_config(tmp_path)
    fake.enqueue(reply(ANSWER))
    with slow_receiver(delays=[60.0]) as receiver, explained(request, workers):
        env = worker_env(chaos_db, config, fake_url=fake.base_url, receiver_url=receiver.url)
        a = workers.spawn("A", env)
        event_id = (await send(chaos_db, config, stripe_event("evt_backend_kill")))["event_id"]
        await workers.ready(a)
        await asyncio.to_thread(receiver.wait_for, 1, 20)
        with psycopg.connect(chaos_db) as locker:
            # NO KEY UPDATE: blocks the worker's UPDATE of the row, not its action_runs inserts (FK checks)
            locker.execute("SELECT 1 FROM hookline.events WHERE id = %s FOR NO KEY UPDATE", (event_id,))
            receiver.release()
            ((pid,),) = await wait_until(
                lambda: query(
                    chaos_db,
                    "SELECT pid FROM pg_stat_activity WHERE datname = current_database() "
                    "AND wait_event_type = 'Lock' AND query ILIKE '%%hookline.finish_event%%'",
                ),
                timeout=15,
                what="the worker's final UPDATE to wait on the row lock",
                report=workers.report,
            )
            assert query(chaos_db, "SELECT pg_terminate_backend(%s)", pid) == [(True,)]
            locker.rollback()
        assert await wait_terminal(chaos_db, event_id, workers, timeout=30) == "succeeded"
        assert len(fake.calls_to(MESSAGES)) == 1
        assert len(receiver.received) == 1
        assert actions_of(chaos_db, event_id) == [("http#0", "succeeded", 1), ("log#1", "succeeded", 1)]
        assert_no_job_left_behind(chaos_db, workers)
