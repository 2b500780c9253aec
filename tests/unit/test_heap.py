"""app.core.heap: the web and worker processes freeze what start-up allocated before they serve, so
the garbage collector's full passes walk only what they allocated since (each process is run in a
subprocess: freezing the test process's own heap would keep its garbage)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

from app.core.heap import YOUNG_THRESHOLD

REPO = Path(__file__).resolve().parents[2]

#: what the process looks like when it is about to serve: printed as JSON by the stand-ins below
_STATE = """
import gc, json
def state():
    print(json.dumps({"frozen": gc.get_freeze_count(), "tracked": len(gc.get_objects()),
                      "threshold": gc.get_threshold()[0]}))
"""

_WEB = (
    _STATE
    + """
import argparse, uvicorn
def serve(self, *args, **kwargs):
    assert self.config.loaded  # the app, its config and its templates are built: then frozen
    state()
uvicorn.Server.run = serve
from app.cli.main import cmd_web
from app.core.settings import Settings
cmd_web(Settings(), argparse.Namespace(host=None, port=None, access_log=False, processes=None))
"""
)

_WEB_CHILD = (
    _STATE
    + """
from app.web.app import served_app
served_app()  # what each process of `hookline web --processes N` builds (uvicorn's factory)
state()
"""
)

_WORKER = (
    _STATE
    + """
import worker.main
async def run_worker(*args, **kwargs):
    state()
worker.main.run_worker = run_worker
worker.main.main([])
"""
)


def _run(script: str, home: Path) -> dict[str, int]:
    # hookline web refuses to start without DATABASE_URL; nothing here connects (serving is replaced)
    url = f"postgresql://nobody@/none?host={home}"
    env = {"HOOKLINE_HOME": str(home), "PATH": "/usr/bin:/bin", "HOME": str(home), "DATABASE_URL": url}
    out = subprocess.run(
        [sys.executable, "-c", script], cwd=REPO, env=env, capture_output=True, text=True, timeout=120, check=True
    )
    state: dict[str, int] = json.loads(out.stdout.strip().splitlines()[-1])
    return state


def test_the_web_process_freezes_its_start_up_heap_before_serving(tmp_path: Path) -> None:
    got = _run(_WEB, tmp_path)
    assert got["frozen"] > 10 * got["tracked"]  # a full pass now walks a small fraction of the heap
    assert got["threshold"] == YOUNG_THRESHOLD


def test_each_of_several_web_processes_freezes_its_start_up_heap(tmp_path: Path) -> None:
    got = _run(_WEB_CHILD, tmp_path)
    assert got["frozen"] > 10 * got["tracked"]
    assert got["threshold"] == YOUNG_THRESHOLD


def test_the_worker_process_freezes_its_start_up_heap_before_running(tmp_path: Path) -> None:
    got = _run(_WORKER, tmp_path)
    assert got["frozen"] > 10 * got["tracked"]
    assert got["threshold"] == YOUNG_THRESHOLD
