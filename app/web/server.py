"""uvicorn as hookline serves it: connection-level limits uvicorn itself does not enforce.

uvicorn (httptools) has a keep-alive timeout, but no header timeout (a client that never finishes
its headers holds the connection forever), no body timeout, no header-size or header-count limit
(httptools accumulates a 64 MB header before any callback), and ``limit_concurrency`` only answers
503 once a request's headers are complete, so idle connections still use up file descriptors.
:class:`GuardedProtocol` adds all of these at the protocol level, before the ASGI app runs:

- more than ``max_connections`` open connections: the new one gets 503 and is closed at once;
- headers not complete ``header_timeout`` s after connect (or after the previous response): 408;
- body not complete ``body_timeout`` s after its headers: 408 (or close, if a response started);
- request line + headers over ``max_header_bytes``, or more than ``max_headers`` headers: 431.

It also sends a response's head and body in one write (:class:`OneWrite`): uvicorn writes the status
line and headers as soon as the app starts its response, then the body, so a small answer cost two
``send`` calls (and two segments) where one will do.

Every refusal is one WARNING line without caller-controlled text.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import functools
import logging
import resource
import socket
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import uvicorn
from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol
from uvicorn.supervisors import Multiprocess

from app.core.settings import Settings

log = logging.getLogger("hookline.web")

#: A timeout timer firing this much before its deadline counts as on time (event loops round timers).
_EARLY = 0.005

#: After a refusal, how long the connection keeps reading (and discarding) before it is closed.
LINGER_SECONDS = 2.0

_REASONS = {
    408: b"Request Timeout",
    431: b"Request Header Fields Too Large",
    503: b"Service Unavailable",
}


_last_warning: dict[str, tuple[float, int]] = {}


def _warn(what: str, *args: object) -> None:
    """At most one WARNING per second per kind of refusal, with how many were folded into it: a
    flood of refused connections cannot become a flood of log lines."""
    now = time.monotonic()
    last, folded = _last_warning.get(what, (0.0, 0))
    if now - last < 1.0:
        _last_warning[what] = (last, folded + 1)
        return
    _last_warning[what] = (now, 0)
    suffix = f" (and {folded} more in the last second)" if folded else ""
    log.warning(what % args + suffix)


def _raw_response(status: int, text: str) -> bytes:
    body = text.encode("ascii")
    return (
        b"HTTP/1.1 %d %s\r\ncontent-type: text/plain; charset=utf-8\r\ncontent-length: %d\r\n"
        b"connection: close\r\n\r\n%s" % (status, _REASONS[status], len(body), body)
    )


class OneWrite:
    """The transport a request's response cycle writes to: what it writes during one turn of the event
    loop goes to the socket in one ``write``.

    A write is held until the next write (they go together) or, at the latest, the next turn of the
    loop (``call_soon``): a plain response's head and body leave together, while a streamed response
    still sends its head at once even if its first chunk comes later. Anything else (``close``,
    ``is_closing``, ``write_eof`` …) goes to the real transport, after what is held.
    """

    __slots__ = ("_held", "_loop", "transport")

    def __init__(self, transport: asyncio.Transport, loop: asyncio.AbstractEventLoop) -> None:
        self.transport = transport
        self._loop = loop
        self._held: bytes | None = None

    def write(self, data: bytes | bytearray | memoryview) -> None:
        held = self._held
        if held is None:
            self._held = bytes(data)
            self._loop.call_soon(self.flush)
        else:
            self._held = None
            self.transport.write(held + data)

    def flush(self) -> None:
        """Write what is held (before the connection is used any other way)."""
        held = self._held
        if held is not None:
            self._held = None
            if not self.transport.is_closing():
                self.transport.write(held)

    def close(self) -> None:
        self.flush()
        self.transport.close()

    def write_eof(self) -> None:
        self.flush()
        self.transport.write_eof()

    def __getattr__(self, name: str) -> Any:
        return getattr(self.transport, name)


class GuardedProtocol(HttpToolsProtocol):
    """HttpToolsProtocol with header/body timeouts, header limits and a connection cap."""

    header_timeout: float = 10.0
    body_timeout: float = 30.0
    max_header_bytes: int = 32768
    max_headers: int = 100
    max_connections: int = 1000

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._timer: asyncio.TimerHandle | None = None
        self._deadline: float | None = None  # when the awaited part of the request times out
        self._what = "headers"
        self._in_headers = True
        self._header_bytes = 0
        self._header_count = 0
        self._refused: tuple[int, str] | None = None
        self._out: OneWrite | None = None

    # --- connection -----------------------------------------------------------------------
    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        if len(self.connections) > self.max_connections:
            _warn("connection refused: %d open connections (HOOKLINE_MAX_CONNECTIONS)", len(self.connections) - 1)
            self._refused = (503, "too many open connections")
            transport.write(_raw_response(503, "too many open connections; retry later"))
            transport.close()  # no lingering: this path must free its file descriptor at once
            return
        self._out = OneWrite(transport, self.loop)
        self._arm(self.header_timeout, "headers")

    def connection_lost(self, exc: Exception | None) -> None:
        self._stop_timer()
        super().connection_lost(exc)

    def shutdown(self) -> None:
        """uvicorn begins a graceful shutdown: tell the app (its lifespan shutdown comes only after every
        connection has closed), so that long-lived responses such as the dashboard's stream end now."""
        stopping = getattr(self.app_state.get("hookline"), "stopping", None)
        if isinstance(stopping, asyncio.Event):
            stopping.set()
        super().shutdown()

    def data_received(self, data: bytes) -> None:
        if self._out is not None:
            self._out.flush()  # a held response goes before anything this data makes uvicorn write
        if self._refused is not None or self.transport.is_closing():
            return
        if self._in_headers:
            self._header_bytes += len(data)
        super().data_received(data)
        if self._refused is None and self._in_headers and self._header_bytes > self.max_header_bytes:
            self._refused = (431, "request headers are too large")
        if self._refused is not None and not self.transport.is_closing():
            status, text = self._refused
            _warn("request refused: %s (%d)", text, status)
            self._refuse(status, text)

    # --- parser callbacks -------------------------------------------------------------------
    def on_header(self, name: bytes, value: bytes) -> None:
        self._header_count += 1
        if self._header_count > self.max_headers:
            self._refused = (431, "too many request headers")
            return
        super().on_header(name, value)

    def on_headers_complete(self) -> None:
        if self._refused is not None:
            return
        size = len(self.url) + sum(len(n) + len(v) + 4 for n, v in self.headers)
        if size > self.max_header_bytes:
            self._refused = (431, "request headers are too large")
            return
        self._in_headers = False
        self._arm(self.body_timeout, "body")
        super().on_headers_complete()
        if self.cycle is not None and self._out is not None:
            self.cycle.transport = self._out  # type: ignore[assignment]  # the one write per turn

    def on_body(self, body: bytes) -> None:
        if self._refused is None:
            super().on_body(body)

    def on_message_complete(self) -> None:
        if self._refused is not None:
            return
        self._disarm()
        super().on_message_complete()

    def on_response_complete(self) -> None:
        super().on_response_complete()
        if not self.transport.is_closing():  # the next request on this kept-alive connection
            self._in_headers, self._header_bytes, self._header_count = True, 0, 0
            self._arm(self.header_timeout, "headers")

    # --- helpers ----------------------------------------------------------------------------
    def _arm(self, seconds: float, what: str) -> None:
        """Time out ``what`` in ``seconds``: a deadline, which the connection's one timer checks.

        Each request moves the deadline three times (headers, body, the next request's headers); the
        timer is only rescheduled when it would fire too late, so a busy connection schedules about
        one timer per timeout period instead of two per request (and cancels none)."""
        self._deadline = self.loop.time() + seconds
        self._what = what
        timer = self._timer
        if timer is not None and timer.when() > self._deadline:
            timer.cancel()
            timer = None
        if timer is None:
            self._timer = self.loop.call_at(self._deadline, self._check)

    def _disarm(self) -> None:
        self._deadline = None  # the timer, if it fires, finds nothing to time out

    def _stop_timer(self) -> None:
        self._deadline = None
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None

    def _check(self) -> None:
        self._timer = None
        deadline = self._deadline
        if deadline is None:
            return
        if self.loop.time() + _EARLY < deadline:  # the deadline moved on since this timer was set
            self._timer = self.loop.call_at(deadline, self._check)
            return
        self._deadline = None
        self._timed_out(self._what)

    def _timed_out(self, what: str) -> None:
        if self.transport.is_closing():
            return
        if what == "headers" and self._header_bytes == 0 and self.cycle is not None:
            self.transport.close()  # an idle kept-alive connection: close quietly
            return
        _warn("request refused: %s not received in time (408)", what)
        if self.cycle is not None and self.cycle.response_started and not self.cycle.response_complete:
            self.transport.close()  # this request's answer has begun: a 408 cannot follow it
        else:
            self._refuse(408, f"request {what} not received in time")

    def _refuse(self, status: int, text: str) -> None:
        self._stop_timer()
        if self._out is not None:
            self._out.flush()
        if self.cycle is not None and not self.cycle.response_complete:
            self.cycle.disconnected = True
            self.cycle.message_event.set()
        self._refused = self._refused or (status, text)
        transport = self.transport
        transport.write(_raw_response(status, text))
        if not transport.can_write_eof():
            transport.close()
            return
        # Lingering close: send FIN after the answer and discard what the client is still sending for
        # a moment, so its kernel does not answer our close with a reset that destroys the answer.
        transport.write_eof()
        with contextlib.suppress(Exception):
            transport.resume_reading()
        self.loop.call_later(LINGER_SECONDS, transport.close)


