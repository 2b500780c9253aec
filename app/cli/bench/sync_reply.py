"""``hookline bench`` row ``sync``: what a synchronous reply adds over the model's own latency.

A real ``hookline web`` and ``python -m worker`` (child processes) serve a ``respond = "sync"``
pipeline whose model is a stand-in Messages API in this process that answers after a fixed delay.
Requests go out at a small fixed concurrency, each built and signed before its clock starts and sent
on a keep-alive connection over raw asyncio streams (no HTTP client library's own work is counted).
For each, the client's round trip minus the model call's own latency (``hookline.llm_calls.latency_ms``,
measured by the worker around the SDK call) is what hookline adds: ingest, the job pickup, storing the
answer, the NOTIFY back to the waiting request and the rendering. Target: p95 ≤ 15 ms on this machine.
Reported, never asserted.
"""

from __future__ import annotations

import asyncio
import json
import re
import threading
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, Protocol

from app.cli.bench.loadgen import SECRET_ENV, percentile
from app.cli.bench.plan import Plan
from app.cli.bench.procs import Children, free_port, wait_http
from app.signatures import sign


class _DB(Protocol):
    @property
    def url(self) -> str: ...


class Bench(Protocol):
    """What this row uses of ``app.cli.bench.runner.Bench`` (a Protocol: no import cycle)."""

    @property
    def plan(self) -> Plan: ...
    @property
    def db(self) -> _DB: ...
    @property
    def children(self) -> Children: ...
    @property
    def secret(self) -> str: ...
    @property
    def out(self) -> Callable[[str], None]: ...

    def env(self, **extra: str) -> dict[str, str]: ...


SOURCE = "bench-sync"
#: The unique data.n of each sync request (32 hex digits), as it appears in the prompt.
_MARKER = re.compile(rb"(?<![0-9a-f])[0-9a-f]{32}(?![0-9a-f])")
TARGET_P95_MS = 15.0

#: Appended to the bench's hookline.toml (already formatted: braces are literal here).
CONFIG_TOML = f"""
[sources.{SOURCE}]
provider = "standard_webhooks"
secrets_env = ["{SECRET_ENV}"]

[pipelines.{SOURCE}]
source = "{SOURCE}"
events = ["bench.*"]
fields = ["type", "data.n"]
instructions = "Answer this synthetic event (hookline bench, stand-in model)."
output_schema = {{ type = "object", properties = {{ answer = {{ type = "string" }} }}, required = ["answer"] }}
respond = "sync"
respond_timeout_ms = 10000
respond_body = {{ text = "{{{{ output.answer }}}}" }}
"""


class StandInModel:
    """A minimal Messages API: every ``POST /v1/messages`` answers ``{"answer": "ok"}`` after ``delay`` s."""

    def __init__(self, delay: float) -> None:
        outer = self
        self.delay = delay
        #: marker (the event's data.n, found in the prompt) → (request arrived, answer sent), epoch s.
        self.calls: dict[str, tuple[float, float]] = {}

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"
            # Headers and body go out as two writes: with Nagle on, the body waits for the client's
            # delayed ACK of the headers (~40 ms on Linux), which a real API never adds.
            disable_nagle_algorithm = True

            def do_POST(self) -> None:
                arrived = time.time()
                request = self.rfile.read(int(self.headers.get("content-length", "0")))
                time.sleep(outer.delay)
                marker = _MARKER.search(request)
                body = json.dumps(
                    {
                        "id": f"msg_{uuid.uuid4().hex[:24]}",
                        "type": "message",
                        "role": "assistant",
                        "model": "claude-haiku-5-5",
                        "content": [{"type": "text", "text": '{"answer": "ok"}'}],
                        "stop_reason": "end_turn",
                        "stop_sequence": None,
                        "usage": {"input_tokens": 20, "output_tokens": 5},
                    }
                ).encode()
                self.send_response(200)
                self.send_header("content-type", "application/json")
                self.send_header("content-length", str(len(body)))
                self.send_header("request-id", f"req_{uuid.uuid4().hex[:24]}")
                self.end_headers()
                if marker is not None:
                    outer.calls[marker.group(0).decode()] = (arrived, time.time())
                self.wfile.write(body)

            def log_message(self, *args: Any) -> None:
                pass

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._server.daemon_threads = True
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)
        self._thread.start()

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self._server.server_address[1]}"

    def close(self) -> None:
        self._server.shutdown()
        self._server.server_close()


def run_row(bench: Bench) -> dict[str, Any]:
    """Start web and worker against the stand-in model, measure, stop them."""
    p = bench.plan
    model = StandInModel(p.sync_model_ms / 1000)
    port = free_port()
    env = bench.env(ANTHROPIC_API_KEY="bench-stand-in", ANTHROPIC_BASE_URL=model.base_url)
    try:
        bench.out(f"sync: {p.sync_requests} sync requests, model {p.sync_model_ms} ms, {p.sync_concurrency} at once …")
        bench.children.start("web-sync", ["-m", "app.cli", "web", "--host", "127.0.0.1", "--port", str(port)], env)
        bench.children.start("worker-sync", ["-m", "worker"], env | {"HOOKLINE_WORKER_CONCURRENCY": "10"})
        wait_http(bench.children, "web-sync", f"http://127.0.0.1:{port}/readyz")
        return asyncio.run(_measure(bench, port, model))
    finally:
        bench.children.stop("worker-sync")
        bench.children.stop("web-sync")
        model.close()


