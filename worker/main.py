"""``hookline worker``: a supervised procrastinate worker that survives database outages.

procrastinate alone, after a Postgres restart, either keeps running without its LISTEN connection
(silently polling) or, with a periodic task registered, returns from ``run_worker_async`` as if asked
to stop. hookline registers a periodic task (so a failed listener ends the loop) and runs the worker
under this supervisor: any end that is not a requested shutdown waits for the database and starts
a fresh worker, with a fresh LISTEN. SIGTERM/SIGINT stop it gracefully: no new jobs, running jobs
get ``HOOKLINE_SHUTDOWN_TIMEOUT`` seconds, then are handed back to the queue.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import logging
import signal
import sys
import time
from collections.abc import Callable, Coroutine
from typing import Any

import procrastinate
from pydantic import ValidationError

from app.core import migrations
from app.core.config import Config, load_config
from app.core.db import libpq_dsn
from app.core.errors import ConfigError
from app.core.heap import freeze_startup_heap
from app.core.jobs import NAMESPACE, QUEUE, SYNC_QUEUE
from app.core.logs import setup_logging
from app.core.settings import Settings, settings_problems
from worker import batches, maintenance, schedules, tasks
from worker.actions import sql as sql_action
from worker.db import queue_pool
from worker.handover import Handover, QueueConnector
from worker.metrics import serve_metrics
from worker.pricing import unpriced_models
from worker.runtime import Runtime, db_pool_size
from worker.startup import wait_for_database, wait_for_schema

log = logging.getLogger("hookline.worker")


def build_app(
    dsn: str,
    *,
    pool_size: int,
    config: Config | None = None,
    batch_poll_seconds: int | None = None,
    handover: Handover | None = None,
) -> procrastinate.App:
    """procrastinate's app for the worker. With ``handover`` (the runtime's), a job whose event's last
    write finished it is not finished again by procrastinate (worker.handover)."""
    connector = QueueConnector(
        handover=handover,
        conninfo=libpq_dsn(dsn),
        min_size=1,
        max_size=pool_size,
        kwargs={"application_name": "hookline-worker-queue"},
        pool_factory=queue_pool,
    )
    app = procrastinate.App(connector=connector)
    bp = procrastinate.Blueprint()
    tasks.register(bp)
    maintenance.register(bp)
    schedules.register(bp)
    if batch_poll_seconds is not None:
        batches.register(bp, batch_poll_seconds)
    app.add_tasks_from(bp, namespace=NAMESPACE)
    maintenance.add_periodic(app)
    if config is not None:
        schedules.add_periodic(app, config)
    return app


async def sql_action_problems(rt: Runtime) -> list[str]:
    """``type = "sql"`` functions checked against pg_proc (exists, right arguments, callable)."""
    async with rt.db.pool.connection() as conn:
        return await sql_action.problems(conn, rt.config)


def heartbeat_interval(stalled_after: float) -> float:
    """How often a worker proves it is alive: well inside ``stalled_after``, so that another worker
    (or this one's own maintenance task) never takes a live worker's jobs for stalled ones.
    procrastinate's fixed 10 s default is not, for a ``stalled_after`` near or below 10 s."""
    return max(0.1, min(10.0, stalled_after / 4))


async def _recover_later(app: procrastinate.App, stalled_after: float) -> None:
    """A worker that died just before this one started still looked alive at start (its heartbeat
    was fresh): once that heartbeat is stale, hand its jobs back instead of waiting for the next
    maintenance tick."""
    await asyncio.sleep(stalled_after + 1)
    try:
        recovered = await maintenance.recover_stalled(app, stalled_after)
    except Exception as e:
        log.warning("stalled-job recovery failed (%s); the maintenance task will retry", e.__class__.__name__)
        return
    if recovered:
        log.info("recovered %d stalled job(s) of a worker that died around this one's start", recovered)


async def polls_batches(rt: Runtime) -> bool:
    """Whether this worker runs the Message Batches poller (``batch_poll``): a pipeline of its config is
    ``mode = "batch_api"``, or requests are still open from one that was (a deploy switched it to
    another mode, or removed it). Their answers are then still collected (spend counted, reservations
    settled, the events answered by them), and their requests not in a batch yet given back."""
    if any(p.mode == "batch_api" for p in rt.config.pipelines.values()):
        return True
    return bool(await rt.db.rows("open_batch_pipelines"))


#: After its start, a worker wakes the throttled events again every ``REWAKE_EVERY`` seconds, for its
#: first ``REWAKE_FOR`` seconds (see :func:`rewake_throttled`).
REWAKE_EVERY = 60.0
REWAKE_FOR = 600.0


async def wake_throttled(rt: Runtime) -> bool:
    """At start: the jobs of throttled events run now, not when the hold they were given said (up to
    the next UTC midnight for a day cap). This worker's config may have raised or removed the cap that
    held them; an event still over it is held again by its run, without a model call (an alert goes
    once per window). True once done; False when the database failed (the next start of the worker
    loop tries again; :func:`rewake_throttled` repeats it anyway)."""
    try:
        n = await rt.db.run("wake_throttled")
    except Exception as e:
        log.warning("could not wake the throttled events (%s); they wait for their holds", e.__class__.__name__)
        return False
    if n:
        log.info("woke %d throttled event(s): their limits are checked again against this config", n)
    return True


async def rewake_throttled(rt: Runtime, stop: asyncio.Event) -> None:
    """The start's wake again, every ``REWAKE_EVERY`` seconds for the worker's first ``REWAKE_FOR``.

    In a rolling deploy the workers of the old release still run for a while after a new one starts:
    one of them often takes a job the new worker woke, checks it against the old cap and holds it
    again, until the window reopens (the next UTC midnight for a day cap). Waking again for a while
    after the start lets the last worker to wake decide, which, once the old release is stopped, is
    one with the new config. Per worker, not in the periodic maintenance task: that runs on whichever
    worker takes it, maybe an old one. Bounded: each wake is one UPDATE over the throttled events' jobs
    (about 1.7 s with 50,000 of them), and an event still over a cap runs again, held without a call."""
    for _ in range(int(REWAKE_FOR // REWAKE_EVERY)):
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(stop.wait(), REWAKE_EVERY)
        if stop.is_set():
            return
        await wake_throttled(rt)


class _QuietRetries(logging.Filter):
    """A scheduled retry is logged once by hookline with its reason; drop procrastinate's traceback."""

    def filter(self, record: logging.LogRecord) -> bool:
        if record.exc_info and isinstance(record.exc_info[1], tasks.RetryLater):
            record.exc_info = None
            record.exc_text = None
        return True


async def run_worker(
    settings: Settings,
    config: Config,
    *,
    install_signals: bool = True,
    stop: asyncio.Event | None = None,
    simulate_model: bool = False,
    **llm_kwargs: Any,
) -> None:
    dsn = settings.dsn()
    if dsn is None:
        raise SystemExit("DATABASE_URL is not set")
    stop = stop or asyncio.Event()
    current: asyncio.Task[None] | None = None

    cancelled: set[int] = set()
    rt: Runtime | None = None

    def request_stop() -> None:
        stop.set()
        if rt is not None:
            rt.db.stopping.set()  # a write that waits for the database gives up after its current try
            if rt.stop_requested_at is None:
                rt.stop_requested_at = time.monotonic()
        if current is not None and id(current) not in cancelled:
            log.info("shutdown requested: finishing running jobs (up to %.0fs)", settings.shutdown_timeout)
            cancelled.add(id(current))
            current.cancel()

    if install_signals:
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, request_stop)
    stop_watch = asyncio.create_task(stop.wait())
    stop_watch.add_done_callback(lambda _: request_stop())

    rt = Runtime.build(settings, config, simulate_model=simulate_model, **llm_kwargs)
    pq_app: procrastinate.App | None = None  # built once the database answers (polls_batches asks it)
    checked = woken = False
    rewake: asyncio.Task[None] | None = None
    try:  # whatever ends the worker from here closes what it opened (asyncio.run would wait on the pools)
        if settings.worker_metrics_port is not None:
            serve_metrics(rt.metrics, settings.worker_metrics_port, settings.host)
        await rt.open()
        # a fetch that gets a lone event's job claims the event too, when a slot is free (worker.handover)
        rt.db.handover.claim_with(free=rt.slots.free, pickup=lambda: rt.metrics.serving)
        log.info(
            "hookline worker starting: concurrency %d, %s loop, %s",
            settings.worker_concurrency,
            "uvloop" if type(asyncio.get_running_loop()).__module__.startswith("uvloop") else "asyncio",
            "simulated model (answers made up locally, never priced)"
            if rt.simulated
            else ("dry-run (no ANTHROPIC_API_KEY)" if rt.llm is None else "model calls enabled"),
        )
        for model in [] if rt.simulated else unpriced_models(config):
            log.warning(
                "model %s has no price and a tenant has usd_per_day: its calls are refused (dead letters) until "
                '[models."%s"].prices is set',
                model,
                model,
            )
        expected = migrations.discover()
        while not stop.is_set():
            if not await wait_for_database(dsn, stop) or not await wait_for_schema(dsn, stop, expected):
                break
            if not checked:
                problems = await sql_action_problems(rt)
                for problem in problems:
                    log.error("configuration error: %s", problem)
                if problems:
                    raise SystemExit(2)
                checked = True
            if not woken:
                woken = await wake_throttled(rt)
            if rewake is None:
                rewake = asyncio.create_task(rewake_throttled(rt, stop))
            try:
                if pq_app is None:
                    polls = await polls_batches(rt)
                    pq_app = build_app(
                        dsn,
                        pool_size=db_pool_size(settings.worker_concurrency),
                        config=config,
                        batch_poll_seconds=settings.batch_poll_seconds if polls else None,
                        handover=rt.db.handover,
                    )
                async with pq_app.open_async():
                    recovered = await maintenance.recover_stalled(pq_app, settings.stalled_after)
                    if recovered:
                        log.info("recovered %d stalled job(s) at start", recovered)
                    late = asyncio.create_task(_recover_later(pq_app, settings.stalled_after))
                    current = asyncio.create_task(
                        pq_app.run_worker_async(
                            queues=[SYNC_QUEUE, QUEUE],  # sync first (and priority 1000 in SQL)
                            name="hookline",
                            concurrency=settings.worker_concurrency,
                            fetch_job_polling_interval=settings.worker_poll_interval,
                            abort_job_polling_interval=settings.worker_poll_interval,
                            shutdown_graceful_timeout=settings.shutdown_timeout,
                            stalled_worker_timeout=settings.stalled_after,
                            update_heartbeat_interval=heartbeat_interval(settings.stalled_after),
                            install_signal_handlers=False,
                            additional_context={"runtime": rt},
                            listen_notify=True,
                            delete_jobs="never",
                        )
                    )
                    with contextlib.suppress(asyncio.CancelledError):
                        await current
                    current = None
                    late.cancel()
            except Exception as e:
                log.warning("worker loop failed (%s: %s)", e.__class__.__name__, e)
            if not stop.is_set():
                log.warning("worker loop ended without a shutdown request (database restart?); restarting")
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(stop.wait(), 0.5)
    finally:
        stop_watch.cancel()
        if rewake is not None:
            rewake.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await rewake
        rt.metrics.stop()
        await rt.close()
        log.info("hookline worker stopped")


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m worker", description="hookline worker")
    parser.add_argument(
        "--simulate-model",
        action="store_true",
        help="answer model calls locally from the output schema (what hookline dev --simulate-model runs)",
    )
    args = parser.parse_args(argv)
    try:  # started as python -m worker, refused as `hookline worker` refuses them (app.cli.main): exit 2
        settings = Settings()
        config = load_config(settings.config)
    except (ValidationError, ConfigError) as e:
        lines = settings_problems(e) if isinstance(e, ValidationError) else [f"configuration error\n{e}"]
        print("\n".join(f"hookline worker: {line}" for line in lines), file=sys.stderr)
        raise SystemExit(2) from None
    setup_logging(settings.log_level, settings.log_format, process="worker")
    logging.getLogger("procrastinate.worker").addFilter(_QuietRetries())
    run = loop_runner(settings.worker_loop)
    freeze_startup_heap()  # imports and config: out of the collector's full passes (app.core.heap)
    run(run_worker(settings, config, simulate_model=args.simulate_model))


def loop_runner(choice: str) -> Callable[[Coroutine[Any, Any, None]], None]:
    """How to run the worker's event loop: uvloop unless told ``asyncio`` (uvicorn picks it for the web too).

    uvloop's loop costs less per wake-up and per socket readiness change, which the worker does for every
    statement (psycopg waits with add_reader/remove_reader) and every model call: about 8 % less worker
    CPU per event with the bench's fake model (interleaved runs; README, issue-9 figures).
    """
    if choice != "asyncio":
        try:
            import uvloop
        except ImportError:  # uvicorn[standard] brings it; a trimmed install may not
            if choice == "uvloop":
                raise SystemExit("HOOKLINE_WORKER_LOOP=uvloop, but uvloop is not installed") from None
        else:
            return uvloop.run
    return asyncio.run


if __name__ == "__main__":
    main()
