"""Scale out on one Postgres: 2 web + 3 worker processes, 5,000 events, each processed exactly once.

Real processes throughout: two ``hookline web`` (uvicorn) children behind no proxy, three ``python -m
worker`` children in dry-run, and the bench's load generator sending pre-signed Standard Webhooks
deliveries to both web processes at once (half each, and some of them to both). No timing is asserted.
"""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
from pathlib import Path

import pytest

from app.cli.bench.loadgen import SECRET_ENV, build_requests, run_load
from app.cli.bench.runner import CONFIG_TOML
from tests.chaos_support import Workers, query, wait_until
from tests.harness import ROOT, free_port

EVENTS = 5000
RACED = 250
SECRET = "whsec_" + "c2NhbGUtb3V0LXRlc3Qtc2VjcmV0LTEyMzQ1Njc4"


def _env(db_url: str, config: Path) -> dict[str, str]:
    return {
        "DATABASE_URL": db_url,
        "HOOKLINE_CONFIG": str(config),
        "ANTHROPIC_API_KEY": "",
        "HOOKLINE_WORKER_CONCURRENCY": "10",
        "HOOKLINE_WORKER_POLL_INTERVAL": "1",
        "HOOKLINE_LOG_LEVEL": "WARNING",
        "HOOKLINE_LOG_FORMAT": "text",
        "HOOKLINE_SHUTDOWN_TIMEOUT": "5",
        SECRET_ENV: SECRET,
    }


async def _wait_http(port: int, proc: subprocess.Popen[bytes]) -> None:
    for _ in range(300):
        assert proc.poll() is None, "web process exited"
        try:
            _r, w = await asyncio.open_connection("127.0.0.1", port)
            w.close()
            return
        except OSError:
            await asyncio.sleep(0.1)
    raise AssertionError(f"web process on port {port} did not start")


@pytest.mark.timeout(900)
async def test_two_web_and_three_workers_process_each_event_exactly_once(db_url: str, tmp_path: Path) -> None:
    config = tmp_path / "hookline.toml"
    config.write_text(CONFIG_TOML.format(secret_env=SECRET_ENV))
    env = {**os.environ, **_env(db_url, config)}
    ports = [free_port(), free_port()]
    webs = [
        subprocess.Popen(  # noqa: ASYNC220 - started once, before anything awaits
            [sys.executable, "-m", "app.cli", "web", "--host", "127.0.0.1", "--port", str(p)],
            env=env,
            cwd=ROOT,
            stdout=(tmp_path / f"web-{i}.log").open("ab"),
            stderr=subprocess.STDOUT,
        )
        for i, p in enumerate(ports)
    ]
    workers = Workers(tmp_path)
    try:
        for i in range(3):
            workers.spawn(f"w{i}", _env(db_url, config))

        def registered() -> bool:
            return int(query(db_url, "SELECT count(*) FROM procrastinate_workers")[0][0]) >= 3

        await wait_until(registered, timeout=240, what="three workers registered", report=workers.report)
        for port, web in zip(ports, webs, strict=True):
            await _wait_http(port, web)

        reqs = [build_requests(port=p, path="/webhooks/bench", count=EVENTS, prefix="so", secret=SECRET) for p in ports]
        # even deliveries to one process, odd ones to the other, and the last RACED of each to both
        # (in opposite orders), so duplicates race across processes too
        sends = [
            reqs[0][0::2] + reqs[0][1::2][-RACED:][::-1],
            reqs[1][1::2] + reqs[1][0::2][-RACED:][::-1],
        ]
        results = await asyncio.gather(
            *(
                run_load(port=p, requests=r, concurrency=32, duration=600, warmup=0, cycle=False)
                for p, r in zip(ports, sends, strict=True)
            )
        )
        for r, sent in zip(results, sends, strict=True):
            assert r["statuses"] == {"200": len(sent)}, r
        outcomes = [r["outcomes_total"] for r in results]
        assert sum(int(o.get("accepted", 0)) for o in outcomes) == EVENTS
        assert sum(int(o.get("duplicate", 0)) for o in outcomes) == 2 * RACED

        def finished() -> bool:
            done = query(db_url, "SELECT count(*) FROM hookline.events WHERE status IN ('succeeded','dead','skipped')")
            return int(done[0][0]) >= EVENTS

        await wait_until(finished, timeout=180, what="all events finished", report=workers.report)

        assert query(db_url, "SELECT count(*), count(DISTINCT delivery_id) FROM hookline.events") == [(EVENTS, EVENTS)]
        assert query(db_url, "SELECT status, attempts, count(*) FROM hookline.events GROUP BY 1, 2") == [
            ("succeeded", 1, EVENTS)
        ]
        per_event = query(
            db_url,
            "SELECT count(*) FROM (SELECT (args->>'event_id')::bigint AS e, count(*) AS n "
            "FROM procrastinate_jobs WHERE task_name = 'hookline:process_event' GROUP BY 1) j WHERE n <> 1",
        )
        assert per_event == [(0,)]
        assert query(
            db_url,
            "SELECT count(*) FROM procrastinate_jobs WHERE status = 'succeeded' "
            "AND task_name = 'hookline:process_event'",
        ) == [(EVENTS,)]
        calls = query(
            db_url, "SELECT count(*), count(DISTINCT event_id) FROM hookline.llm_calls WHERE status = 'dry_run'"
        )
        assert calls == [(EVENTS, EVENTS)]
    finally:
        workers.stop_all()
        for web in webs:
            web.terminate()
        for web in webs:
            try:
                web.wait(15)
            except subprocess.TimeoutExpired:
                web.kill()