async def _measure(bench: Bench, port: int, model: StandInModel) -> dict[str, Any]:
    p = bench.plan
    path = f"/webhooks/{SOURCE}"
    deadline = time.monotonic() + 60
    warm = _Connection(port)
    try:
        while True:  # the worker is up once a reply carries the answer
            reply = (await warm.send(_request(port, path, bench.secret, "warm"))).reply
            if reply.headers.get("x-hookline-reply") == "answer":
                break
            if time.monotonic() > deadline:
                raise RuntimeError("the worker never answered a sync request within 60 s")
    finally:
        warm.close()
    # Every request is built and signed before its clock starts, and goes out on a keep-alive
    # connection over raw asyncio streams, as the ingest load generator's do: an HTTP client library's
    # own work (building the request, parsing the response) is not what hookline adds.
    requests = [_request(port, path, bench.secret, "sync") for _ in range(p.sync_requests)]
    queue: asyncio.Queue[_Request] = asyncio.Queue()
    for r in requests:
        queue.put_nowait(r)
    results: list[tuple[float, int, str, int]] = []
    sent: dict[int, _Sent] = {}

    async def client_loop() -> None:
        conn = _Connection(port)
        try:
            while not queue.empty():
                one = await conn.send(queue.get_nowait())
                reply = one.reply
                event_id = int(reply.headers.get("x-hookline-event-id") or 0)
                if event_id:
                    sent[event_id] = one
                results.append((one.elapsed, event_id, reply.headers.get("x-hookline-reply", ""), reply.status))
        finally:
            conn.close()

    started = time.perf_counter()
    await asyncio.gather(*(client_loop() for _ in range(p.sync_concurrency)))
    wall = time.perf_counter() - started
    model_ms = await _model_latency(bench.db.url, [r[1] for r in results if r[1]])
    added = sorted(r[0] * 1000 - model_ms[r[1]] for r in results if r[2] == "answer" and r[1] in model_ms)
    e2e = sorted(r[0] * 1000 for r in results)
    models = sorted(model_ms.values())

    def stats(v: list[float]) -> dict[str, float | None]:
        return {k: _round(percentile(v, q)) for k, q in (("p50", 50.0), ("p95", 95.0), ("p99", 99.0), ("max", 100.0))}

    return {
        "requests": len(results),
        "answered": sum(1 for r in results if r[2] == "answer"),
        "defaults": sum(1 for r in results if r[2] == "default"),
        "errors": sum(1 for r in results if r[3] != 200),
        "concurrency": p.sync_concurrency,
        "model_delay_ms": p.sync_model_ms,
        "added_ms": stats(added),
        "end_to_end_ms": stats(e2e),
        "model_ms": stats(models),
        "requests_per_s": round(len(results) / wall, 1) if wall > 0 else None,
        "target_p95_added_ms": TARGET_P95_MS,
        "stages_ms": {k: stats(sorted(v)) for k, v in (await _stages(bench.db.url, sent, model.calls)).items()},
    }


@dataclass(frozen=True)
class _Request:
    raw: bytes  # the whole HTTP/1.1 request, signed
    marker: str  # its data.n


@dataclass(frozen=True)
class _Reply:
    status: int
    headers: dict[str, str]  # names in lower case
    body: bytes


@dataclass(frozen=True)
class _Sent:
    elapsed: float
    reply: _Reply
    marker: str  # the request's data.n
    sent_at: float  # epoch s, the clock Postgres and the stand-in model use too (one host)
    done_at: float


def _request(port: int, path: str, secret: str, prefix: str) -> _Request:
    marker = uuid.uuid4().hex
    body = json.dumps({"type": "bench.created", "data": {"n": marker}}).encode()
    headers = sign("standard_webhooks", secret=secret, body=body, delivery_id=f"{prefix}-{uuid.uuid4().hex}")
    headers |= {"content-type": "application/json", "content-length": str(len(body)), "host": f"127.0.0.1:{port}"}
    head = "".join(f"{k}: {v}\r\n" for k, v in headers.items())
    return _Request(f"POST {path} HTTP/1.1\r\n{head}\r\n".encode("latin-1") + body, marker)


