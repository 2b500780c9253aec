"""A fake of the Anthropic Messages API that the real `anthropic` SDK talks to over HTTP.

In-process::

    with FakeMessagesAPI() as fake:
        client = anthropic.Anthropic(api_key="test", base_url=fake.base_url, _strict_response_validation=True)
        fake.enqueue(rate_limited(retry_after_ms=10), reply({"category": "billing"}))
        fake.enqueue_for("evt_123", overloaded())     # only requests whose body contains "evt_123"
        ...
        assert len(fake.calls_to("/v1/messages")) == 2

Out of process: ``python -m tests.fakes.messages_api --port 0`` prints ``READY <base_url>``; drive it
with ``POST /_fake/enqueue`` (``[step dicts]`` or ``{"steps": [...], "match": "..."}``),
``POST /_fake/default``, ``POST /_fake/reset``, ``GET /_fake/log``; or use `FakeMessagesAPIProcess`.
Per request, the header ``x-fake-scenario`` (e.g. ``429-once``; "once" counted per ``x-fake-key``)
picks an outcome too.
Order: `enqueue_for` match → x-fake-scenario → `enqueue` FIFO → `set_default` → generated.
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import hashlib
import json
import signal
import socket
import sys
import threading
import time
from collections import deque
from dataclasses import dataclass, field
from http.server import ThreadingHTTPServer
from typing import Any

from tests.fakes import _ratelimits
from tests.fakes._batches import BatchStore
from tests.fakes._handler import Handler
from tests.fakes._process import FakeMessagesAPIProcess
from tests.fakes._responses import Outcome
from tests.fakes._steps import (
    Step,
    default,
    error,
    hang,
    held,
    invalid_json_reply,
    max_tokens_cut,
    overloaded,
    rate_limited,
    raw,
    refusal,
    reply,
    server_error,
    slow,
    spend_limit,
    tool_reply,
)

__all__ = [
    "FakeMessagesAPI",
    "FakeMessagesAPIProcess",
    "RecordedRequest",
    "Step",
    "default",
    "error",
    "hang",
    "held",
    "invalid_json_reply",
    "max_tokens_cut",
    "overloaded",
    "rate_limited",
    "raw",
    "refusal",
    "reply",
    "server_error",
    "slow",
    "spend_limit",
    "tool_reply",
]


@dataclass
class RecordedRequest:
    """One HTTP call the fake received (control endpoints under /_fake/ are not recorded).

    `status`/`response_body` stay None while the call is in flight (slow/hang) and when the server
    stopped before answering; `response_body` is the parsed JSON answer (the text for raw() bodies);
    `step` says what produced the answer, e.g. "fifo:error", "match=evt_1:reply", "generated"."""

    path: str
    headers: dict[str, str]
    body: Any
    status: int | None = None
    response_body: Any = None
    at: float = field(default_factory=time.time)
    method: str = "POST"
    response_headers: dict[str, str] = field(default_factory=dict)
    step: str | None = None
    done_at: float | None = None  # when the answer was ready (None while in flight)

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


class _Server(ThreadingHTTPServer):
    request_queue_size = 256
    daemon_threads = True
    allow_reuse_address = True

    def __init__(self, fake: FakeMessagesAPI, addr: tuple[str, int]) -> None:
        self.fake = fake
        super().__init__(addr, Handler)

    def handle_error(self, request: Any, client_address: Any) -> None:
        exc = sys.exc_info()[1]
        if isinstance(exc, OSError):  # the client gave up / the server is stopping
            return
        super().handle_error(request, client_address)


class FakeMessagesAPI:
    """The fake server. Thread-safe; `stop()` returns promptly even with slow()/hang() in flight.

    api_key: when set, only this key is accepted (401 otherwise); any non-empty key otherwise.
    strict_schemas: 400 for structured-output / strict-tool schemas the real grammar rejects
    (objects without additionalProperties:false, minimum/maxLength/..., minItems > 1, unknown formats).
    """

    def __init__(
        self,
        *,
        host: str = "127.0.0.1",
        port: int = 0,
        api_key: str | None = None,
        strict_schemas: bool = True,
        organization_id: str = "5d1e6f8a-0b1c-4d2e-8f3a-4b5c6d7e8f90",
    ) -> None:
        self.host, self.port = host, port
        self.api_key = api_key
        self.strict_schemas = strict_schemas
        self.organization_id = organization_id
        self.stopping = threading.Event()
        #: held() calls wait for this (open_gate)
        self.gate = threading.Event()
        self._lock = threading.RLock()
        self._queue: deque[Step] = deque()
        self._keyed: dict[str, deque[Step]] = {}
        self._default: Step | None = None
        self._log: list[RecordedRequest] = []
        self._cache: dict[str, float] = {}  # prefix hash -> expiry (monotonic)
        self._scenario_counts: dict[tuple[str, str], int] = {}
        self._window = (0, 0, 0)  # (minute, requests, tokens) for the rate-limit headers
        self._model_steps: dict[str, deque[Step]] = {}
        self._model_default: dict[str, Step] = {}
        #: per-minute limits the headers report; enforced (429 + retry-after) when `enforce_limits`
        self.limits = {"requests": 4000, "tokens": 2_000_000, "input": 1_600_000, "output": 400_000}
        self.enforce_limits = False
        self.batches = BatchStore(self)
        self._server: _Server | None = None
        self._thread: threading.Thread | None = None
        self._conns: set[socket.socket] = set()

    # ------------------------------------------------------------------------------ lifecycle
    def start(self) -> FakeMessagesAPI:
        if self._server is not None:
            return self
        self.stopping.clear()
        self._server = _Server(self, (self.host, self.port))
        self.port = self._server.server_address[1]
        self._thread = threading.Thread(
            target=self._server.serve_forever,
            kwargs={"poll_interval": 0.05},
            name="fake-messages-api",
            daemon=True,
        )
        self._thread.start()
        return self

    def stop(self) -> None:
        server, self._server = self._server, None
        if server is None:
            return
        self.stopping.set()  # wakes every slow()/hang()
        server.shutdown()
        with self._lock:
            conns = list(self._conns)
        for conn in conns:  # unblock keep-alive readers
            with contextlib.suppress(OSError):
                conn.shutdown(socket.SHUT_RDWR)
        server.server_close()
        if self._thread is not None:
            self._thread.join(timeout=5)

    def __enter__(self) -> FakeMessagesAPI:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    @property
    def base_url(self) -> str:
        return f"http://{self.host}:{self.port}"

    # ------------------------------------------------------------------------------ scripting
    def enqueue(self, *steps: Step) -> None:
        """Append steps to the global FIFO (one consumed per valid /v1/messages call)."""
        with self._lock:
            self._queue.extend(_check_steps(steps))

    def enqueue_for(self, match: str, *steps: Step) -> None:
        """Steps consumed only by requests whose raw JSON body contains `match` (checked first)."""
        if not match:
            raise ValueError("match must be a non-empty string")
        with self._lock:
            self._keyed.setdefault(match, deque()).extend(_check_steps(steps))

    def set_default(self, step: Step | None) -> None:
        """Outcome when no scripted step applies; None restores the generated default."""
        with self._lock:
            self._default = None if step is None else _check_steps([step])[0]

    def enqueue_for_model(self, model: str, *steps: Step) -> None:
        """Steps consumed only by requests for `model` (checked first, before `enqueue_for`)."""
        with self._lock:
            self._model_steps.setdefault(model, deque()).extend(_check_steps(steps))

    def set_model_default(self, model: str, step: Step | None) -> None:
        """Every request for `model` gets `step` (e.g. overloaded()) until reset with None."""
        with self._lock:
            if step is None:
                self._model_default.pop(model, None)
            else:
                self._model_default[model] = _check_steps([step])[0]

    def take_for_model(self, model: str) -> tuple[Step | None, str]:
        with self._lock:
            steps = self._model_steps.get(model)
            if steps:
                return steps.popleft(), f"model={model}"
            if model in self._model_default:
                return self._model_default[model], f"model-default={model}"
        return None, ""

    def pending(self, match: str | None = None) -> int:
        """Steps not consumed yet (global FIFO, or those of one `match`)."""
        with self._lock:
            if match is None:
                return len(self._queue)
            return len(self._keyed.get(match, ()))

    def open_gate(self) -> None:
        """Let every held() call (and every later one) answer."""
        self.gate.set()

    def in_flight(self, path: str = "/v1/messages") -> int:
        """Calls to ``path`` received and not answered yet."""
        return sum(1 for r in self.calls_to(path) if r.status is None)

    def reset(self) -> None:
        """Forget scripted steps, the default, the log, the prompt cache and scenario counters."""
        with self._lock:
            self._queue.clear()
            self._keyed.clear()
            self._default = None
            self._log.clear()
            self._cache.clear()
            self._scenario_counts.clear()
            self._model_steps.clear()
            self._model_default.clear()

    # ------------------------------------------------------------------------------ recording
    @property
    def requests(self) -> list[RecordedRequest]:
        """A snapshot of every recorded call, oldest first."""
        with self._lock:
            return list(self._log)

    def calls_to(self, path: str) -> list[RecordedRequest]:
        """Recorded calls whose path (without query string) equals `path`."""
        return [r for r in self.requests if r.path == path]

    def wait_for_calls(self, path: str, count: int, timeout: float = 5.0) -> list[RecordedRequest]:
        """Block until at least `count` calls to `path` arrived (TimeoutError otherwise)."""
        deadline = time.monotonic() + timeout
        while len(calls := self.calls_to(path)) < count:
            if time.monotonic() > deadline:
                raise TimeoutError(f"{len(calls)} of {count} calls to {path} after {timeout}s")
            time.sleep(0.01)
        return calls

    # ------------------------------------------------------------------------------ internals (handler)
    def track_conn(self, conn: socket.socket, add: bool) -> None:
        with self._lock:
            if add:
                self._conns.add(conn)
            else:
                self._conns.discard(conn)

    def new_record(self, *, method: str, path: str, headers: dict[str, str], body: Any) -> RecordedRequest:
        rec = RecordedRequest(path=path, headers=headers, body=body, method=method)
        with self._lock:
            self._log.append(rec)
        return rec

    def complete_record(self, rec: RecordedRequest, out: Outcome) -> None:
        with self._lock:
            rec.status, rec.response_body, rec.response_headers = out.status, out.parsed, dict(out.headers)
            rec.done_at = time.time()

    def max_in_flight(self, path: str, match: str | None = None) -> int:
        """The most calls to ``path`` (with ``match`` in their JSON body) the fake was serving at once."""
        with self._lock:
            recs = [r for r in self._log if r.path == path and (match is None or match in json.dumps(r.body))]
        # at equal times an answer ends before the next call starts (-1 sorts before +1)
        edges = sorted([(r.at, 1) for r in recs] + [(r.done_at or float("inf"), -1) for r in recs])
        most = now = 0
        for _, step in edges:
            now += step
            most = max(most, now)
        return most

    def take_keyed(self, raw_body: str) -> tuple[Step | None, str]:
        with self._lock:
            for match, steps in self._keyed.items():
                if steps and match in raw_body:
                    return steps.popleft(), f"match={match}"
        return None, ""

    def take_fifo_or_default(self) -> tuple[Step | None, str]:
        with self._lock:
            if self._queue:
                return self._queue.popleft(), "fifo"
            if self._default is not None:
                return self._default, "default"
        return None, "generated"

    def scenario_attempt(self, scenario: str, key: str) -> int:
        with self._lock:
            n = self._scenario_counts.get((scenario, key), 0)
            self._scenario_counts[(scenario, key)] = n + 1
            return n

    def cache_lookup(self, prefix: str, ttl_seconds: float) -> bool:
        """True on a cache hit; records/refreshes the prefix either way."""
        digest = hashlib.sha256(prefix.encode()).hexdigest()
        now = time.monotonic()
        with self._lock:
            hit = self._cache.get(digest, 0.0) > now
            self._cache[digest] = max(self._cache.get(digest, 0.0), now + ttl_seconds)
            return hit

    def over_limit(self) -> float | None:
        """With `enforce_limits`: seconds until the minute window resets if its request limit is used up."""
        return _ratelimits.over_limit(self)

    def rate_limit_headers(self, tokens: int, limited: bool) -> dict[str, str]:
        """The anthropic-ratelimit-* headers of one answer (and the window's count)."""
        return _ratelimits.headers(self, tokens, limited)

    def control(self, method: str, path: str, body: Any) -> Outcome:
        """The /_fake/* endpoints (out-of-process control)."""
        if method == "GET" and path == "/_fake/log":
            return Outcome.json(200, [r.to_dict() for r in self.requests])
        if method == "GET" and path == "/_fake/health":
            return Outcome.json(200, {"ok": True, "pending": self.pending()})
        if method == "POST" and path == "/_fake/reset":
            self.reset()
            return Outcome.json(200, {"ok": True})
        try:
            if method == "POST" and path == "/_fake/enqueue":
                match = body.get("match") if isinstance(body, dict) else None
                items = body.get("steps", []) if isinstance(body, dict) else body
                steps = [Step.from_dict(d) for d in items]
                if match:
                    self.enqueue_for(str(match), *steps)
                else:
                    self.enqueue(*steps)
                return Outcome.json(200, {"ok": True, "queued": len(steps)})
            if method == "POST" and path == "/_fake/default":
                self.set_default(Step.from_dict(body) if body else None)
                return Outcome.json(200, {"ok": True})
        except (TypeError, ValueError, AttributeError) as exc:
            return Outcome.json(400, {"ok": False, "error": str(exc)})
        return Outcome.json(404, {"ok": False, "error": f"no control endpoint {method} {path}"})


def _check_steps(steps: Any) -> list[Step]:
    out = list(steps)
    for s in out:
        if not isinstance(s, Step):
            raise TypeError(f"expected Step, got {type(s).__name__} (use reply(...), error(...), ...)")
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m tests.fakes.messages_api", description=__doc__)
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=0)
    parser.add_argument("--api-key", default=None)
    parser.add_argument("--no-strict-schemas", action="store_true")
    args = parser.parse_args(argv)
    done = threading.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda *_: done.set())
    fake = FakeMessagesAPI(
        host=args.host, port=args.port, api_key=args.api_key, strict_schemas=not args.no_strict_schemas
    ).start()
    print(f"READY {fake.base_url}", flush=True)
    while not done.wait(0.2):
        pass
    fake.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())
