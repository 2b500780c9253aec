"""Real parts for acceptance tests: uvicorn serving the app, the procrastinate worker, a receiver.

Nothing of ours is mocked: the web process is uvicorn on 127.0.0.1, the worker is hookline's
supervised procrastinate worker (in-process task or a child process), the model is the real
anthropic SDK talking to tests.fakes.messages_api over HTTP.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import socket
import subprocess
import sys
import threading
import time
from collections.abc import AsyncIterator, Mapping
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import httpx
import psycopg
import uvicorn

from app.core.config import Config, parse_config
from app.core.settings import Settings
from app.web.app import create_app
from app.web.server import server_config

ROOT = Path(__file__).resolve().parents[1]
TERMINAL = ("succeeded", "dead", "skipped")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def make_settings(db_url: str | None, **over: Any) -> Settings:
    base: dict[str, Any] = {
        "database_url": db_url,
        "anthropic_api_key": None,
        "anthropic_base_url": None,
        "worker_concurrency": 4,
        "worker_poll_interval": 0.5,
        "shutdown_timeout": 5.0,
        "llm_timeout": 10.0,
        "llm_max_retries": 0,
        "db_timeout": 2.0,
        "retry_after_seconds": 2,
        "stalled_after": 2.0,
        "port": 0,
    }
    base.update(over)
    return Settings(**base)


@contextlib.asynccontextmanager
async def web_server(settings: Settings, config: Config, **uvicorn_options: Any) -> AsyncIterator[str]:
    """uvicorn serving hookline on a free 127.0.0.1 port; yields the base URL. ``uvicorn_options`` go to
    its config, as ``hookline web`` gives ``timeout_graceful_shutdown``."""
    port = free_port()
    cfg = server_config(
        create_app(settings, config), settings, host="127.0.0.1", port=port, lifespan="on", **uvicorn_options
    )
    server = uvicorn.Server(cfg)
    task = asyncio.create_task(server.serve())
    for _ in range(200):
        if server.started:
            break
        if task.done():
            task.result()
        await asyncio.sleep(0.02)
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        await asyncio.wait_for(task, 10)


@contextlib.asynccontextmanager
async def worker_task(settings: Settings, config: Config, **llm_kwargs: Any) -> AsyncIterator[asyncio.Event]:
    """hookline's supervised procrastinate worker as a task of the test's loop."""
    from worker.main import run_worker

    stop = asyncio.Event()
    dsn = settings.dsn()
    assert dsn is not None
    before = await _registered_workers(dsn)
    task = asyncio.create_task(run_worker(settings, config, install_signals=False, stop=stop, **llm_kwargs))
    deadline = time.monotonic() + 30
    while await _registered_workers(dsn) <= before:  # ready: procrastinate registered the worker
        if task.done():
            task.result()
        if time.monotonic() > deadline:
            raise AssertionError("the worker did not register within 30 s")
        await asyncio.sleep(0.02)
    try:
        yield stop
    finally:
        stop.set()
        await asyncio.wait_for(task, 20)


async def _registered_workers(dsn: str) -> int:
    async with await psycopg.AsyncConnection.connect(dsn) as conn:
        cur = await conn.execute("SELECT count(*) FROM procrastinate_workers")
        row = await cur.fetchone()
    return int(row[0]) if row else 0


class WorkerProcess:
    """``python -m worker`` as a child process (for SIGKILL and restart tests)."""

    def __init__(self, env: Mapping[str, str], log_path: Path) -> None:
        self.log_path = log_path
        self._log = open(log_path, "ab")  # noqa: SIM115 - closed in stop()
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "worker"],
            env={**os.environ, **env},
            cwd=ROOT,
            stdout=self._log,
            stderr=subprocess.STDOUT,
        )

    def kill(self) -> None:
        self.proc.kill()
        self.proc.wait(10)
        self._log.close()

    def stop(self, timeout: float = 20) -> int:
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(5)
        self._log.close()
        return self.proc.returncode

    def output(self) -> str:
        return self.log_path.read_text(errors="replace")


@dataclass
class Received:
    path: str
    headers: dict[str, str]
    body: bytes

    def json(self) -> Any:
        return json.loads(self.body)


@dataclass
class Receiver:
    """A local HTTP endpoint standing in for the user's CRM: records what http actions POST."""

    status: int = 200
    statuses: list[int] = field(default_factory=list)
    received: list[Received] = field(default_factory=list)
    #: the body of every answer
    answer: bytes = b'{"ok":true}'

    def __post_init__(self) -> None:
        outer = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                length = int(self.headers.get("content-length", "0"))
                body = self.rfile.read(length)
                outer.received.append(Received(self.path, {k.lower(): v for k, v in self.headers.items()}, body))
                code = outer.statuses.pop(0) if outer.statuses else outer.status
                self.send_response(code)
                self.send_header("content-type", "application/json")
                self.end_headers()
                self.wfile.write(outer.answer)

            def log_message(self, *args: Any) -> None:
                pass

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        # a short poll interval: shutdown() waits for the loop to look, and tests close one each
        self._thread = threading.Thread(target=self._server.serve_forever, kwargs={"poll_interval": 0.02}, daemon=True)
        self._thread.start()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self._server.server_address[1]}/hook"

    def close(self) -> None:
        self._server.shutdown()
        self._server.server_close()


