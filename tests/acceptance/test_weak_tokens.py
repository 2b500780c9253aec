"""A token shorter than 16 characters is not refused (it still works), but `hookline check` warns about
it and the web process logs one warning at start: the variable's name and the minimum, never the value."""

from __future__ import annotations

import logging

import httpx
import pytest

from tests.acceptance.test_admin_api import admin_config
from tests.acceptance.test_cli_failures import _env, hookline
from tests.harness import make_settings, web_server

SHORT = "Zq9-short-tok"
RECIPE = 'python3 -c "import secrets; print(secrets.token_urlsafe(32))"'


def test_hookline_check_warns_about_a_short_token_without_showing_it() -> None:
    done = hookline("check", env=_env(HOOKLINE_ADMIN_TOKEN=SHORT, HOOKLINE_METRICS_TOKEN="m" * 16))
    assert done.returncode == 0, done.stderr
    warned = [line for line in done.stderr.splitlines() if "_TOKEN" in line]
    assert warned == [f"warning: HOOKLINE_ADMIN_TOKEN is shorter than 16 characters, so it can be guessed; use a "
                      f"long random one: {RECIPE}"], done.stderr  # fmt: skip
    assert SHORT not in done.stdout + done.stderr
    strict = hookline("check", "--strict", env=_env(HOOKLINE_ADMIN_TOKEN=SHORT))
    assert strict.returncode == 1 and "HOOKLINE_ADMIN_TOKEN is shorter" in strict.stderr


async def test_the_web_process_logs_one_warning_at_start(db_url: str, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.WARNING)
    settings = make_settings(db_url, admin_token=SHORT, metrics_token="Xk4Jp")
    async with web_server(settings, admin_config()) as base, httpx.AsyncClient(base_url=base) as client:
        ok = await client.get("/admin/api/stats", headers={"Authorization": f"Bearer {SHORT}"})
        assert ok.status_code == 200  # a short token still works
    warned = [r.getMessage() for r in caplog.records if r.name == "hookline.web" and r.levelno == logging.WARNING]
    assert [w.split()[0] for w in warned] == ["HOOKLINE_ADMIN_TOKEN", "HOOKLINE_METRICS_TOKEN"], warned
    assert all("shorter than 16 characters" in w and RECIPE in w for w in warned)
    everything = " ".join(r.getMessage() for r in caplog.records)
    assert SHORT not in everything and "Xk4Jp" not in everything
    caplog.clear()
    async with web_server(make_settings(db_url, admin_token="a-long-enough-admin-token"), admin_config()):
        pass
    assert not [r for r in caplog.records if "_TOKEN" in r.getMessage()]
