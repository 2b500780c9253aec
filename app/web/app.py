"""The web process: Starlette app with the ingest route, health, readiness and metrics.

Resources come from typed lifespan state (Starlette ≥ 1.0 has only ``lifespan``), never module
globals. ``create_app()`` is what uvicorn serves (``hookline web``).
"""

from __future__ import annotations

import contextlib
import hashlib
import hmac
import logging
from collections.abc import AsyncIterator, Awaitable, Callable

import asyncpg
from prometheus_client.metrics_core import GaugeMetricFamily, Metric
from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.middleware import Middleware
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route, request_response
from starlette.types import ASGIApp, Receive, Scope, Send

from app.core import migrations
from app.core.config import Config, load_config
from app.core.errors import ConfigError, HTTPError
from app.core.heap import freeze_startup_heap
from app.core.logs import setup_logging
from app.core.querynames import IngestQuery
from app.core.settings import Settings, weak_tokens
from app.core.sqlfiles import NamedQueries
from app.web import admin, sync_reply
from app.web.guard import client_ip, networks
from app.web.ingest import receive_webhook
from app.web.listener import EventListener
from app.web.metrics import CONTENT_TYPE, IngestMetricsMiddleware, Metrics, note_outcome
from app.web.openapi import openapi_json
from app.web.responses import DB_UNAVAILABLE, json_response, needs_grant
from app.web.state import AppState, PoolHolder

log = logging.getLogger("hookline.web")
Q: NamedQueries[IngestQuery] = NamedQueries("ingest", IngestQuery)


async def healthz(request: Request) -> Response:
    """The process is up (liveness). Does not touch the database."""
    return json_response(200, {"status": "ok"})


async def readyz(request: Request) -> Response:
    """Ready for traffic: the database answers, can be written to, and its schema is the one this code
    expects. Every 503 carries Retry-After and names its reason in ``database``."""
    state: AppState = request.state.hookline
    retry = {"Retry-After": str(state.settings.retry_after_seconds)}

    def not_ready(database: str, **more: object) -> Response:
        return json_response(503, {"status": "unavailable", "database": database, **more}, retry)

    try:
        pool = await state.db.ensure()
        rows = await pool.fetch(Q["schema_versions"])
    except (*DB_UNAVAILABLE, HTTPError) as e:  # type: ignore[misc]
        return not_ready("unreachable", detail=e.__class__.__name__)
    except asyncpg.InsufficientPrivilegeError:
        return not_ready(
            "insufficient_privilege", detail=needs_grant("hookline_web", "read hookline.schema_migrations")
        )
    except (asyncpg.UndefinedTableError, asyncpg.InvalidSchemaNameError) as e:
        return not_ready("not migrated", detail=e.__class__.__name__, hint="run `hookline migrate`")
    except Exception as e:  # a statement timeout, …: the class and SQLSTATE, never the message
        sqlstate = {"sqlstate": e.sqlstate} if isinstance(e, asyncpg.PostgresError) else {}
        return not_ready("error", detail=e.__class__.__name__, **sqlstate)
    if any(r["read_only"] for r in rows):  # a standby after a failover, or read-only for maintenance
        return not_ready(
            "read-only", detail="the database accepts no writes (transaction_read_only is on); events cannot be stored"
        )
    applied = {int(r["version"]): str(r["checksum"]) for r in rows}
    # Versions this code does not know are a newer release's (its release step ran while this process
    # still serves a rolling deploy): migrations are forward-only and keep what older code uses, so
    # this process stays ready. A version it knows that is missing or changed is not.
    if any(applied.get(v) != c for v, c in state.expected_migrations.items()):
        pending = sorted(set(state.expected_migrations) - set(applied))
        return not_ready("schema not current", pending=pending, hint="run `hookline migrate`")
    newer = sorted(set(applied) - set(state.expected_migrations))
    ready: dict[str, object] = {"status": "ready", "schema_version": max(applied, default=0)}
    if newer:
        ready["newer_migrations"] = newer  # applied by a newer release than this process's
    return json_response(200, ready)


async def metrics(request: Request) -> Response:
    """Prometheus text; with ``HOOKLINE_METRICS_TOKEN`` set, only for ``Authorization: Bearer <token>``
    (wrong ones counted per client address, as the admin token's: app/web/throttle.py)."""
    state: AppState = request.state.hookline
    token = state.settings.metrics_token
    secret = token.get_secret_value() if token is not None else ""  # empty counts as unset
    if secret:
        given = request.headers.get("authorization", "")
        expected = "Bearer " + secret
        address = client_ip(request, state.trusted_proxies)
        if given:  # a token presented: none while this address is over its wrong-token limit
            state.metrics_attempts.check(address)
        # digests of equal length: compare_digest on the raw strings would tell the token's length
        if not hmac.compare_digest(hashlib.sha256(given.encode()).digest(), hashlib.sha256(expected.encode()).digest()):
            if given:
                state.metrics_attempts.failed(address)
            return json_response(
                401,
                {"error": "unauthorized", "detail": "send Authorization: Bearer <HOOKLINE_METRICS_TOKEN>"},
                {"WWW-Authenticate": "Bearer"},
            )
    cluster: list[Metric] = []
    up = GaugeMetricFamily(
        "hookline_database_up",
        "1 when this scrape reached Postgres (a query it refused leaves only its own figures out, and is logged).",
    )
    try:
        cluster = await state.figures.get(await state.db.ensure(), state.config.tenants.keys())
        up.add_metric([], 1.0)
    except Exception as e:  # no connection (or the queries could not run at all): logged, class only
        state.figures.report("connect", e)
        up.add_metric([], 0.0)
    body = state.metrics.render([*cluster, up], private=bool(secret))
    return Response(body, media_type=CONTENT_TYPE)