def default_max_connections() -> int:
    soft, _hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    return max(10, (soft if soft != resource.RLIM_INFINITY else 65536) - 100)


@dataclass(frozen=True)
class ConnectionLimits:
    """What uvicorn calls to make each connection's protocol: a :class:`GuardedProtocol` carrying
    ``settings``' limits. A plain value rather than a class made at run time, so that a ``uvicorn.Config``
    holding it can be pickled to the processes of ``hookline web --processes N``."""

    header_timeout: float
    body_timeout: float
    max_header_bytes: int
    max_headers: int
    max_connections: int

    @classmethod
    def of(cls, settings: Settings) -> ConnectionLimits:
        return cls(
            header_timeout=settings.header_timeout,
            body_timeout=settings.body_timeout,
            max_header_bytes=settings.max_header_bytes,
            max_headers=settings.max_headers,
            max_connections=settings.max_connections or default_max_connections(),
        )

    def __call__(self, **kwargs: Any) -> GuardedProtocol:
        return _protocol_class(self)(**kwargs)


@functools.cache
def _protocol_class(limits: ConnectionLimits) -> type[GuardedProtocol]:
    """The protocol class of a set of limits, made once per process."""
    return type("HooklineProtocol", (GuardedProtocol,), dataclasses.asdict(limits))


