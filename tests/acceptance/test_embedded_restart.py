"""The embedded Postgres after a crash: the lock files a killed server leaves behind, whose pid a
restarted machine or container has since given to another process."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from tests.acceptance.test_cli_failures import _env, _postmaster_gone, hookline, tail_listening


def _lock_files(pgdata: Path) -> dict[Path, list[str]]:
    """postmaster.pid and the socket's lock file of the running server, line by line."""
    pidfile = pgdata / "postmaster.pid"
    lines = pidfile.read_text().splitlines()
    socket_lock = Path(lines[4].strip()) / f".s.PGSQL.{lines[3].strip()}.lock"
    return {pidfile: lines, socket_lock: socket_lock.read_text().splitlines()}


@pytest.mark.skipif(bool(os.environ.get("DATABASE_URL")), reason="exercises the embedded Postgres")
def test_lock_files_whose_pid_went_to_another_process_do_not_stop_the_next_start(tmp_path: Path) -> None:
    home = tmp_path / "home"
    env = _env(HOOKLINE_HOME=str(home))
    with tail_listening(env) as tail:
        crashed = _lock_files(home / "pg")
        tail.send_signal(signal.SIGTERM)
        tail.wait(30)
    assert _postmaster_gone(home)
    # the machine restarted: the server's pid now belongs to an unrelated process
    other = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(120)"])
    try:
        for path, lines in crashed.items():
            path.write_text("\n".join([str(other.pid), *lines[1:]]) + "\n")
        migrate = hookline("migrate", env=env)
        assert migrate.returncode == 0, migrate.stderr
        assert other.poll() is None, "the process that now has the old server's pid was killed"
    finally:
        other.kill()
        other.wait()
    assert _postmaster_gone(home), "the embedded Postgres was left running"
