"""``hookline dev``: embedded Postgres (unless DATABASE_URL), migrations, web and worker in one terminal.

The web and worker run as child processes, exactly as the Procfile starts them; their output is
interleaved with a prefix. Ctrl-C (or SIGTERM, SIGHUP, SIGQUIT) stops both gracefully, then the embedded Postgres.
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Mapping
from typing import IO

from app.cli import embedded
from app.cli.release import release
from app.core.config import Config, environment_problems, load_config
from app.core.settings import Settings

_COLORS = {"web": "\033[36m", "worker": "\033[35m"}


def _pump(name: str, stream: IO[bytes], color: bool) -> None:
    prefix = f"{_COLORS.get(name, '')}{name:>6} |\033[0m " if color else f"{name:>6} | "
    for raw in iter(stream.readline, b""):
        sys.stdout.write(prefix + raw.decode("utf-8", "replace"))
        sys.stdout.flush()


def _follow_events(url: str, config: Config, stop: threading.Event, color: bool) -> None:
    """One readable line per event transition (hookline tail), until ``stop``."""
    from app.cli.tail import follow

    prefix = f"\033[33m{'events':>6} |\033[0m " if color else f"{'events':>6} | "

    def emit(line: str) -> None:
        sys.stdout.write(prefix + line + "\n")
        sys.stdout.flush()

    async def run() -> None:
        done = asyncio.Event()
        loop = asyncio.get_running_loop()
        threading.Thread(target=lambda: (stop.wait(), loop.call_soon_threadsafe(done.set)), daemon=True).start()
        await follow(url, emit, config=config, stop=done)

    with contextlib.suppress(Exception):
        asyncio.run(run())


def port_in_use(host: str, port: int) -> bool:
    """Whether another process listens on ``host:port`` already (binding as uvicorn does, with
    SO_REUSEADDR, so a closed connection's TIME_WAIT does not count)."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    with socket.socket(family, socket.SOCK_STREAM) as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            s.bind((host, port))
        except OSError as e:
            return e.errno == errno.EADDRINUSE
    return False


def run_dev(settings: Settings, environ: Mapping[str, str], *, simulate_model: bool = False) -> int:
    config = load_config(settings.config)  # fail early, with the key that is wrong
    if port_in_use(settings.host, settings.port):  # before the database starts: nothing to undo
        print(
            f"hookline dev: port {settings.port} is in use (another hookline dev, or another server); stop it, "
            f"or run on another port: PORT={settings.port + 1} hookline dev",
            file=sys.stderr,
        )
        return 2
    for problem in environment_problems(config, environ, settings.public_url):
        print(f"warning: {problem}", file=sys.stderr)
    url, server = embedded.resolve_database_url(settings.dsn(), settings.home)
    applied = release(url, config, lambda line: print(f"hookline dev: {line}", flush=True))
    print(
        f"hookline dev: database {'embedded in ' + str(settings.home / 'pg') if server else 'from DATABASE_URL'}, "
        f"{len(applied)} migration(s) applied",
        flush=True,
    )
    env = {**environ, "DATABASE_URL": url, "PYTHONUNBUFFERED": "1"}
    color = sys.stdout.isatty()
    procs: dict[str, subprocess.Popen[bytes]] = {}
    worker = [sys.executable, "-m", "app.cli", "worker", *(["--simulate-model"] if simulate_model else [])]
    commands = {"web": [sys.executable, "-m", "app.cli", "web"], "worker": worker}
    stopping = threading.Event()
    follower = threading.Thread(target=_follow_events, args=(url, config, stopping, color), daemon=True)

    def stop(*_: object) -> None:
        stopping.set()

    # a closed terminal (SIGHUP) or SIGQUIT stops everything too: the children run in sessions of their own
    old = {sig: signal.signal(sig, stop) for sig in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP, signal.SIGQUIT)}
    try:
        for name, cmd in commands.items():
            procs[name] = subprocess.Popen(
                cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, start_new_session=True
            )
            assert procs[name].stdout is not None
            threading.Thread(target=_pump, args=(name, procs[name].stdout, color), daemon=True).start()
        follower.start()
        model = "simulated model (answers made up from each output schema)" if simulate_model else None
        print(f"hookline dev: web on http://127.0.0.1:{settings.port}  (Ctrl-C stops everything)", flush=True)
        if model:
            print(f"hookline dev: {model}; calls are stored as simulated and never priced", flush=True)
        while not stopping.is_set():
            for name, proc in procs.items():
                if proc.poll() is not None:
                    print(f"hookline dev: {name} exited with status {proc.returncode}; stopping", file=sys.stderr)
                    stopping.set()
            stopping.wait(0.2)
    finally:
        for proc in procs.values():
            if proc.poll() is None:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(proc.pid, signal.SIGTERM)
        deadline = time.monotonic() + settings.shutdown_timeout + 5
        for proc in procs.values():
            try:
                proc.wait(max(0.1, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(proc.pid, signal.SIGKILL)
        stopping.set()
        if follower.is_alive():
            follower.join(5)
        if server is not None:
            embedded.stop(server)
        for sig, handler in old.items():
            signal.signal(sig, handler)
    codes = [p.returncode for p in procs.values()]
    return 0 if all(c in (0, -signal.SIGTERM, None) for c in codes) else 1