def server_config(app: Any, settings: Settings, *, host: str, port: int, **kwargs: Any) -> uvicorn.Config:
    """The uvicorn.Config of ``hookline web`` (tests and bench serve the app the same way)."""
    kwargs.setdefault("log_config", None)
    kwargs.setdefault("access_log", False)
    # Given, so uvicorn never reads WEB_CONCURRENCY (Heroku's buildpack sets it for gunicorn; uvicorn's int()
    # of "auto" or "" stopped `hookline web` with a traceback): processes are HOOKLINE_WEB_PROCESSES.
    kwargs.setdefault("workers", 1)
    return uvicorn.Config(
        app,
        host=host,
        port=port,
        http=ConnectionLimits.of(settings),  # type: ignore[arg-type]  # a protocol factory: uvicorn only calls it
        timeout_keep_alive=settings.keepalive_timeout,  # type: ignore[arg-type]  # used as call_later's delay
        proxy_headers=False,  # X-Forwarded-For is read by the app, only from HOOKLINE_TRUSTED_PROXIES
        server_header=False,
        **kwargs,
    )


class Supervisor(Multiprocess):
    """uvicorn's supervisor of ``hookline web --processes N`` (what ``uvicorn --workers`` runs), which
    also says when a process it started is gone without stopping cleanly: killed, or hung and killed
    by it. ``on_exit`` gets that process's pid (a process that stops cleanly cleans up after itself)."""

    def __init__(self, config: uvicorn.Config, sockets: list[socket.socket], *, on_exit: Callable[[int], None]) -> None:
        super().__init__(config, sockets)
        self._on_exit = on_exit

    def keep_subprocess_alive(self) -> None:
        before = [process.pid for process in self.processes]
        super().keep_subprocess_alive()
        kept = {process.pid for process in self.processes}
        for pid in before:
            if pid is not None and pid not in kept:
                self._on_exit(pid)
