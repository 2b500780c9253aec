"""``GET /metrics``: the web process's own figures (prometheus-client) plus the cluster-wide picture
read from Postgres at scrape time, because on a PaaS only the web process is reachable.

Web process figures are counted by :class:`IngestMetricsMiddleware` (every answer under
``/webhooks/``, whatever produced it) and by ingest itself (signature failures, handshakes).
Cluster figures come from the trigger-kept rollup ``hookline.metric_totals`` and a few cheap counts.

When ``HOOKLINE_METRICS_TOKEN`` is set, a scrape must present it as a bearer token and sees every
label; when it is not set the endpoint is public and drops the ``tenant`` and ``reason`` labels
(summing over them), so an attacker learns neither tenants nor why a signature failed.
"""

from __future__ import annotations

import asyncio
import logging
import os
import time
from collections.abc import Callable, Collection, Iterable
from typing import Any

import asyncpg
import prometheus_client
from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest, multiprocess
from prometheus_client.metrics_core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.multiprocess import MultiProcessCollector
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from app.core.querynames import ObserveQuery
from app.core.sqlfiles import NamedQueries
from app.web.responses import DB_UNAVAILABLE

prometheus_client.disable_created_metrics()  # type: ignore[no-untyped-call]  # *_created series only add noise

log = logging.getLogger("hookline.metrics")
Q: NamedQueries[ObserveQuery] = NamedQueries("observe", ObserveQuery)
#: Labels only an authenticated scrape sees.
PRIVATE_LABELS = frozenset({"tenant", "reason"})
#: The ``tenant`` label of every tenant without a ``[tenants.NAME]`` table of its own (summed).
OTHER_TENANTS = "*"
#: Key in the ASGI scope where ingest (and the error handlers) note the outcome of a webhook request.
OUTCOME_KEY = "hookline.outcome"
CONTENT_TYPE = prometheus_client.CONTENT_TYPE_LATEST
#: A failed scrape query is logged once per query and error class this often (seconds).
REPORT_EVERY_SECONDS = 600
_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)


class Metrics:
    """The web process's registry (one per app, so tests can run several apps in one process).

    ``shared``: one of the processes of ``hookline web --processes N``, whose counters prometheus-client
    keeps in files under ``PROMETHEUS_MULTIPROC_DIR`` (set by the parent before it starts them): a scrape,
    whichever process answers it, renders the sum over every process, including those that were
    replaced. Without it, the registry's own values are this process's.
    """

    def __init__(self, *, shared: bool = False) -> None:
        self.shared = shared
        self.registry = CollectorRegistry()
        r = self.registry
        self.ingest_requests = Counter(
            "hookline_ingest_requests",
            "Webhook requests answered, by source ('' when unknown) and outcome (accepted, duplicate, "
            "handshake, or the error code of a 4xx/5xx answer).",
            ["source", "outcome"],
            registry=r,
        )
        self.ingest_duration = Histogram(
            "hookline_ingest_duration_seconds",
            "Time to answer a webhook request, by source.",
            ["source"],
            buckets=_BUCKETS,
            registry=r,
        )
        self.signature_failures = Counter(
            "hookline_signature_failures",
            "Rejected signatures, by source, provider and reason code (reason: authenticated scrapes only).",
            ["source", "provider", "reason"],
            registry=r,
        )
        self.handshakes = Counter(
            "hookline_handshakes", "Sender handshakes answered (not stored), by source.", ["source"], registry=r
        )
        self.sync_replies = Counter(
            "hookline_sync_replies",
            "Synchronous replies, by source, pipeline and outcome (answer, default, duplicate_answer, "
            "duplicate_default, render_error, disconnected).",
            ["source", "pipeline", "outcome"],
            registry=r,
        )
        self.sync_waiting = Gauge(
            "hookline_sync_waiting",
            "Requests waiting for a synchronous reply.",
            registry=r,
            multiprocess_mode="livesum",  # with several web processes: the sum over those alive
        )
        #: Label children of the two per-request series (sources are configured names or '', outcomes
        #: a fixed set: both bounded).
        self._requests: dict[tuple[str, str], Any] = {}
        self._durations: dict[str, Any] = {}
        self._by_name: dict[str, Counter] = {
            "hookline_sync_replies_total": self.sync_replies,
            "hookline_ingest_requests_total": self.ingest_requests,
            "hookline_signature_failures_total": self.signature_failures,
            "hookline_handshakes_total": self.handshakes,
        }

    def observe_ingest(self, source: str, outcome: str, seconds: float) -> None:
        """One answered webhook request (the middleware's figures; label children looked up once)."""
        counter = self._requests.get((source, outcome))
        if counter is None:
            counter = self._requests[(source, outcome)] = self.ingest_requests.labels(source=source, outcome=outcome)
        counter.inc()
        timer = self._durations.get(source)
        if timer is None:
            timer = self._durations[source] = self.ingest_duration.labels(source=source)
        timer.observe(seconds)

    def inc(self, name: str, amount: int = 1, **labels: str) -> None:
        """Count on one of the counters by its exposed name (``hookline_handshakes_total``)."""
        self._by_name[name].labels(**labels).inc(amount)

    def value(self, name: str, **labels: str) -> float:
        return self.registry.get_sample_value(name, labels) or 0.0

    def render(self, cluster: Iterable[Metric] = (), *, private: bool) -> bytes:
        families = [*self._own(), *cluster]
        if not private:
            families = [_without(f, PRIVATE_LABELS) for f in families]
        out = CollectorRegistry(auto_describe=False)
        out.register(_Fixed(families))
        return generate_latest(out)

    def _own(self) -> list[Metric]:
        if not self.shared:
            return list(self.registry.collect())
        every = CollectorRegistry(auto_describe=False)
        MultiProcessCollector(every)  # type: ignore[no-untyped-call]  # registers itself; reads the directory
        return sorted(every.collect(), key=lambda f: f.name)

    def close(self) -> None:
        """A shared process that stops takes its live gauges out of the sum (its counters stay)."""
        if self.shared:
            multiprocess.mark_process_dead(os.getpid())  # type: ignore[no-untyped-call]


