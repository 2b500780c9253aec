"""``hookline web --processes 2``: two processes on one port under uvicorn's supervisor.

A real ``hookline web`` with its children: every delivery is stored whichever process takes it, a child
killed with SIGKILL is replaced while the other keeps serving, /metrics counts what every process
answered (those that were replaced included) but no longer the killed one's live gauge, and SIGTERM
stops them all. Their metrics files live in a directory of the run's own, inside the one given.
"""

from __future__ import annotations

import asyncio
import os
import pickle
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest
from uvicorn.server import ServerState

from app.cli.main import build_parser
from app.core.settings import Settings
from app.signatures import sign
from app.web.server import GuardedProtocol, server_config
from tests.harness import ROOT, free_port, rows

SECRET = "whsec_cHJvY2Vzc2VzLXRlc3Qtc2VjcmV0LTEyMzQ1"


def _children(pid: int) -> set[int]:
    """The live processes whose parent is ``pid`` (multiprocessing's own helpers left out)."""
    out = set()
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
            cmdline = (entry / "cmdline").read_bytes()
        except OSError:
            continue
        fields = stat.rsplit(")", 1)[1].split()
        if int(fields[1]) == pid and fields[0] != "Z" and b"resource_tracker" not in cmdline:
            out.add(int(entry.name))
    return out


def _wait(what: str, check: object, timeout: float = 60.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if check():  # type: ignore[operator]
            return
        time.sleep(0.1)
    raise AssertionError(f"timed out waiting for {what}")


def _send(port: int, n: int, start: int) -> list[int]:
    codes = []
    for i in range(start, start + n):
        body = b'{"type": "processes.test", "data": {"n": %d}}' % i
        headers = sign("standard_webhooks", secret=SECRET, body=body, delivery_id=f"msg_proc_{i}")
        # a new connection each time: the kernel hands each to whichever process accepts first
        r = httpx.post(
            f"http://127.0.0.1:{port}/webhooks/hooks",
            content=body,
            headers={**headers, "content-type": "application/json"},
            timeout=10,
        )
        codes.append(r.status_code)
    return codes


def _accepted(port: int) -> float:
    text = httpx.get(f"http://127.0.0.1:{port}/metrics", timeout=10).text
    m = re.search(r'^hookline_ingest_requests_total\{outcome="accepted",source="hooks"\} (\S+)$', text, re.M)
    assert m, text
    assert re.search(r"^hookline_sync_waiting 0\.0$", text, re.M), text
    return float(m.group(1))


def test_the_web_config_of_several_processes_can_be_sent_to_them() -> None:
    """uvicorn pickles its Config to each process: the protocol factory must survive that and still
    carry the settings' limits."""
    settings = Settings(header_timeout=3.5, max_headers=7, max_connections=12)
    config = server_config("app.cli.bench.bare:bare_app", settings, host="127.0.0.1", port=0, factory=True, workers=2)
    copy = pickle.loads(pickle.dumps(config))  # noqa: S301 - our own bytes, as uvicorn sends them
    copy.load()
    loop = asyncio.new_event_loop()
    try:
        protocol = copy.http_protocol_class(config=copy, server_state=ServerState(), app_state={}, _loop=loop)
    finally:
        loop.close()
    protocol_class = type(protocol)
    assert issubclass(protocol_class, GuardedProtocol)
    assert (protocol_class.header_timeout, protocol_class.max_headers, protocol_class.max_connections) == (3.5, 7, 12)


@pytest.mark.timeout(240)
def test_two_processes_share_one_port_survive_a_killed_child_and_count_together(db_url: str, tmp_path: Path) -> None:
    toml = tmp_path / "hookline.toml"
    toml.write_text('[sources.hooks]\nprovider = "standard_webhooks"\nsecrets_env = ["HL_SW_SECRET"]\n')
    metrics_dir = tmp_path / "metrics"
    metrics_dir.mkdir()
    stale = metrics_dir / "counter_1.db"
    stale.write_bytes(b"another run's file")  # not this run's: neither read (it would fail /metrics) nor removed
    port = free_port()
    env = {
        **os.environ,
        "DATABASE_URL": db_url,
        "HOOKLINE_CONFIG": str(toml),
        "HL_SW_SECRET": SECRET,
        "HOOKLINE_SHUTDOWN_TIMEOUT": "5",
        "HOOKLINE_LOG_LEVEL": "WARNING",
        "PROMETHEUS_MULTIPROC_DIR": str(metrics_dir),
    }
    web = subprocess.Popen(
        [sys.executable, "-m", "app.cli", "web", "--host", "127.0.0.1", "--port", str(port), "--processes", "2"],
        env=env,
        cwd=ROOT,
        stdout=(tmp_path / "web.log").open("ab"),
        stderr=subprocess.STDOUT,
    )
    try:

        def ready() -> bool:
            assert web.poll() is None, (tmp_path / "web.log").read_text()
            try:
                return httpx.get(f"http://127.0.0.1:{port}/readyz", timeout=1).status_code == 200
            except httpx.HTTPError:
                return False

        _wait("the web processes", ready, timeout=120)
        _wait("two children", lambda: len(_children(web.pid)) == 2)
        first = _children(web.pid)
        (own,) = [path for path in metrics_dir.iterdir() if path.is_dir()]  # this run's own directory
        assert own.name.startswith("hookline-metrics-")
        _wait("both children's metrics", lambda: all((own / f"gauge_livesum_{pid}.db").exists() for pid in first))

        assert _send(port, 30, 0) == [200] * 30
        assert _accepted(port) == 30.0

        # each child in turn is killed without warning and replaced; none of the replacements has
        # answered a webhook itself, yet /metrics still counts every one (the other processes' files)
        for victim in sorted(first):
            os.kill(victim, signal.SIGKILL)
            _wait("a replacement child", lambda v=victim: v not in _children(web.pid) and len(_children(web.pid)) == 2)
            _wait("the port answering", ready)
        assert not (first & _children(web.pid))
        for victim in first:  # the killed processes' live gauges are out of the sum; their counts stay
            assert not (own / f"gauge_livesum_{victim}.db").exists()
            assert (own / f"counter_{victim}.db").exists()
        for _ in range(4):
            assert _accepted(port) == 30.0

        assert _send(port, 10, 30) == [200] * 10
        assert _accepted(port) == 40.0
        assert rows(db_url, "SELECT count(*) FROM hookline.events WHERE delivery_id LIKE %s", "msg_proc_%") == [(40,)]

        last = _children(web.pid)
        web.send_signal(signal.SIGTERM)
        web.wait(30)
        assert web.returncode == 0, (tmp_path / "web.log").read_text()
        _wait("the children to exit", lambda: not any(Path(f"/proc/{pid}").exists() for pid in last), timeout=10)
        assert not own.exists()
        assert stale.read_bytes() == b"another run's file"
    finally:
        if web.poll() is None:
            web.kill()
            web.wait(10)


@pytest.mark.parametrize("given", ["0", "-2", "two"])
def test_fewer_than_one_process_is_refused_with_a_clear_message(given: str, capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit):
        build_parser().parse_args(["web", "--processes", given])
    assert "argument --processes:" in capsys.readouterr().err
    assert build_parser().parse_args(["web", "--processes", "3"]).processes == 3
