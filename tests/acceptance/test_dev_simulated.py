"""`hookline dev --simulate-model`: the whole flow, actions included, with no API key; then the
operator's tools on it: `events show`, `status`, `psql`, and the dev terminal's event lines."""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.harness import ROOT, free_port


def _cli(env: dict[str, str], cwd: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "app.cli", *args], env=env, cwd=cwd, capture_output=True, text=True, timeout=60
    )


@pytest.mark.skipif(bool(os.environ.get("DATABASE_URL")), reason="exercises the embedded Postgres")
def test_simulated_model_runs_end_to_end(tmp_path: Path) -> None:
    port = free_port()
    env = {k: v for k, v in os.environ.items() if k not in ("DATABASE_URL", "ANTHROPIC_API_KEY")}
    env.update(
        {
            "PORT": str(port),
            "HOOKLINE_HOME": str(tmp_path / "home"),
            "HOOKLINE_CONFIG": str(ROOT / "hookline.toml"),
            "GITHUB_WEBHOOK_SECRET": "dev-secret",
            "HOOKLINE_SHUTDOWN_TIMEOUT": "5",
        }
    )
    dev = subprocess.Popen(
        [sys.executable, "-m", "app.cli", "dev", "--simulate-model"],
        env=env,
        cwd=tmp_path,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    try:
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline and dev.poll() is None:
            try:
                if httpx.get(f"http://127.0.0.1:{port}/readyz", timeout=1).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            time.sleep(0.3)
        sample = ROOT / "app/signatures/samples/github/pull_request.opened.json"
        sent = _cli(env, tmp_path, "send", "github", "--type", "pull_request.opened", "--file", str(sample))
        assert sent.returncode == 0, sent.stderr + sent.stdout
        match = re.search(r'"event_id":\s*(\d+)', sent.stdout)
        assert match, sent.stdout
        event_id = match.group(1)
        story: dict[str, Any] = {}
        for _ in range(100):
            shown = _cli(env, tmp_path, "events", "show", event_id, "--json")
            story = json.loads(shown.stdout)
            if story["event"]["status"] == "succeeded":
                break
            time.sleep(0.2)
        assert story["event"]["status"] == "succeeded", story
        assert story["event"]["dry_run"] is False and "simulated" in story["event"]["detail"]
        (call,) = story["calls"]
        assert call["status"] == "simulated" and call["cost_usd"] is None
        assert set(call["output"]) == {"summary", "risk"} and call["output"]["risk"] in ("low", "medium", "high")
        assert [(a["action"], a["status"]) for a in story["actions"]] == [("log#0", "succeeded")]
        assert [s["step"] for s in story["timeline"]] == [
            "received", "queued", "started", "model_call", "action", "finished",
        ]  # fmt: skip

        text = _cli(env, tmp_path, "events", "show", event_id)
        assert text.returncode == 0 and "model_call" in text.stdout and "simulated" in text.stdout, text.stdout
        status = _cli(env, tmp_path, "status")
        assert status.returncode == 0 and "dead letters: 0" in status.stdout and "spend today" in status.stdout
        assert "succeeded" in status.stdout, status.stdout
        psql = _cli(env, tmp_path, "psql", "-At", "-c", "SELECT status FROM hookline.llm_calls")
        assert psql.stdout.strip() == "simulated", psql.stdout + psql.stderr
    finally:
        dev.send_signal(signal.SIGINT)
        try:
            out, _ = dev.communicate(timeout=30)
        except subprocess.TimeoutExpired:
            dev.kill()
            out, _ = dev.communicate()
    assert dev.returncode == 0, out
    assert "simulated model" in out
    steps = ["github/pull_request.opened", "pr-summary", "claude-haiku-5-5 (simulated)", "log#0 succeeded", "succeeded"]
    line = f"event {event_id} " + " → ".join(steps)
    assert line in out, out
