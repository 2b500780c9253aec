"""The quick start's first line: `hookline dev` runs everything; Ctrl-C stops everything."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest

from tests.harness import ROOT, free_port


@pytest.mark.skipif(bool(os.environ.get("DATABASE_URL")), reason="exercises the embedded Postgres")
def test_hookline_dev_runs_web_worker_and_embedded_postgres(tmp_path: Path) -> None:
    port = free_port()
    home = tmp_path / "home"
    env = {k: v for k, v in os.environ.items() if k != "DATABASE_URL"}
    env.update(
        {
            "PORT": str(port),
            "HOOKLINE_HOME": str(home),
            "HOOKLINE_CONFIG": str(ROOT / "hookline.toml"),
            "GITHUB_WEBHOOK_SECRET": "dev-secret",
            "HOOKLINE_SHUTDOWN_TIMEOUT": "5",
        }
    )
    env.pop("ANTHROPIC_API_KEY", None)
    dev = subprocess.Popen(
        [sys.executable, "-m", "app.cli", "dev"],
        env=env,
        cwd=tmp_path,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    output: list[str] = []
    try:
        deadline = time.monotonic() + 60
        ready = False
        while time.monotonic() < deadline and dev.poll() is None:
            try:
                if httpx.get(f"http://127.0.0.1:{port}/readyz", timeout=1).status_code == 200:
                    ready = True
                    break
            except httpx.HTTPError:
                pass
            time.sleep(0.3)
        assert ready, "hookline dev did not become ready"
        sent = subprocess.run(
            [
                sys.executable,
                "-m",
                "app.cli",
                "send",
                "github",
                "--type",
                "pull_request.opened",
                "--file",
                str(ROOT / "app/signatures/samples/github/pull_request.opened.json"),
            ],
            env=env,
            cwd=tmp_path,
            capture_output=True,
            text=True,
            timeout=30,
        )
        assert sent.returncode == 0, sent.stderr + sent.stdout
        status: dict[str, dict[str, int]] = {}
        for _ in range(100):
            proc = subprocess.run(
                [sys.executable, "-m", "app.cli", "status", "--json"],
                env=env,
                cwd=tmp_path,
                capture_output=True,
                text=True,
                timeout=30,
            )
            status = json.loads(proc.stdout)
            if status["events"].get("succeeded"):
                break
            time.sleep(0.2)
        assert status["events"] == {"succeeded": 1}, status
    finally:
        dev.send_signal(signal.SIGINT)
        try:
            out, _ = dev.communicate(timeout=30)
        except subprocess.TimeoutExpired:
            dev.kill()
            out, _ = dev.communicate()
        output.append(out)
    text = "".join(output)
    assert dev.returncode == 0, text
    assert "web |" in text and "worker |" in text, text
    assert (home / "pg" / "PG_VERSION").exists()
    assert not (home / "pg" / "postmaster.pid").exists(), "the embedded Postgres was left running"
    with pytest.raises(httpx.HTTPError):
        httpx.get(f"http://127.0.0.1:{port}/healthz", timeout=1)


def test_hookline_dev_on_a_port_in_use_says_so_before_starting_anything(tmp_path: Path) -> None:
    """Another server on $PORT: one clear line and exit 2, before the embedded Postgres starts (it used
    to start everything, announce "web on http://…", and stop when the web exited with status 3)."""
    with socket.socket() as taken:
        taken.bind(("0.0.0.0", 0))
        taken.listen(1)
        port = taken.getsockname()[1]
        home = tmp_path / "home"
        env = {k: v for k, v in os.environ.items() if k != "DATABASE_URL"}
        env.update({"PORT": str(port), "HOOKLINE_HOME": str(home), "HOOKLINE_CONFIG": str(ROOT / "hookline.toml")})
        dev = subprocess.run(
            [sys.executable, "-m", "app.cli", "dev"], env=env, cwd=tmp_path, capture_output=True, text=True, timeout=60
        )
    assert dev.returncode == 2, dev.stdout + dev.stderr
    assert f"port {port} is in use" in dev.stderr and f"PORT={port + 1} hookline dev" in dev.stderr
    assert "web on http" not in dev.stdout and not (home / "pg").exists()
