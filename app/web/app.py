"""The web process: Starlette app with the ingest route, health, readiness and metrics.

Resources come from typed lifespan state (Starlette ≥ 1.0 has only ``lifespan``), never module
globals. ``create_app()`` is what uvicorn serves (``hookline web``).
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import AsyncIterator

from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import PlainTextResponse, Response
from starlette.routing import Route

from app.core import migrations
from app.core.config import Config, load_config
from app.core.errors import HTTPError
from app.core.querynames import IngestQuery
from app.core.settings import Settings
from app.core.sqlfiles import NamedQueries
from app.web import admin
from app.web.ingest import receive_webhook
from app.web.listener import EventListener
from app.web.openapi import openapi_json
from app.web.responses import DB_UNAVAILABLE, json_response
from app.web.state import AppState, PoolHolder

log = logging.getLogger("hookline.web")
Q: NamedQueries[IngestQuery] = NamedQueries("ingest", IngestQuery)


async def healthz(request: Request) -> Response:
    """The process is up (liveness). Does not touch the database."""
    return json_response(200, {"status": "ok"})


async def readyz(request: Request) -> Response:
    """Ready for traffic: the database answers and its schema is the one this code expects."""
    state: AppState = request.state.hookline
    try:
        pool = await state.db.ensure()
        rows = await pool.fetch(Q["schema_versions"])
    except (*DB_UNAVAILABLE, HTTPError) as e:  # type: ignore[misc]
        return json_response(
            503,
            {"status": "unavailable", "database": "unreachable", "detail": e.__class__.__name__},
            {"Retry-After": str(state.settings.retry_after_seconds)},
        )
    except Exception as e:
        return json_response(503, {"status": "unavailable", "database": "not migrated", "detail": e.__class__.__name__})
    applied = {int(r["version"]): str(r["checksum"]) for r in rows}
    if applied != state.expected_migrations:
        pending = sorted(set(state.expected_migrations) - set(applied))
        return json_response(
            503,
            {
                "status": "unavailable",
                "database": "schema not current",
                "pending": pending,
                "hint": "run `hookline migrate`",
            },
        )
    return json_response(200, {"status": "ready", "schema_version": max(applied, default=0)})


async def metrics(request: Request) -> Response:
    state: AppState = request.state.hookline
    gauges: list[tuple[str, str, dict[str, str], float]] = []
    try:
        pool = await state.db.ensure()
        for r in await pool.fetch(Q["queue_depth"]):
            gauges.append(
                (
                    "hookline_jobs",
                    "procrastinate jobs by queue and status (todo, doing).",
                    {"queue": r["queue_name"], "status": r["status"]},
                    float(r["n"]),
                )
            )
        for r in await pool.fetch(Q["event_status_counts"]):
            gauges.append(
                (
                    "hookline_events_last_hour",
                    "Events received in the last hour, by status.",
                    {"status": r["status"]},
                    float(r["n"]),
                )
            )
        up = 1.0
    except Exception:
        up = 0.0
    gauges.append(("hookline_database_up", "1 when the last metrics query reached Postgres.", {}, up))
    gauges.append(
        ("hookline_sync_waiting", "Requests waiting for a synchronous reply.", {}, float(state.listener.waiting()))
    )
    return PlainTextResponse(state.metrics.render(gauges), media_type="text/plain; version=0.0.4")


async def _http_error(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, HTTPError)
    return json_response(exc.status, {"error": exc.code, "detail": exc.detail}, exc.headers)


async def _starlette_error(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, HTTPException)
    code = {404: "not_found", 405: "method_not_allowed"}.get(exc.status_code, "http_error")
    return json_response(exc.status_code, {"error": code, "detail": exc.detail}, exc.headers)


def create_app(settings: Settings | None = None, config: Config | None = None) -> Starlette:
    settings = settings or Settings()
    config = config if config is not None else load_config(settings.config)
    expected = {m.version: m.checksum for m in migrations.discover()}

    @contextlib.asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[dict[str, AppState]]:
        holder = PoolHolder(
            settings.dsn(),
            min_size=settings.db_pool_min,
            max_size=settings.db_pool_max,
            timeout=settings.db_timeout,
            retry_after=settings.retry_after_seconds,
        )
        await holder.open()
        listener = EventListener(settings.dsn())
        if any(p.sync for p in config.pipelines.values()):
            listener.ensure_started()  # connected before the first sync request needs it
        state = AppState(settings=settings, config=config, db=holder, listener=listener, expected_migrations=expected)
        log.info("hookline web ready: %d source(s), %d pipeline(s)", len(config.sources), len(config.pipelines))
        try:
            yield {"hookline": state}
        finally:
            await listener.close()
            await holder.close()

    return Starlette(
        routes=[
            Route("/webhooks/{source}", receive_webhook, methods=["POST", "GET"]),
            Route("/healthz", healthz, methods=["GET"]),
            Route("/readyz", readyz, methods=["GET"]),
            Route("/metrics", metrics, methods=["GET"]),
            Route("/openapi.json", openapi_json, methods=["GET"]),
            *admin.routes(settings),
        ],
        exception_handlers={HTTPError: _http_error, HTTPException: _starlette_error},
        lifespan=lifespan,
    )
