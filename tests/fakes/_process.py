"""Running the fake Messages API as a separate process, driven over HTTP (/_fake/*)."""

from __future__ import annotations

import json
import os
import select
import signal
import subprocess
import sys
import time
import urllib.request
from pathlib import Path
from typing import Any

from tests.fakes._steps import Step

__all__ = ["FakeMessagesAPIProcess"]

REPO_ROOT = Path(__file__).resolve().parents[2]


class FakeMessagesAPIProcess:
    """`python -m tests.fakes.messages_api` in a child process.

    with FakeMessagesAPIProcess() as fake:
        fake.enqueue(rate_limited(retry_after_ms=10))      # same Step objects as in-process
        ... point a worker process at fake.base_url ...
        fake.log()                                           # list of RecordedRequest dicts
    """

    def __init__(self, *, port: int = 0, extra_args: list[str] | None = None, startup_timeout: float = 15.0) -> None:
        self.port = port
        self.extra_args = list(extra_args or [])
        self.startup_timeout = startup_timeout
        self.proc: subprocess.Popen[str] | None = None
        self.base_url = ""

    @property
    def pid(self) -> int:
        if self.proc is None:
            raise RuntimeError("not started")
        return self.proc.pid

    def start(self) -> FakeMessagesAPIProcess:
        argv = [sys.executable, "-m", "tests.fakes.messages_api", "--port", str(self.port), *self.extra_args]
        env = {**os.environ, "PYTHONUNBUFFERED": "1"}
        self.proc = subprocess.Popen(argv, cwd=REPO_ROOT, stdout=subprocess.PIPE, text=True, env=env)
        assert self.proc.stdout is not None
        deadline = time.monotonic() + self.startup_timeout
        line = ""
        while not line:
            left = deadline - time.monotonic()
            if left <= 0 or self.proc.poll() is not None:
                self.stop()
                raise RuntimeError(f"fake Messages API did not print READY (exit={self.proc.returncode})")
            ready, _, _ = select.select([self.proc.stdout], [], [], min(left, 0.2))
            if ready:
                line = self.proc.stdout.readline().strip()
        if not line.startswith("READY "):
            self.stop()
            raise RuntimeError(f"unexpected first line from fake: {line!r}")
        self.base_url = line.split(" ", 1)[1]
        return self

    def stop(self, timeout: float = 5.0) -> int | None:
        """SIGTERM, then SIGKILL after `timeout`; returns the exit code."""
        if self.proc is None:
            return None
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(timeout)
        if self.proc.stdout is not None:
            self.proc.stdout.close()
        return self.proc.returncode

    def kill(self) -> None:
        """SIGKILL (what chaos tests do to workers)."""
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(5)

    def __enter__(self) -> FakeMessagesAPIProcess:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    # ------------------------------------------------------------------------------ control over HTTP
    def _call(self, method: str, path: str, payload: Any = None) -> Any:
        data = None if payload is None else json.dumps(payload).encode()
        req = urllib.request.Request(self.base_url + path, data=data, method=method)  # noqa: S310 - http://127.0.0.1
        req.add_header("content-type", "application/json")
        with urllib.request.urlopen(req, timeout=10) as resp:  # noqa: S310
            return json.loads(resp.read())

    def enqueue(self, *steps: Step, match: str | None = None) -> None:
        payload: dict[str, Any] = {"steps": [s.to_dict() for s in steps]}
        if match is not None:
            payload["match"] = match
        self._call("POST", "/_fake/enqueue", payload)

    def enqueue_for(self, match: str, *steps: Step) -> None:
        self.enqueue(*steps, match=match)

    def set_default(self, step: Step | None) -> None:
        self._call("POST", "/_fake/default", step.to_dict() if step is not None else {})

    def reset(self) -> None:
        self._call("POST", "/_fake/reset", {})

    def log(self) -> list[dict[str, Any]]:
        result: list[dict[str, Any]] = self._call("GET", "/_fake/log")
        return result

    def calls_to(self, path: str) -> list[dict[str, Any]]:
        return [r for r in self.log() if r["path"] == path]