class _Connection:
    """One keep-alive HTTP/1.1 connection to the web process, one request at a time."""

    def __init__(self, port: int) -> None:
        self._port = port
        self._streams: tuple[asyncio.StreamReader, asyncio.StreamWriter] | None = None

    async def send(self, request: _Request) -> _Sent:
        if self._streams is None:
            self._streams = await asyncio.open_connection("127.0.0.1", self._port)
        reader, writer = self._streams
        sent_at, t = time.time(), time.perf_counter()
        writer.write(request.raw)
        head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 30)
        lines = head.decode("latin-1").split("\r\n")
        headers = {k.strip().lower(): v.strip() for k, _, v in (ln.partition(":") for ln in lines[1:] if ln)}
        body = await reader.readexactly(int(headers.get("content-length") or 0))
        elapsed = time.perf_counter() - t
        if headers.get("connection", "").lower() == "close":
            self.close()
        reply = _Reply(int(lines[0].split(" ")[1]), headers, body)
        return _Sent(elapsed, reply, request.marker, sent_at, sent_at + elapsed)

    def close(self) -> None:
        if self._streams is not None:
            self._streams[1].close()
            self._streams = None


#: Where the added latency goes, per request (ms), from the client's clock, the event row, the stand-in
#: model's clock and the stored answer: all on this host.
STAGES = (
    ("ingest", "request sent → event stored (received_at, the insert's start)"),
    ("pickup", "received_at → job fetched (procrastinate 'started' event): commit, NOTIFY, worker's fetch"),
    ("claim", "job fetched → event claimed (started_at)"),
    ("before_model", "started_at → model request arrived"),
    ("after_model", "model answered → answer stored (llm_calls.created_at, its transaction's start)"),
    ("reply", "answer stored → HTTP reply received (commit, NOTIFY, web wakes, reads, renders)"),
)


_STAGE_TIMES = """SELECT e.id, extract(epoch FROM e.received_at) AS received,
       extract(epoch FROM e.started_at) AS started, extract(epoch FROM c.created_at) AS stored,
       (SELECT extract(epoch FROM min(pe.at)) FROM procrastinate_jobs j
        JOIN procrastinate_events pe ON pe.job_id = j.id AND pe.type = 'started'
        WHERE j.args->>'event_id' = e.id::text) AS fetched
FROM hookline.events e JOIN hookline.llm_calls c ON c.event_id = e.id AND c.status = 'succeeded'
WHERE e.id = ANY($1::bigint[])"""


async def _stages(url: str, sent: dict[int, _Sent], calls: dict[str, tuple[float, float]]) -> dict[str, list[float]]:
    from app.core.db import connect

    conn = await connect(url, timeout=10.0)
    try:
        rows = await conn.fetch(
            _STAGE_TIMES,
            list(sent),
        )
    finally:
        await conn.close()
    out: dict[str, list[float]] = {name: [] for name, _ in STAGES}
    for r in rows:
        s, model = sent[int(r["id"])], calls.get(sent[int(r["id"])].marker)
        if model is None or r["started"] is None or r["fetched"] is None:
            continue
        received, started, stored = float(r["received"]), float(r["started"]), float(r["stored"])
        fetched = float(r["fetched"])
        for name, value in (
            ("ingest", received - s.sent_at),
            ("pickup", fetched - received),
            ("claim", started - fetched),
            ("before_model", model[0] - started),
            ("after_model", stored - model[1]),
            ("reply", s.done_at - stored),
        ):
            out[name].append(1000 * value)
    return out


async def _model_latency(url: str, event_ids: list[int]) -> dict[int, float]:
    from app.core.db import connect

    conn = await connect(url, timeout=10.0)
    try:
        rows = await conn.fetch(
            "SELECT event_id, latency_ms FROM hookline.llm_calls WHERE event_id = ANY($1::bigint[]) "
            "AND status = 'succeeded'",
            event_ids,
        )
    finally:
        await conn.close()
    return {int(r["event_id"]): float(r["latency_ms"]) for r in rows if r["latency_ms"] is not None}


def _round(v: float | None) -> float | None:
    return None if v is None else round(v, 2)


def report_rows(r: dict[str, Any]) -> list[tuple[str, str, str, str]]:
    """(metric, value, unit, notes) lines of the printed table."""

    def f(v: Any) -> str:
        return "-" if v is None else f"{v:,.2f}"

    a, e = r["added_ms"], r["end_to_end_ms"]
    verdict = "within" if a["p95"] is not None and a["p95"] <= TARGET_P95_MS else "OVER"
    return [
        (
            "sync reply added latency",
            " / ".join(f(a[k]) for k in ("p50", "p95", "p99")),
            "ms p50/p95/p99",
            f"round trip minus the model's own latency; target p95 ≤ {TARGET_P95_MS:g} ms ({verdict}); "
            f"max {f(a['max'])}",
        ),
        (
            "sync reply round trip",
            " / ".join(f(e[k]) for k in ("p50", "p95", "p99")),
            "ms p50/p95/p99",
            f"{r['requests']} requests, {r['concurrency']} at once, stand-in model {r['model_delay_ms']} ms; "
            f"answered {r['answered']}, defaults {r['defaults']}, errors {r['errors']}",
        ),
        *(
            (f"  sync stage: {name}", " / ".join(f(st[k]) for k in ("p50", "p95")), "ms p50/p95", what)
            for name, what in STAGES
            if (st := r.get("stages_ms", {}).get(name)) is not None
        ),
    ]