def config_from(toml_like: dict[str, Any]) -> Config:
    return parse_config(toml_like)


async def wait_for_status(
    db_url: str, event_id: int, statuses: tuple[str, ...] = TERMINAL, timeout: float = 20.0
) -> dict[str, Any]:
    deadline = time.monotonic() + timeout
    row: dict[str, Any] | None = None
    while time.monotonic() < deadline:
        async with await psycopg.AsyncConnection.connect(db_url) as conn:
            cur = await conn.execute(
                "SELECT id, status, attempts, last_error, detail, dry_run FROM hookline.events WHERE id = %s",
                (event_id,),
            )
            rec = await cur.fetchone()
        if rec is not None:
            row = dict(zip(("id", "status", "attempts", "last_error", "detail", "dry_run"), rec, strict=True))
            if row["status"] in statuses:
                return row
        await asyncio.sleep(0.05)
    raise AssertionError(f"event {event_id} did not reach {statuses} in {timeout}s; last seen {row}")


def rows(db_url: str, sql: str, *params: Any) -> list[tuple[Any, ...]]:
    with psycopg.connect(db_url) as conn:
        return conn.execute(sql, params).fetchall()


async def post(client: httpx.AsyncClient, url: str, body: bytes, headers: Mapping[str, str]) -> httpx.Response:
    return await client.post(url, content=body, headers=dict(headers))


def scans_and_reads(cur: psycopg.Cursor[Any], relation: str) -> tuple[int, int]:
    """``relation`` in the cursor's transaction so far (``pg_stat_xact_user_tables``): sequential scans,
    and rows read by scans of either kind."""
    got = cur.execute(
        "SELECT seq_scan, seq_tup_read + coalesce(idx_tup_fetch, 0) FROM pg_stat_xact_user_tables "
        "WHERE relid = %s::regclass",
        (relation,),
    ).fetchone()
    assert got is not None
    return int(got[0]), int(got[1])


def refuse_rows(
    db_url: str,
    name: str,
    table: str,
    *,
    event: str = "INSERT",
    when: str = "true",
    times: int = 1,
    errcode: str = "raise_exception",
) -> None:
    """The next ``times`` rows of ``event`` on ``table`` for which ``when`` holds (an expression over
    NEW) fail inside Postgres, with SQLSTATE ``errcode`` (a condition name): a real error raised by the
    database, from a trigger of the real table. The rows it was asked about count in the sequence
    ``name`` (``SELECT nextval(name)`` afterwards is one more than that count)."""
    with psycopg.connect(db_url, autocommit=True) as conn:
        conn.execute(f"CREATE SEQUENCE {name}")
        conn.execute(f"""
            CREATE FUNCTION {name}() RETURNS trigger LANGUAGE plpgsql AS $$
            BEGIN
                IF ({when}) AND nextval('{name}') <= {int(times)} THEN
                    RAISE EXCEPTION 'injected by the test ({name})' USING ERRCODE = '{errcode}';
                END IF;
                RETURN NEW;
            END $$""")
        conn.execute(f"CREATE TRIGGER {name} BEFORE {event} ON {table} FOR EACH ROW EXECUTE FUNCTION {name}()")
