"""``hookline web --access-log`` never writes a credential sent in a query string: Meta's
``hub.verify_token`` (a secret from the environment) and any parameter named like a token, secret,
signature, key or password is logged as ``[redacted]``, in one process and in several."""

from __future__ import annotations

import json
import logging
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest

from app.core.logs import without_query_secrets
from tests.harness import ROOT, free_port

VERIFY_TOKEN = "VeRiFyToKeN-s3cret-0123456789"
QUERY = (
    f"hub.mode=subscribe&hub.verify_token={VERIFY_TOKEN}&hub.challenge=12345"
    "&api_KEY=k3y-0123456789&X-Signature=s1g-0123456789&pass%77ord=pw-0123456789&page=2"
)
LEAKS = (VERIFY_TOKEN, "k3y-0123456789", "s1g-0123456789", "pw-0123456789")


def test_credential_query_values_are_redacted_the_rest_kept() -> None:
    assert without_query_secrets(f"/webhooks/wa?{QUERY}") == (
        "/webhooks/wa?hub.mode=subscribe&hub.verify_token=[redacted]&hub.challenge=12345"
        "&api_KEY=[redacted]&X-Signature=[redacted]&pass%77ord=[redacted]&page=2"
    )
    for target in ("/healthz", "/a?", "/a?token", "/a?x=1&&y=2", "/a?b"):
        assert without_query_secrets(target) == target


@pytest.mark.timeout(240)
@pytest.mark.parametrize(("processes", "log_format"), [(1, "text"), (2, "json")])
def test_the_access_log_never_holds_the_verify_token(
    db_url: str, tmp_path: Path, processes: int, log_format: str
) -> None:
    toml = tmp_path / "hookline.toml"
    toml.write_text(
        '[sources.wa]\nprovider = "meta_whatsapp"\nsecrets_env = ["HL_WA_SECRET"]\nverify_token_env = "HL_WA_VERIFY"\n'
    )
    port = free_port()
    log = tmp_path / "web.log"
    env = {
        **os.environ,
        "DATABASE_URL": db_url,
        "HOOKLINE_CONFIG": str(toml),
        "HL_WA_SECRET": "app-secret-0123456789",
        "HL_WA_VERIFY": VERIFY_TOKEN,
        "HOOKLINE_LOG_FORMAT": log_format,
        "HOOKLINE_SHUTDOWN_TIMEOUT": "5",
    }
    args = ["web", "--host", "127.0.0.1", "--port", str(port), "--access-log", "--processes", str(processes)]
    web = subprocess.Popen(
        [sys.executable, "-m", "app.cli", *args], env=env, cwd=ROOT, stdout=log.open("ab"), stderr=subprocess.STDOUT
    )
    try:
        deadline = time.monotonic() + 120
        while True:
            assert web.poll() is None, log.read_text()
            try:
                if httpx.get(f"http://127.0.0.1:{port}/readyz", timeout=1).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            assert time.monotonic() < deadline, log.read_text()
            time.sleep(0.1)
        r = httpx.get(f"http://127.0.0.1:{port}/webhooks/wa?{QUERY}", timeout=10)
        assert r.status_code == 200 and r.text == "12345", r.text  # the handshake itself still works
    finally:
        web.send_signal(signal.SIGTERM)
        web.wait(60)
    text = log.read_text()
    lines = [line for line in text.splitlines() if "/webhooks/wa" in line]
    assert len(lines) == 1, text
    assert not any(leak in text for leak in LEAKS), lines
    message = json.loads(lines[0])["msg"] if log_format == "json" else lines[0]
    assert "hub.verify_token=[redacted]&hub.challenge=12345" in message and "&page=2" in message, message


def test_the_filter_sits_on_uvicorns_access_logger_once() -> None:
    from app.core.logs import AccessLogRedactor, setup_logging

    root = logging.getLogger()
    saved = (root.handlers[:], root.level)
    try:
        setup_logging()
        setup_logging()
    finally:
        root.handlers[:], _ = saved
        root.setLevel(saved[1])
    access = logging.getLogger("uvicorn.access")
    assert [type(f) for f in access.filters].count(AccessLogRedactor) == 1
