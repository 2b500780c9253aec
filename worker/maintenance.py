"""Periodic upkeep every worker registers: stalled-job recovery, the fold of the event counts' overflow
slots, and retention.

procrastinate records heartbeats but never retries the jobs of a dead worker by itself; this task
finds them and hands them back. It runs once at worker start too, so a worker restarted after a crash
recovers its predecessor's jobs at once. Registering a periodic task also keeps procrastinate's
side-task monitor alive, so a lost LISTEN connection stops the worker loop (and the supervisor in
worker.main restarts it) instead of silently degrading to polling.
"""

from __future__ import annotations

import logging

import procrastinate
import psycopg
from procrastinate import JobContext

from app.core.jobs import MAINTENANCE, MAINTENANCE_SHORT, QUEUE
from worker.db import WorkerDB
from worker.tasks import runtime_of

log = logging.getLogger("hookline.maintenance")

#: Overflow count slots one fold statement moves (hookline.fold_count_slots, migration 0054): one
#: short transaction on two small tables.
FOLD_BATCH = 1000
#: Most fold statements in one run; what is left waits for the next minute (the counts are exact
#: either way: a fold only makes them cheaper to read).
FOLD_MAX_BATCHES = 100


async def recover_stalled(app: procrastinate.App, stalled_after: float) -> int:
    """Hand back ``doing`` jobs whose worker stopped heart-beating; returns how many."""
    manager = app.job_manager
    await manager.prune_stalled_workers(stalled_after)
    jobs = list(await manager.get_stalled_jobs(seconds_since_heartbeat=stalled_after))
    for job in jobs:
        log.warning("job %s (%s %s) stalled: its worker stopped; retrying it", job.id, job.task_name, job.task_kwargs)
        await manager.retry_job(job)
    return len(jobs)


async def fold_counts(db: WorkerDB, batch: int = FOLD_BATCH) -> int:
    """Fold the committed overflow slots of the event counts into their slot 16, ``batch`` slots per
    statement, until none is left (or :data:`FOLD_MAX_BATCHES` statements ran); returns how many.
    A transaction that writes hookline.events in more than 32 statements (a bulk UPDATE of a watched
    table) leaves one such slot per further 32 (hookline.count_slot, migration 0054)."""
    folded = 0
    for _ in range(FOLD_MAX_BATCHES):
        n = int((await db.rows("fold_count_slots", batch=batch))[0]["folded"])
        folded += n
        if n == 0 or db.stopping.is_set():
            break
    return folded


async def fold_counts_quietly(db: WorkerDB) -> int:
    """:func:`fold_counts`, a failure logged (class and SQLSTATE) and left to the next minute: the fold
    only makes the counts cheaper to read, and a fold that keeps failing (a lock or statement timeout, a
    grant missing) must not stop the retention that runs after it."""
    try:
        return await fold_counts(db)
    except psycopg.Error as e:
        log.warning(
            "folding the count slots failed (%s, SQLSTATE %s); the next minute tries again",
            type(e).__name__,
            e.sqlstate,
        )
        return 0


async def maintenance(context: JobContext, timestamp: int) -> dict[str, int]:
    rt = runtime_of(context)
    recovered = await recover_stalled(context.app, rt.settings.stalled_after)
    folded = await fold_counts_quietly(rt.db)
    pruned = await rt.retention()
    return {"recovered": recovered, "count_slots_folded": folded, **pruned}


def register(bp: procrastinate.Blueprint) -> None:
    """Add the maintenance task, with a queueing lock (never a lock, see procrastinate#1408); it runs
    every minute once :func:`add_periodic` made it periodic."""
    bp.task(name=MAINTENANCE_SHORT, queue=QUEUE, pass_context=True, queueing_lock=MAINTENANCE)(maintenance)


def add_periodic(app: procrastinate.App) -> None:
    """Run the maintenance task every minute: registered on the app, after its tasks were added, under
    its namespaced name. Registered on the blueprint (``bp.periodic``), it was registered, and logged,
    twice: by the blueprint as ``maintenance``, then by ``add_tasks_from`` as ``hookline:maintenance``."""
    app.periodic_registry.register_task(
        task=app.tasks[MAINTENANCE], cron="* * * * *", periodic_id="maintenance", configure_kwargs={}
    )