def forget_process(pid: int) -> None:
    """Take a shared process that ended without closing (killed, or hung and killed by its supervisor)
    out of the live gauges' sum; its counters and histograms keep counting."""
    multiprocess.mark_process_dead(pid)  # type: ignore[no-untyped-call]


class _Fixed:
    def __init__(self, families: list[Metric]) -> None:
        self._families = families

    def collect(self) -> Iterable[Metric]:
        return self._families


def _without(family: Metric, drop: frozenset[str]) -> Metric:
    """The family with the ``drop`` labels summed away."""
    if not any(drop & s.labels.keys() for s in family.samples):
        return family
    out = Metric(family.name, family.documentation, family.type, family.unit)
    sums: dict[tuple[str, tuple[tuple[str, str], ...]], float] = {}
    for s in family.samples:
        key = (s.name, tuple(sorted((k, v) for k, v in s.labels.items() if k not in drop)))
        sums[key] = sums.get(key, 0.0) + s.value
    for (name, labels), value in sums.items():
        out.add_sample(name, dict(labels), value)
    return out


class SharedFigures:
    """One :func:`cluster_figures` query set in flight per web process: scrapes that arrive while it
    runs share its answer. ``/metrics`` is public without ``HOOKLINE_METRICS_TOKEN``, so however many
    clients scrape at once, Postgres serves one set of these queries at a time per process; a scrape
    that arrives after it ended starts a fresh one (no answer is kept).

    A query that fails is logged here, its class and SQLSTATE only (a database's message can quote
    values), once per query and class every :data:`REPORT_EVERY_SECONDS`: a scrape every 15 s would
    otherwise log the same missing grant four times a minute."""

    def __init__(self) -> None:
        self._running: asyncio.Future[list[Metric]] | None = None
        self._reported: dict[tuple[str, str], float] = {}

    async def get(self, pool: Any, tenants: Collection[str] = ()) -> list[Metric]:
        if self._running is None or self._running.done():
            self._running = asyncio.ensure_future(cluster_figures(pool, tenants, report=self.report))
            # its error is read here too: every scrape waiting for it may have gone by the time it fails
            self._running.add_done_callback(lambda f: f.cancelled() or f.exception())
        # shielded: a scrape whose client went away does not cancel the others' answer
        return await asyncio.shield(self._running)

    def report(self, query: str, error: BaseException) -> None:
        """Log that ``query`` (a named query, or ``connect``) failed, unless it was logged with this
        error class within :data:`REPORT_EVERY_SECONDS`."""
        kind = error.__class__.__name__
        now = time.monotonic()
        last = self._reported.get((query, kind))
        if last is not None and now - last < REPORT_EVERY_SECONDS:
            return
        self._reported[(query, kind)] = now
        sqlstate = getattr(error, "sqlstate", None) or "none"
        if query == "connect":
            log.warning("metrics: Postgres unreachable: %s (SQLSTATE %s); hookline_database_up is 0", kind, sqlstate)
        else:
            log.warning(
                "metrics: query %s failed: %s (SQLSTATE %s); its figures are left out of /metrics "
                "(logged once per %d minutes)",
                query,
                kind,
                sqlstate,
                REPORT_EVERY_SECONDS // 60,
            )


