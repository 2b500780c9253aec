"""The worker's event loop (HOOKLINE_WORKER_LOOP): uvloop unless told otherwise, as uvicorn does for the web."""

from __future__ import annotations

import asyncio
import sys

import pytest

from app.core.settings import Settings
from worker.main import loop_runner


async def _loop_module() -> str:
    return type(asyncio.get_running_loop()).__module__


@pytest.mark.parametrize(("choice", "module"), [("auto", "uvloop"), ("uvloop", "uvloop"), ("asyncio", "asyncio")])
def test_each_choice_runs_the_worker_on_that_loop(choice: str, module: str) -> None:
    got: list[str] = []

    async def main() -> None:
        got.append(await _loop_module())

    loop_runner(choice)(main())
    assert got[0].split(".")[0] == module


def test_auto_is_the_default_and_the_setting_is_checked(monkeypatch: pytest.MonkeyPatch) -> None:
    assert Settings().worker_loop == "auto"
    monkeypatch.setenv("HOOKLINE_WORKER_LOOP", "trio")
    with pytest.raises(ValueError, match="worker_loop"):
        Settings()


def test_uvloop_asked_for_but_missing_is_a_clear_exit(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "uvloop", None)  # import uvloop now raises ImportError
    with pytest.raises(SystemExit, match="uvloop is not installed"):
        loop_runner("uvloop")
    assert loop_runner("auto") is asyncio.run  # auto falls back to the standard loop
