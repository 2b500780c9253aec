"""What a running worker holds: settings, config, its database pool, the model and HTTP clients."""

from __future__ import annotations

import asyncio
import collections
import logging
import time
from dataclasses import dataclass, field
from typing import Any

import httpx

from app.core.config import Config, Pipeline
from app.core.settings import Settings
from worker.db import WorkerDB
from worker.llm import LLMClient, make_client
from worker.metrics import WorkerMetrics
from worker.outbound import outbound_guard, parse_allowlist
from worker.retention import masked_sources, prune_masked
from worker.simulated import SimulatedModel

log = logging.getLogger("hookline.limits")

#: Most database connections one worker process opens per pool, whatever its concurrency: a job
#: holds a connection only for one short statement, never across the model call, so 200 calls in
#: flight need a handful of connections, not 200.
DB_POOL_CAP = 16


#: Rows one retention statement deletes or prunes: one short transaction (about 30 ms for 1,000
#: jobs, 40 ms for 1,000 payloads, on 1M jobs and 2M events).
RETENTION_BATCH = 1000
#: Seconds one retention run may take before it leaves the rest to the next (the maintenance task
#: runs it every minute): well inside the minute, so runs do not pile up. Measured on 1M jobs and 2M
#: events: 222,000 jobs and 222,000 payloads in one run, far above what one deployment produces.
RETENTION_BUDGET = 20.0


def db_pool_size(concurrency: int) -> int:
    """Connections of each of the worker's two pools (procrastinate's and hookline's)."""
    return min(concurrency + 2, DB_POOL_CAP)


class Slots:
    """The process's concurrency (``HOOKLINE_WORKER_CONCURRENCY``), shared by the jobs procrastinate
    hands over and the ones they claim themselves in a batch claim: never more events at once.
    Waiters are served first come, first served; :meth:`grab` never jumps a waiter."""

    def __init__(self, size: int) -> None:
        self.size = max(1, size)
        self.used = 0
        self._waiters: collections.deque[asyncio.Future[None]] = collections.deque()

    async def acquire(self) -> None:
        if self.used < self.size and not self._waiters:
            self.used += 1
            return
        fut: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._waiters.append(fut)
        try:
            await fut  # release() hands its slot over (``used`` unchanged)
        except asyncio.CancelledError:
            if fut.done() and not fut.cancelled():
                self.release()  # handed over, but this waiter is gone: pass it on
            else:
                self._waiters.remove(fut)
            raise

    def free(self) -> bool:
        """A job could take a slot now without waiting."""
        return self.used < self.size and not self._waiters

    def grab(self, most: int) -> int:
        """Take up to ``most`` free slots without waiting (none while anyone waits for one)."""
        n = 0 if self._waiters else max(0, min(most, self.size - self.used))
        self.used += n
        return n

    def release(self, n: int = 1) -> None:
        for _ in range(n):
            while self._waiters:
                fut = self._waiters.popleft()
                if not fut.done():
                    fut.set_result(None)
                    break
            else:
                self.used -= 1


#: A closing worker gives its alerts at least this long, however long its jobs took to drain.
ALERT_WAIT_FLOOR_S = 0.5