async def _http_error(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, HTTPError)
    note_outcome(request.scope, exc.code)
    return json_response(exc.status, {"error": exc.code, "detail": exc.detail}, exc.headers)


async def _starlette_error(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, HTTPException)
    code = {404: "not_found", 405: "method_not_allowed"}.get(exc.status_code, "http_error")
    note_outcome(request.scope, code)
    return json_response(exc.status_code, {"error": code, "detail": exc.detail}, exc.headers)


class IngestRoute:
    """``POST /webhooks/{source}`` straight to :func:`receive_webhook`, past the router and Starlette's
    two exception-handling layers (the hottest path, taken once per delivery). Same handler, same
    error answers (:func:`_http_error`); every other request, and any path the router would treat
    differently (more segments, a trailing slash, a root path), goes through the app as before."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        path: str = scope.get("path", "")
        if scope["type"] == "http" and scope.get("method") == "POST" and path.startswith(_WEBHOOKS):
            name = path[len(_WEBHOOKS) :]
            if name and "/" not in name and not scope.get("root_path"):
                scope["path_params"] = {"source": name}
                request = Request(scope, receive, send)
                try:
                    response = await receive_webhook(request)
                except HTTPError as exc:
                    response = await _http_error(request, exc)
                    exc.__traceback__ = None
                await response(scope, receive, send)
                return
        await self.app(scope, receive, send)


_WEBHOOKS = "/webhooks/"


class _AnyMethod:
    """A request handler as an ASGI app, so that its Route takes every method and the handler answers
    each 405 itself (receive_webhook: ``Allow: GET, POST``). Given the function, Starlette would restrict
    the route to its methods and answer OPTIONS, PUT, … with an ``Allow`` of its own (HEAD added), which
    disagreed with the handler's."""

    def __init__(self, handler: Callable[[Request], Awaitable[Response]]) -> None:
        self.app = request_response(handler)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        await self.app(scope, receive, send)


def create_app(
    settings: Settings | None = None, config: Config | None = None, *, shared_metrics: bool = False
) -> Starlette:
    """The web app. ``shared_metrics``: one of several processes behind one port (:func:`served_app`)."""
    settings = settings or Settings()
    try:
        networks(settings.trusted_proxies)
    except ValueError as e:
        raise ConfigError(f"HOOKLINE_TRUSTED_PROXIES: {e}") from None
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
        metrics = Metrics(shared=shared_metrics)
        listener = EventListener(settings.dsn(), gauge=metrics.sync_waiting)
        if any(p.sync for p in config.pipelines.values()):
            listener.ensure_started()  # connected before the first sync request needs it
        state = AppState(
            settings=settings,
            config=config,
            db=holder,
            metrics=metrics,
            listener=listener,
            expected_migrations=expected,
        )
        for warning in weak_tokens(settings):  # named, never shown
            log.warning(warning)
        log.info("hookline web ready: %d source(s), %d pipeline(s)", len(config.sources), len(config.pipelines))
        try:
            yield {"hookline": state}
        finally:
            await sync_reply.drain(settings.db_timeout)  # a reply's claim or default, recorded before the pool closes
            await listener.close()
            await holder.close()
            metrics.close()

    return Starlette(
        routes=[
            Route("/webhooks/{source}", _AnyMethod(receive_webhook)),
            # the same endpoint, never the router's 307 to it: senders do not follow a redirect of a POST
            Route("/webhooks/{source}/", _AnyMethod(receive_webhook)),
            Route("/healthz", healthz, methods=["GET"]),
            Route("/readyz", readyz, methods=["GET"]),
            Route("/metrics", metrics, methods=["GET"]),
            Route("/openapi.json", openapi_json, methods=["GET"]),
            *admin.routes(settings),
        ],
        middleware=[Middleware(IngestMetricsMiddleware), Middleware(IngestRoute)],
        exception_handlers={HTTPError: _http_error, HTTPException: _starlette_error},
        lifespan=lifespan,
    )


def served_app() -> Starlette:
    """uvicorn's factory in each process of ``hookline web --processes N`` (a fresh interpreter, which
    the parent's set-up did not reach): logging, the app with shared metrics, then the start-up heap
    frozen (app.core.heap), as ``hookline web`` does for its one process."""
    settings = Settings()
    setup_logging(settings.log_level, settings.log_format, process="web")
    app = create_app(settings, shared_metrics=True)
    freeze_startup_heap()
    return app
