"""The worker's own Prometheus metrics, served on ``HOOKLINE_WORKER_METRICS_PORT`` when it is set.

Cluster-wide figures (queue depth, tokens, cost…) are on the web process's ``/metrics``; these are
what only a worker process knows: how long jobs waited, how long model calls took, action outcomes
and the jobs it is running.
"""

from __future__ import annotations

import logging
import threading
from typing import Any

import prometheus_client
from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

prometheus_client.disable_created_metrics()  # type: ignore[no-untyped-call]

log = logging.getLogger("hookline.worker")
_DELAY_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 300.0)
_LLM_BUCKETS = (0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 20.0, 30.0, 60.0, 120.0)


class WorkerMetrics:
    def __init__(self) -> None:
        self.registry = r = CollectorRegistry()
        self.pickup_delay = Histogram(
            "hookline_pickup_delay_seconds",
            "Time from a job becoming runnable (deferred, or its retry time) to a worker starting it.",
            buckets=_DELAY_BUCKETS,
            registry=r,
        )
        self.llm_latency = Histogram(
            "hookline_llm_latency_seconds",
            "Wall time of model calls, by model and outcome (call status).",
            ["model", "outcome"],
            buckets=_LLM_BUCKETS,
            registry=r,
        )
        self.actions = Counter(
            "hookline_actions",
            "Actions run, by pipeline, action type and outcome (succeeded, failed).",
            ["pipeline", "type", "outcome"],
            registry=r,
        )
        self.jobs_in_flight = Gauge("hookline_jobs_in_flight", "Jobs this worker is running now.", registry=r)
        self.jobs = Counter(
            "hookline_worker_jobs",
            "Job runs of this worker, by how they ended: the event's status, retrying (failed, tried again) or "
            "throttled (held by a limit).",
            ["status"],
            registry=r,
        )
        self._server: Any = None
        self._thread: threading.Thread | None = None
        # the label children of the per-event series, looked up once each (``labels()`` checks and
        # converts its values and takes the metric's lock on every call)
        self._jobs_by_status: dict[str, Any] = {}
        self._latency_by_call: dict[tuple[str, str], Any] = {}

    def job_done(self, status: str) -> None:
        """``hookline_worker_jobs{status}`` + 1."""
        child = self._jobs_by_status.get(status)
        if child is None:
            child = self._jobs_by_status[status] = self.jobs.labels(status=status)
        child.inc()

    def call_latency(self, model: str, outcome: str, seconds: float) -> None:
        """One model call's wall time in ``hookline_llm_latency_seconds{model, outcome}``."""
        child = self._latency_by_call.get((model, outcome))
        if child is None:
            child = self._latency_by_call[model, outcome] = self.llm_latency.labels(model=model, outcome=outcome)
        child.observe(seconds)

    @property
    def serving(self) -> bool:
        return self._server is not None

    def serve(self, port: int, host: str = "0.0.0.0") -> None:  # noqa: S104 - scraped from outside
        self._server, self._thread = prometheus_client.start_http_server(port, addr=host, registry=self.registry)
        log.info("worker metrics on http://%s:%d/metrics", host, port)

    def stop(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None


def serve_metrics(metrics: WorkerMetrics, port: int, host: str) -> None:
    """Serve ``metrics`` on ``port`` (``HOOKLINE_WORKER_METRICS_PORT``), or stop the worker at start with
    one line naming the variable (exit 2) when it cannot listen there: in use by another process (another
    worker on the same host), or not allowed. Running on without them would leave the metrics asked for
    missing, and a scrape of that port would read the other process's figures as this worker's."""
    try:
        metrics.serve(port, host)
    except OSError as e:
        log.error(
            "HOOKLINE_WORKER_METRICS_PORT: cannot listen on %s:%d (%s); stop what holds it, or set another port",
            host,
            port,
            e.strerror or e.__class__.__name__,
        )
        raise SystemExit(2) from None