async def cluster_figures(
    pool: Any, tenants: Collection[str] = (), *, report: Callable[[str, BaseException], None] | None = None
) -> list[Metric]:
    """The cluster-wide picture from Postgres: a handful of small queries on one connection.

    The ``tenant`` label is a value senders choose (the source's ``tenant`` locator), so it names only
    the ``tenants`` configured by name (``[tenants.NAME]``) and ``''`` (no tenant); every other tenant is
    summed under :data:`OTHER_TENANTS`, so a sender cannot add series by inventing tenants.

    A query Postgres refuses (a missing grant, a statement timeout, a table not migrated yet) leaves
    its families without samples and is passed to ``report``; the others are still read. Only an
    unreachable database (:data:`~app.web.responses.DB_UNAVAILABLE`) raises: that is what
    ``hookline_database_up`` 0 says."""
    jobs = _gauge("hookline_jobs", "procrastinate jobs by queue and status (todo, doing).", "queue", "status")
    dead = _gauge(
        "hookline_dead_letters",
        "Dead letters: events that will not be retried (status dead) and that nobody dismissed.",
    )
    last_hour = _gauge("hookline_events_last_hour", "Events received in the last hour, by status.", "status")
    finished = _counter(
        "hookline_events_finished", "Events finished (terminal status), by pipeline and status.", "pipeline", "status"
    )
    tokens = _counter(
        "hookline_llm_tokens",
        "Model tokens, by model, tenant ('*': those without [tenants.NAME]) and kind (input, output, "
        "cache_creation, cache_read).",
        "model",
        "tenant",
        "kind",
    )
    cost = _counter(
        "hookline_llm_cost_usd",
        "Model spend in US dollars, by model and tenant ('*': those without [tenants.NAME]).",
        "model",
        "tenant",
    )
    calls = _counter(
        "hookline_llm_calls",
        "Model calls (Messages API round trips: a micro-batch's combined call once), by model and outcome (status).",
        "model",
        "outcome",
    )
    breakers = _gauge(
        "hookline_breaker_state", "Circuit breaker of each model: 0 closed, 1 open, 2 half-open.", "model"
    )
    by_tenant: dict[tuple[str, ...], float] = {}

    def add(*labels: str, value: float) -> None:
        by_tenant[labels] = by_tenant.get(labels, 0.0) + value

    async with pool.acquire() as conn:

        async def read(name: ObserveQuery) -> list[Any]:
            try:
                return list(await conn.fetch(Q[name]))
            except DB_UNAVAILABLE:
                raise
            except asyncpg.PostgresError as e:  # the server answered: each statement stands alone
                if report is not None:
                    report(name, e)
                return []

        for r in await read("queue_depth"):
            jobs.add_metric([r["queue_name"], r["status"]], float(r["n"]))
        for r in await read("dead_letters_count"):
            dead.add_metric([], float(r["n"]))
        for r in await read("event_rates"):
            last_hour.add_metric([r["status"]], float(r["last_1h"]))
        for r in await read("metric_totals"):
            v = float(r["value"])
            metric = r["metric"]
            if metric == "events_finished":
                finished.add_metric([r["pipeline"], r["status"]], v)
            elif metric in ("tokens", "cost_usd"):
                tenant = r["tenant"] if r["tenant"] in tenants or not r["tenant"] else OTHER_TENANTS
                add(metric, r["model"], tenant, r["kind"], value=v)
            elif metric == "model_calls":
                calls.add_metric([r["model"], r["status"]], v)
        for r in await read("breaker_states"):
            breakers.add_metric([r["model"]], float(r["state_code"]))
    for (metric, model, tenant, kind), v in by_tenant.items():
        if metric == "tokens":
            tokens.add_metric([model, tenant, kind], v)
        else:
            cost.add_metric([model, tenant], v)
    return [jobs, dead, last_hour, finished, tokens, cost, calls, breakers]


def _gauge(name: str, doc: str, *labels: str) -> GaugeMetricFamily:
    return GaugeMetricFamily(name, doc, labels=list(labels))


def _counter(name: str, doc: str, *labels: str) -> CounterMetricFamily:
    return CounterMetricFamily(name, doc, labels=list(labels))


class IngestMetricsMiddleware:
    """Counts and times every answer under ``/webhooks/``: 2xx, 4xx and 5xx alike, including the
    router's own 404/405. The source label is the configured source name, or '' for any other
    path segment (so random URLs cannot create series)."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        path: str = scope.get("path", "")
        state = (scope.get("state") or {}).get("hookline")
        if scope["type"] != "http" or state is None or not path.startswith("/webhooks/"):
            await self.app(scope, receive, send)
            return
        started = time.perf_counter()
        name = path[len("/webhooks/") :].split("/", 1)[0]
        source = name if name in state.config.sources else ""
        status = 500

        async def send_wrapper(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = int(message["status"])
            await send(message)

        try:
            await self.app(scope, receive, send_wrapper)
        finally:
            outcome = scope.get(OUTCOME_KEY) or _OUTCOMES.get(status, "error" if status >= 500 else str(status))
            metrics: Metrics = state.metrics
            metrics.observe_ingest(source, outcome, time.perf_counter() - started)


_OUTCOMES = {
    200: "accepted",
    400: "bad_request",
    401: "invalid_signature",
    403: "forbidden",
    404: "not_found",
    405: "method_not_allowed",
    413: "payload_too_large",
    429: "rate_limited",
    503: "database_unavailable",
}


def note_outcome(scope: Scope, outcome: str) -> None:
    """What the answer to this webhook request was (the label of hookline_ingest_requests_total)."""
    scope[OUTCOME_KEY] = outcome
