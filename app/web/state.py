"""Typed lifespan state of the web process: settings, config, metrics and a self-healing pool."""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
import time
from dataclasses import dataclass, field

import asyncpg

from app.core import db
from app.core.config import Config, Pipeline
from app.core.errors import DatabaseUnavailable
from app.core.settings import Settings
from app.web.batcher import Batcher
from app.web.guard import IPNetwork, networks
from app.web.listener import EventListener
from app.web.metrics import Metrics, SharedFigures
from app.web.ratelimit import IngestLimiter
from app.web.throttle import FailedAttempts

log = logging.getLogger("hookline.db")

#: Most (source, event type) pairs AppState.routing remembers.
_MAX_ROUTES = 4096
#: Longest event type AppState.routing remembers (longer ones are computed each time).
_MAX_ROUTE_KEY = 200


class PoolHolder:
    """The asyncpg pool, created at startup if Postgres is up, or on first use after it comes up.

    The web process starts (and answers 503 on ingest, 200 on /healthz) even while the database is
    down; asyncpg replaces broken connections by itself once the server is back.
    """

    def __init__(self, url: str | None, *, min_size: int, max_size: int, timeout: float, retry_after: int) -> None:
        self._url = url
        self._min, self._max, self._timeout, self._retry_after = min_size, max_size, timeout, retry_after
        self._pool: asyncpg.Pool[asyncpg.Record] | None = None
        self._lock = asyncio.Lock()
        self._next_try = 0.0

    async def open(self) -> None:
        if self._url is None:
            return
        try:
            await self._create()
        except Exception as e:
            log.warning("database not reachable at startup (%s); ingest answers 503 until it is", e.__class__.__name__)

    async def _create(self) -> None:
        async with self._lock:
            if self._pool is None:
                assert self._url is not None
                self._pool = await db.create_pool(  # a minimum above a lowered maximum is held to it
                    self._url, min_size=min(self._min, self._max), max_size=self._max, timeout=self._timeout
                )

    def pool(self) -> asyncpg.Pool[asyncpg.Record]:
        if self._pool is None:
            raise DatabaseUnavailable(
                "the event store is unavailable; nothing was stored, retry later",
                headers={"Retry-After": str(self._retry_after)},
            )
        return self._pool

    async def ensure(self) -> asyncpg.Pool[asyncpg.Record]:
        if self._pool is None and self._url is not None and time.monotonic() >= self._next_try:
            self._next_try = time.monotonic() + 1.0
            with contextlib.suppress(Exception):  # still down: pool() answers 503
                await self._create()
        return self.pool()

    async def close(self) -> None:
        if self._pool is not None:
            await self._pool.close()
            self._pool = None


@dataclass
class AppState:
    settings: Settings
    config: Config
    db: PoolHolder
    metrics: Metrics = field(default_factory=Metrics)
    #: /metrics' cluster-wide queries, one set in flight at a time
    figures: SharedFigures = field(default_factory=SharedFigures)
    #: The process's one LISTEN connection (started on first use).
    listener: EventListener = field(default_factory=lambda: EventListener(None))
    expected_migrations: dict[int, str] = field(default_factory=dict)
    #: [sources.NAME] rate_limit buckets (per process).
    ingest_limiter: IngestLimiter = field(default_factory=IngestLimiter)
    #: Wrong admin tokens per client address (API, dashboard, login form; per process).
    admin_attempts: FailedAttempts = field(default_factory=FailedAttempts)
    #: Wrong HOOKLINE_METRICS_TOKEN per client address (per process).
    metrics_attempts: FailedAttempts = field(default_factory=FailedAttempts)
    #: Group commit of ingest rows (app/web/batcher.py).
    batcher: Batcher = field(init=False)
    #: Set when the server begins shutting down (app/web/server.py): open dashboard streams end at once.
    stopping: asyncio.Event = field(default_factory=asyncio.Event)

    #: (source, event type) → (job priority, sync pipeline): the config is frozen, so computed once.
    _routes: dict[tuple[str, str | None], tuple[int, Pipeline | None]] = field(default_factory=dict, repr=False)

    def __post_init__(self) -> None:
        self.batcher = Batcher(
            self.db.ensure,
            max_flushes=max(1, min(4, self.settings.db_pool_max - 1)),
            known_size=self.settings.duplicate_cache_size,
            known_seconds=self.settings.duplicate_cache_seconds,
        )

    def routing(self, source: str, event_type: str | None) -> tuple[int, Pipeline | None]:
        """The job priority of an event and the ``respond = "sync"`` pipeline that answers it, if any."""
        key = (source, event_type)
        found = self._routes.get(key)
        if found is None:
            found = (self.config.priority_for(source, event_type), self.config.sync_pipeline_for(source, event_type))
            short = event_type is None or len(event_type) <= _MAX_ROUTE_KEY
            if short and len(self._routes) < _MAX_ROUTES:  # event types come from senders: keep it bounded
                self._routes[key] = found
        return found

    @functools.cached_property
    def trusted_proxies(self) -> tuple[IPNetwork, ...]:
        """HOOKLINE_TRUSTED_PROXIES, parsed once."""
        return networks(self.settings.trusted_proxies)

    @functools.cached_property
    def stored_header_names(self) -> frozenset[str]:
        """HOOKLINE_STORED_HEADERS, lower-cased, parsed once."""
        return frozenset(h.strip().lower() for h in self.settings.stored_headers.split(",") if h.strip())
