"""Child processes of ``hookline bench``: started in their own session, always stopped on the way out."""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import IO

from app.core.errors import HooklineError


class BenchError(HooklineError):
    code = "bench_error"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class Children:
    """Every process the bench starts; :meth:`stop_all` ends them (SIGTERM to the group, then SIGKILL)."""

    def __init__(self, logdir: Path) -> None:
        self.logdir = logdir
        self.procs: dict[str, subprocess.Popen[bytes]] = {}
        self._logs: dict[str, IO[bytes]] = {}

    def start(self, name: str, argv: Sequence[str], env: Mapping[str, str]) -> subprocess.Popen[bytes]:
        if name in self.procs:
            self.stop(name)
        log = open(self.logdir / f"{name}.log", "ab")  # noqa: SIM115 - closed in stop()
        self._logs[name] = log
        proc = subprocess.Popen(
            [sys.executable, *argv],
            env=dict(env),
            stdout=log,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            start_new_session=True,
        )
        self.procs[name] = proc
        return proc

    def run(self, name: str, argv: Sequence[str], env: Mapping[str, str], timeout: float) -> str:
        """Run a child to its end; returns its stdout (stderr goes to its log)."""
        log = open(self.logdir / f"{name}.log", "ab")  # noqa: SIM115 - closed below
        self._logs[name] = log
        proc = subprocess.Popen(
            [sys.executable, *argv],
            env=dict(env),
            stdout=subprocess.PIPE,
            stderr=log,
            stdin=subprocess.DEVNULL,
            start_new_session=True,
        )
        self.procs[name] = proc
        try:
            out, _ = proc.communicate(timeout=timeout)
        except subprocess.TimeoutExpired:
            raise BenchError(f"{name} did not finish within {timeout:.0f}s") from None
        finally:
            self.stop(name)
        if proc.returncode != 0:
            raise BenchError(f"{name} exited with status {proc.returncode}: {self.tail(name)}")
        return out.decode("utf-8", "replace")

    def alive(self, name: str) -> bool:
        proc = self.procs.get(name)
        return proc is not None and proc.poll() is None

    def stop(self, name: str, timeout: float = 15.0) -> int | None:
        proc = self.procs.pop(name, None)
        if proc is not None:
            if proc.poll() is None:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(proc.pid, signal.SIGTERM)
                try:
                    proc.wait(timeout)
                except subprocess.TimeoutExpired:
                    with contextlib.suppress(ProcessLookupError):
                        os.killpg(proc.pid, signal.SIGKILL)
                    proc.wait(5)
            if proc.stdout is not None:
                proc.stdout.close()
        log = self._logs.pop(name, None)
        if log is not None:
            log.close()
        return proc.returncode if proc is not None else None

    def stop_all(self) -> None:
        for name in list(self.procs):
            self.stop(name)

    def tail(self, name: str, lines: int = 15) -> str:
        path = self.logdir / f"{name}.log"
        if not path.exists():
            return ""
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])


def wait_http(
    children: Children, name: str, url: str, *, method: str = "GET", body: bytes | None = None, timeout: float = 30.0
) -> None:
    """Until ``url`` answers 200 (the child ``name`` must stay alive meanwhile)."""
    deadline = time.monotonic() + timeout
    last = ""
    while time.monotonic() < deadline:
        if not children.alive(name):
            raise BenchError(f"{name} exited before it was ready:\n{children.tail(name)}")
        req = urllib.request.Request(url, data=body, method=method)  # noqa: S310 - http://127.0.0.1 only
        try:
            with urllib.request.urlopen(req, timeout=2) as resp:  # noqa: S310
                if resp.status == 200:
                    return
                last = f"HTTP {resp.status}"
        except urllib.error.HTTPError as e:
            last = f"HTTP {e.code}"
        except OSError as e:
            last = e.__class__.__name__
        time.sleep(0.05)
    raise BenchError(f"{name} was not ready at {url} within {timeout:.0f}s ({last}):\n{children.tail(name)}")
