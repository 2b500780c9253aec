"""What `hookline web` makes of a PaaS's environment: the uvicorn options it starts with.

Each case runs the real ``hookline web`` in a subprocess with ``uvicorn.Server.run`` replaced by a
print of the config it was given (no socket, no database: the app is built but never served).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

REPO = Path(__file__).resolve().parents[2]

_PROBE = """
import json, sys, uvicorn
def serve(self, *args, **kwargs):
    print(json.dumps({"workers": self.config.workers, "graceful": self.config.timeout_graceful_shutdown}))
uvicorn.Server.run = serve
from app.cli.main import main
sys.exit(main(["web"]))
"""


def _web_config(**env: str) -> tuple[subprocess.CompletedProcess[str], dict[str, Any]]:
    base = {k: v for k, v in os.environ.items() if k not in ("WEB_CONCURRENCY", "HOOKLINE_SHUTDOWN_TIMEOUT")}
    base.update(
        {
            "DATABASE_URL": "postgresql://u:p@127.0.0.1:1/never_connected",
            "HOOKLINE_CONFIG": str(REPO / "hookline.toml"),
            "GITHUB_WEBHOOK_SECRET": "x",
            "PYTHONPATH": str(REPO),
            **env,
        }
    )
    done = subprocess.run(
        [sys.executable, "-c", _PROBE], env=base, cwd=REPO, capture_output=True, text=True, timeout=60
    )
    lines = [line for line in done.stdout.splitlines() if line.startswith("{")]
    return done, json.loads(lines[-1]) if lines else {}


@pytest.mark.parametrize("value", ["auto", "", "4", "0"])
def test_web_concurrency_is_not_read(value: str) -> None:
    """Heroku's Python buildpack sets WEB_CONCURRENCY (for gunicorn), and a user may set it to "auto"
    or leave it empty: uvicorn's Config read it with int() and `hookline web` died with a traceback.
    The README says it is not read; processes are HOOKLINE_WEB_PROCESSES."""
    done, config = _web_config(WEB_CONCURRENCY=value)
    assert done.returncode == 0 and "Traceback" not in done.stderr, done.stderr
    assert config["workers"] == 1, config


@pytest.mark.parametrize(("value", "graceful"), [("0.5", 0.5), ("1.5", 1.5), ("20", 20.0)])
def test_a_fraction_of_a_second_of_shutdown_timeout_is_kept(value: str, graceful: float) -> None:
    """uvicorn was given int(HOOKLINE_SHUTDOWN_TIMEOUT): 0.5 became 0, no drain at all (requests in
    flight cut at SIGTERM), and 1.5 became 1."""
    done, config = _web_config(HOOKLINE_SHUTDOWN_TIMEOUT=value)
    assert done.returncode == 0, done.stderr
    assert config["graceful"] == graceful, config