@dataclass
class Runtime:
    settings: Settings
    config: Config
    db: WorkerDB
    http: httpx.AsyncClient
    llm: LLMClient | None
    metrics: WorkerMetrics = field(default_factory=WorkerMetrics)
    slots: Slots = field(default_factory=lambda: Slots(10))
    #: ``[[alerts]]`` on their way (worker.alerts): never sent inside an event's run.
    alerts: set[asyncio.Task[None]] = field(default_factory=set)
    #: when a stop was asked for (``time.monotonic()``): the alerts' wait at close takes what is left of
    #: ``HOOKLINE_SHUTDOWN_TIMEOUT``, not a second one after the running jobs' drain
    stop_requested_at: float | None = None
    _matched: dict[tuple[str, str | None], tuple[Pipeline, ...]] = field(default_factory=dict, repr=False)
    _matched_config: Config | None = field(default=None, repr=False)

    def pipelines_for(self, source: str, event_type: str | None) -> list[Pipeline]:
        """The config's pipelines for an event of this source and type, a sync one first; remembered
        per pair while the config stays the same (at most 4,096 pairs: event types come from senders)."""
        if self._matched_config is not self.config or len(self._matched) >= 4096:
            self._matched, self._matched_config = {}, self.config
        key = (source, event_type)
        found = self._matched.get(key)
        if found is None:
            found = tuple(sorted(self.config.pipelines_for(source, event_type), key=lambda p: not p.sync))
            self._matched[key] = found
        return list(found)

    @property
    def simulated(self) -> bool:
        """Model calls are answered locally (hookline dev --simulate-model)."""
        return isinstance(self.llm, SimulatedModel)

    @classmethod
    def build(cls, settings: Settings, config: Config, *, simulate_model: bool = False, **llm_kwargs: Any) -> Runtime:
        dsn = settings.dsn()
        if dsn is None:
            raise RuntimeError("DATABASE_URL is not set (hookline dev sets it for the processes it starts)")
        key = settings.anthropic_api_key.get_secret_value() if settings.anthropic_api_key else None
        llm: LLMClient | None = None
        if simulate_model:
            llm = SimulatedModel()
        elif key:
            llm = make_client(
                api_key=key,
                base_url=settings.anthropic_base_url,
                timeout=settings.llm_timeout,
                max_retries=settings.llm_max_retries,
                transport=settings.llm_http_client,
                **llm_kwargs,
            )
        return cls(
            settings=settings,
            config=config,
            db=WorkerDB(dsn, min_size=1, max_size=db_pool_size(settings.worker_concurrency)),
            http=httpx.AsyncClient(
                follow_redirects=False,
                event_hooks={"request": [outbound_guard(parse_allowlist(settings.outbound_allowed_hosts))]},
            ),
            llm=llm,
            slots=Slots(settings.worker_concurrency),
        )

    async def open(self) -> None:
        await self.db.open()

    def alert_wait(self) -> float:
        """How long a closing worker waits for its alerts: ``HOOKLINE_SHUTDOWN_TIMEOUT`` less the time since
        the stop was asked for (the running jobs' drain used it), at least half a second."""
        timeout = self.settings.shutdown_timeout
        if self.stop_requested_at is not None:
            timeout -= time.monotonic() - self.stop_requested_at
        return max(ALERT_WAIT_FLOOR_S, timeout)

    async def wait_for_alerts(self, timeout: float | None = None) -> None:
        """Wait for the alerts on their way; those not done within ``timeout`` are given up (logged)."""
        if not self.alerts:
            return
        _, late = await asyncio.wait(set(self.alerts), timeout=timeout)
        for task in late:
            log.warning("alert not sent: the worker stopped before %s ended", task.get_name())
            task.cancel()
        if late:
            await asyncio.wait(late)

    async def retention(self, batch: int = RETENTION_BATCH, budget: float = RETENTION_BUDGET) -> dict[str, int]:
        """Delete old finished jobs and drop old payloads, ``batch`` rows per statement (each its own
        short transaction), until nothing more is due or ``budget`` seconds have passed: a run that
        stops for time (or because the worker is asked to stop) leaves the rest to the next minute's.
        Job and payload batches alternate, so neither starves the other. A setting of 0 turns its
        half off. The events of a source with ``redact`` paths are masked, then pruned, by
        :func:`worker.retention.prune_masked`, a batch after each batch of the others. The loop
        guard's alert claims (``hookline.alerts_sent``) of hours that began more than a day ago are
        deleted in the same turns, whatever the settings: only the current hour's are claimed again."""
        hours, days = self.settings.job_retention_hours, self.settings.payload_retention_days
        masked = masked_sources(self.config) if days > 0 else []
        deadline = time.monotonic() + budget
        jobs = payloads = alerts = 0
        after = 0  # the walk over procrastinate_jobs starts at the oldest job
        jobs_done, payloads_done, masked_done, alerts_done = hours <= 0, days <= 0, not masked, False
        while not (jobs_done and payloads_done and masked_done and alerts_done):
            if not jobs_done:
                row = (await self.db.rows("prune_jobs", hours=hours, after=after, batch=batch))[0]
                jobs += row["deleted"]
                after = row["last_id"]
                jobs_done = row["done"]
            if not payloads_done:
                n = (await self.db.rows("prune_payloads", days=days, batch=batch, masked=masked))[0]["pruned"]
                payloads += n
                payloads_done = n < batch
            if not masked_done:
                n = await prune_masked(self.db, self.config, masked, days=days, batch=batch)
                payloads += n
                masked_done = payloads_done and n == 0  # the next events due are of no masked source
            if not alerts_done:
                n = (await self.db.rows("prune_alerts_sent", batch=batch))[0]["deleted"]
                alerts += n
                alerts_done = n < batch
            if time.monotonic() >= deadline or self.db.stopping.is_set():
                break
        return {"jobs_deleted": jobs, "payloads_pruned": payloads, "alerts_pruned": alerts}

    async def close(self) -> None:
        await self.wait_for_alerts(self.alert_wait())
        await self.http.aclose()
        if self.llm is not None:
            await self.llm.close()
        await self.db.close()
