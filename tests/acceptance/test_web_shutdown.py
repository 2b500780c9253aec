"""PaaS deploys send SIGTERM: `hookline web` finishes the request in flight, then exits."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import httpx

from app.signatures import sign
from tests.harness import ROOT, free_port, rows

SECRET = "whsec_c2h1dGRvd24tdGVzdC1zZWNyZXQ="


def _start_web(db_url: str, tmp_path: Path, **extra_env: str) -> tuple[subprocess.Popen[str], int]:
    """A real ``hookline web`` with one standard_webhooks source, ready (``/readyz`` answered)."""
    toml = tmp_path / "hookline.toml"
    toml.write_text('[sources.hooks]\nprovider = "standard_webhooks"\nsecrets_env = ["HL_SW_SECRET"]\n')
    port = free_port()
    env = {
        **os.environ,
        "DATABASE_URL": db_url,
        "HOOKLINE_CONFIG": str(toml),
        "HL_SW_SECRET": SECRET,
        "PORT": str(port),
        **extra_env,
    }
    web = subprocess.Popen(
        [sys.executable, "-m", "app.cli", "web", "--host", "127.0.0.1"],
        env=env,
        cwd=ROOT,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    for _ in range(100):
        try:
            if httpx.get(f"http://127.0.0.1:{port}/readyz", timeout=1).status_code == 200:
                break
        except httpx.HTTPError:
            time.sleep(0.1)
    return web, port


def test_sigterm_drains_the_request_in_flight(db_url: str, tmp_path: Path) -> None:
    web, port = _start_web(db_url, tmp_path, HOOKLINE_SHUTDOWN_TIMEOUT="10")
    _drain_one_request(web, port, db_url, after_sigterm=0.5)


def test_a_shutdown_timeout_under_a_second_still_drains(db_url: str, tmp_path: Path) -> None:
    """uvicorn was given int(HOOKLINE_SHUTDOWN_TIMEOUT): 0.9 became 0, and SIGTERM cut the request in
    flight about 0.2 s later (uvicorn's tick and pause; no answer, nothing stored) instead of letting it
    finish within the 0.9 s."""
    web, port = _start_web(db_url, tmp_path, HOOKLINE_SHUTDOWN_TIMEOUT="0.9")
    _drain_one_request(web, port, db_url, after_sigterm=0.4)


def test_a_web_concurrency_uvicorn_cannot_read_is_ignored(db_url: str, tmp_path: Path) -> None:
    """WEB_CONCURRENCY (Heroku's buildpack sets it; "auto" is a common hand-set value) is not read, as the
    README says: uvicorn's own int() of it used to stop `hookline web` with a traceback."""
    web, port = _start_web(db_url, tmp_path, WEB_CONCURRENCY="auto", HOOKLINE_SHUTDOWN_TIMEOUT="10")
    _drain_one_request(web, port, db_url, after_sigterm=0.5)


def _drain_one_request(web: subprocess.Popen[str], port: int, db_url: str, *, after_sigterm: float) -> None:
    """SIGTERM with half a request's body sent; the rest ``after_sigterm`` s later: answered and stored,
    then the process exits cleanly."""
    try:
        body = b'{"type": "deploy.test", "data": {"n": 1}}'
        headers = sign("standard_webhooks", secret=SECRET, body=body, delivery_id="msg_drain")
        head = (
            f"POST /webhooks/hooks HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n"
            f"Content-Length: {len(body)}\r\n" + "".join(f"{k}: {v}\r\n" for k, v in headers.items()) + "\r\n"
        )
        with socket.create_connection(("127.0.0.1", port), timeout=10) as sock:
            sock.sendall(head.encode() + body[:10])  # the request is in flight: half its body sent
            time.sleep(0.3)
            web.send_signal(signal.SIGTERM)
            time.sleep(after_sigterm)
            assert web.poll() is None, "the web process quit with a request in flight"
            sock.sendall(body[10:])
            answer = _read_response(sock)
        assert answer.startswith("HTTP/1.1 200"), answer
        assert '"accepted"' in answer
        web.wait(15)
    finally:
        if web.poll() is None:
            web.kill()
        out = web.communicate()[0]
    # uvicorn re-raises the signal after a clean shutdown, so supervisors see "terminated by SIGTERM"
    assert web.returncode in (0, -signal.SIGTERM), out
    assert "Application shutdown complete" in out
    assert rows(db_url, "SELECT delivery_id FROM hookline.events") == [("msg_drain",)]


def _read_response(sock: socket.socket) -> str:
    """One whole HTTP response: uvicorn may write the head and the body separately, and under load the
    body can arrive after the first recv."""
    data = b""
    while b"\r\n\r\n" not in data:
        chunk = sock.recv(65536)
        if not chunk:
            return data.decode()
        data += chunk
    head, _, rest = data.partition(b"\r\n\r\n")
    length = next(
        (int(line.split(b":", 1)[1]) for line in head.split(b"\r\n") if line.lower().startswith(b"content-length:")),
        0,
    )
    while len(rest) < length:
        chunk = sock.recv(65536)
        if not chunk:
            break
        rest += chunk
    return (head + b"\r\n\r\n" + rest).decode()


def test_sigterm_ends_open_dashboard_streams_at_once(db_url: str, tmp_path: Path) -> None:
    """An open /admin/stream does not hold shutdown for the whole graceful timeout (nor log a
    CancelledError): it ends as soon as the server begins shutting down; EventSource reconnects."""
    from tests.acceptance.test_admin_api import TOKEN

    web, port = _start_web(db_url, tmp_path, HOOKLINE_ADMIN_TOKEN=TOKEN, HOOKLINE_SHUTDOWN_TIMEOUT="30")
    base = f"http://127.0.0.1:{port}"
    try:
        with httpx.Client(base_url=base, timeout=60) as client:
            page = client.get("/admin/login")
            csrf = page.text.split('name="csrf_token" value="', 1)[1].split('"', 1)[0]
            login = client.post(
                "/admin/login",
                content=f"csrf_token={csrf}&token={TOKEN}",
                headers={"content-type": "application/x-www-form-urlencoded"},
            )
            assert login.status_code == 303, login.text
            with client.stream("GET", "/admin/stream") as stream:
                lines = stream.iter_lines()
                assert any(line.startswith("event: hello") for line in lines)
                web.send_signal(signal.SIGTERM)
                started = time.monotonic()
                for _line in lines:  # the stream ends (instead of running on until the timeout)
                    pass
                ended = time.monotonic() - started
        assert ended < 10, f"the stream held shutdown for {ended:.1f}s"
        web.wait(15)
    finally:
        if web.poll() is None:
            web.kill()
        out = web.communicate()[0]
    assert web.returncode in (0, -signal.SIGTERM), out
    assert "CancelledError" not in out and "Traceback" not in out, out
