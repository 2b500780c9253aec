"""``hookline bench``: start the real processes against a fresh database, measure, print, write JSON."""

from __future__ import annotations

import asyncio
import base64
import contextlib
import json
import os
import secrets
import shutil
import signal
import tempfile
import time
import traceback
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from types import FrameType
from typing import Any

from app.cli.bench import phases, report, sync_reply
from app.cli.bench.database import BenchDatabase
from app.cli.bench.dispatch import SCENARIOS, run_scenario
from app.cli.bench.loadgen import SECRET_ENV
from app.cli.bench.plan import ROWS, Plan
from app.cli.bench.procs import BenchError, Children, free_port, wait_http

CONFIG_TOML = """\
# written by hookline bench
[sources.bench]
provider = "standard_webhooks"
secrets_env = ["{secret_env}"]

[sources.bench-ordered]
provider = "standard_webhooks"
secrets_env = ["{secret_env}"]
ordering_key = "json:key"

[pipelines.bench]
source = "bench"
events = ["bench.*"]
fields = ["type", "data.amount", "data.currency"]
instructions = "Classify this synthetic event (hookline bench, dry run)."
output_schema = {{ type = "object", properties = {{ label = {{ type = "string" }} }}, required = ["label"] }}

[pipelines.bench-ordered]
source = "bench-ordered"
events = ["bench.*"]
fields = ["type", "key"]
instructions = "Classify this synthetic ordered event (hookline bench, dry run)."
output_schema = {{ type = "object", properties = {{ label = {{ type = "string" }} }}, required = ["label"] }}
"""


@dataclass
class Bench:
    plan: Plan
    db: BenchDatabase
    workdir: Path
    children: Children
    secret: str = field(default_factory=lambda: "whsec_" + base64.b64encode(secrets.token_bytes(24)).decode())
    out: Callable[[str], None] = print

    def env(self, **extra: str) -> dict[str, str]:
        env = {
            k: v
            for k, v in os.environ.items()
            if not k.startswith(("ANTHROPIC_", "HOOKLINE_")) and k not in ("DATABASE_URL", "PORT")
        }
        env |= {
            "DATABASE_URL": self.db.url,
            "HOOKLINE_CONFIG": str(self.workdir / "hookline.toml"),
            "HOOKLINE_LOG_LEVEL": "WARNING",
            "HOOKLINE_SHUTDOWN_TIMEOUT": "5",
            SECRET_ENV: self.secret,
            "PYTHONUNBUFFERED": "1",
        }
        return env | extra

    def loadgen(
        self,
        name: str,
        port: int,
        *,
        count: int,
        prefix: str,
        duration: float,
        warmup: float,
        cycle: bool,
        server_pid: int | None = None,
    ) -> dict[str, Any]:
        argv = [
            "-m",
            "app.cli.bench",
            "loadgen",
            "--port",
            str(port),
            "--path",
            f"/webhooks/{phases.SOURCE}",
            "--count",
            str(count),
            "--prefix",
            prefix,
            "--concurrency",
            str(self.plan.concurrency),
            "--duration",
            str(duration),
            "--warmup",
            str(warmup),
        ] + (["--cycle"] if cycle else [])
        if server_pid:
            argv += ["--server-pid", str(server_pid)]
        out = self.children.run(name, argv, self.env(), timeout=duration + warmup + 120)
        result: dict[str, Any] = json.loads(out.strip().splitlines()[-1])
        return result

    # -- rows ------------------------------------------------------------------------------------

    def ingest(self) -> dict[str, Any]:
        p = self.plan
        bare_port, web_port = free_port(), free_port()
        self.out("ingest: bare Starlette baseline …")
        bare_pid = self.children.start(
            "bare", ["-m", "app.cli.bench", "bare", "--port", str(bare_port)], self.env()
        ).pid
        web_pid = self.children.start(
            "web", ["-m", "app.cli", "web", "--host", "127.0.0.1", "--port", str(web_port)], self.env()
        ).pid
        wait_http(self.children, "bare", f"http://127.0.0.1:{bare_port}/webhooks/{phases.SOURCE}")
        bare = self.loadgen(
            "loadgen-bare",
            bare_port,
            count=1000,
            prefix="bare",
            duration=p.duration,
            warmup=p.warmup,
            cycle=True,
            server_pid=bare_pid,
        )
        self.children.stop("bare")
        self.out("ingest: hookline POST /webhooks/bench …")
        wait_http(self.children, "web", f"http://127.0.0.1:{web_port}/readyz")
        pool = int((p.duration + p.warmup) * 6000) + 1000
        hook = self.loadgen(
            "loadgen-hookline",
            web_port,
            count=pool,
            prefix="ing",
            duration=p.duration,
            warmup=p.warmup,
            cycle=False,
            server_pid=web_pid,
        )
        accepted = int(hook["outcomes_total"].get("accepted", 0))
        stored = asyncio.run(_count(self.db.url, phases.SOURCE, "ing"))
        hook |= {"accepted_total": accepted, "stored": stored, "stored_matches_accepted": stored == accepted}
        dup: dict[str, Any] = {}
        if accepted:
            self.out("ingest: duplicate deliveries …")
            dup = self.loadgen(
                "loadgen-duplicate",
                web_port,
                count=min(500, accepted),
                prefix="ing",
                duration=p.duplicate_duration,
                warmup=min(0.3, p.duplicate_duration / 4),
                cycle=True,
                server_pid=web_pid,
            )
            stored_after = asyncio.run(_count(self.db.url, phases.SOURCE, "ing"))
            dup |= {
                "duplicates_total": int(dup["outcomes_total"].get("duplicate", 0)),
                "new_rows": stored_after - stored,
            }
        self.children.stop("web")
        ratio = hook["ok_rps"] / bare["ok_rps"] if bare["ok_rps"] else None
        return {
            "hookline": hook,
            "bare": bare,
            "duplicate": dup,
            "ratio_hookline_to_bare": ratio,
            "concurrency": p.concurrency,
            "duration_s": p.duration,
            "web_pool_max": 10,
        }

    def worker(self, name: str, concurrency: int, poll: float) -> None:
        self.children.start(
            name,
            ["-m", "worker"],
            self.env(HOOKLINE_WORKER_CONCURRENCY=str(concurrency), HOOKLINE_WORKER_POLL_INTERVAL=str(poll)),
        )

    def worker_rows(self, rows: tuple[str, ...]) -> dict[str, Any]:
        return asyncio.run(self._worker_rows(rows))

    async def _worker_rows(self, rows: tuple[str, ...]) -> dict[str, Any]:
        p = self.plan
        out: dict[str, Any] = {}
        db = await phases.Events.open(self.db.url)
        try:
            if "pickup" in rows or "throughput" in rows:
                self.out(f"worker: starting python -m worker (concurrency {p.worker_concurrency}) …")
                await asyncio.to_thread(self.worker, "worker", p.worker_concurrency, 1.0)
                await db.wait_worker("probe-w1")
                for row in ("pickup", "throughput"):
                    if row in rows:
                        out[row] = await self._guard(row, self._worker_row(db, row))
                await asyncio.to_thread(self.children.stop, "worker")
            if "lockchain" in rows:
                self.out(
                    f"lockchain: worker concurrency {p.chain_concurrency}, poll interval {p.chain_poll_interval:g}s …"
                )
                out["lockchain"] = await self._guard("lockchain", self._lockchain(db))
        finally:
            await db.close()
        return out

    async def _worker_row(self, db: phases.Events, row: str) -> dict[str, Any]:
        p = self.plan
        self.out(f"{row} …")
        if row == "pickup":
            result = await phases.pickup(db, rate=p.pickup_rate, seconds=p.pickup_seconds)
        else:
            worker = self.children.procs.get("worker")
            result = await phases.throughput(db, events=p.throughput_events, worker_pid=worker.pid if worker else None)
        return result | {"worker_concurrency": p.worker_concurrency, "workers": 1}

    async def _lockchain(self, db: phases.Events) -> dict[str, Any]:
        p = self.plan
        await asyncio.to_thread(self.worker, "worker-chain", p.chain_concurrency, p.chain_poll_interval)
        try:
            await db.wait_worker("probe-w2", timeout=30 + p.chain_poll_interval)
            with_fix = await phases.lock_chain(
                db, links=p.chain_links, prefix="lc1", poll_interval=p.chain_poll_interval
            )
            self.out("lockchain: again with trigger hookline_notify_lock_released disabled …")
            await db.set_lock_trigger(False)
            try:
                without = await phases.lock_chain(
                    db, links=p.chain_links, prefix="lc2", poll_interval=p.chain_poll_interval
                )
            finally:
                await db.set_lock_trigger(True)
        finally:
            await asyncio.to_thread(self.children.stop, "worker-chain")
        speedup = without["total_s"] / with_fix["total_s"] if with_fix["total_s"] > 0 else None
        return {
            "with_fix": with_fix,
            "without_fix": without,
            "speedup": speedup,
            "worker_concurrency": p.chain_concurrency,
            "poll_interval_s": p.chain_poll_interval,
        }

    async def _guard(self, row: str, coro: Any) -> dict[str, Any]:
        try:
            return dict(await coro)
        except Exception as e:
            return self._failed(row, e)

    def _failed(self, row: str, e: BaseException) -> dict[str, Any]:
        logs = {
            n: self.children.tail(n)
            for n in ("web", "worker", "worker-chain", "bare")
            if (self.children.logdir / f"{n}.log").exists()
        }
        self.out(f"{row}: FAILED: {e}")
        return {"error": f"{e.__class__.__name__}: {e}", "traceback": traceback.format_exc(limit=5), "logs": logs}


async def _count(url: str, source: str, prefix: str) -> int:
    db = await phases.Events.open(url)
    try:
        return await db.count(source, prefix)
    finally:
        await db.close()


@contextlib.contextmanager
def _sigterm_as_interrupt() -> Iterator[None]:
    """SIGTERM ends the bench like Ctrl-C: children and database are cleaned up on the way out."""

    def handler(signum: int, frame: FrameType | None) -> None:
        raise KeyboardInterrupt

    try:
        old = signal.signal(signal.SIGTERM, handler)
    except ValueError:  # not the main thread
        yield
        return
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, old)


def run(plan: Plan, *, dsn: str | None, home: Path, out: Callable[[str], None] = print) -> tuple[int, Path]:
    """Run the bench; returns (exit status, JSON path). Every child and the database go at the end."""
    started = datetime.now(UTC)
    json_path = plan.json_path or Path("bench-results") / f"bench-{started.strftime('%Y%m%d-%H%M%S')}.json"
    workdir = Path(tempfile.mkdtemp(prefix="hookline-bench-"))
    children = Children(workdir)
    db = BenchDatabase(dsn, home, plan.database_name)
    results: dict[str, Any] = {}
    timings: dict[str, float] = {}
    machine: dict[str, Any] = {}
    t_all = time.perf_counter()
    try:
        with _sigterm_as_interrupt():
            bench = Bench(plan=plan, db=db, workdir=workdir, children=children, out=out)
            (workdir / "hookline.toml").write_text(CONFIG_TOML.format(secret_env=SECRET_ENV) + sync_reply.CONFIG_TOML)
            out(f"hookline bench: database {db.kind}, rows {', '.join(plan.only)}{' (quick)' if plan.quick else ''}")
            machine = report.machine_facts()  # first: its idle check must not see our own start-up
            yard = [{"after": "start", "ops_per_s": round(report.yardstick())}]
            db.open()
            db.recreate()
            machine |= db.facts()
            if "ingest" in plan.only:
                t = time.perf_counter()
                try:
                    results["ingest"] = bench.ingest()
                except Exception as e:
                    results["ingest"] = bench._failed("ingest", e)
                finally:
                    children.stop_all()
                timings["ingest"] = time.perf_counter() - t
                yard.append({"after": "ingest", "ops_per_s": round(report.yardstick())})
                if any(r in plan.only for r in ROWS[1:4]):
                    db.recreate()  # the worker rows start from an empty queue
            worker_rows = tuple(r for r in ("pickup", "throughput", "lockchain") if r in plan.only)
            if worker_rows:
                t = time.perf_counter()
                results |= bench.worker_rows(worker_rows)
                timings["worker_rows"] = time.perf_counter() - t
                yard.append({"after": ",".join(worker_rows), "ops_per_s": round(report.yardstick())})
            for name in (r for r in SCENARIOS if r in plan.only):
                t = time.perf_counter()
                try:
                    results[name] = run_scenario(bench, name)
                except Exception as e:
                    results[name] = bench._failed(name, e)
                finally:
                    children.stop_all()
                timings[name] = time.perf_counter() - t
                yard.append({"after": name, "ops_per_s": round(report.yardstick())})
            if "sync" in plan.only:
                t = time.perf_counter()
                if results:
                    db.recreate()
                try:
                    results["sync"] = sync_reply.run_row(bench)
                except Exception as e:
                    results["sync"] = bench._failed("sync", e)
                finally:
                    children.stop_all()
                timings["sync"] = time.perf_counter() - t
                yard.append({"after": "sync", "ops_per_s": round(report.yardstick())})
            machine["yardstick"] = report.yardstick_summary(yard)
    finally:
        children.stop_all()
        with contextlib.suppress(Exception):
            db.close()
        shutil.rmtree(workdir, ignore_errors=True)
    timings["total"] = time.perf_counter() - t_all
    doc = report.document(plan, results, machine, timings, started)
    json_path.parent.mkdir(parents=True, exist_ok=True)
    json_path.write_text(json.dumps(doc, indent=2, default=str) + "\n")
    out(report.render(doc))
    from app.cli.bench.chart import draw

    out(draw(doc, json_path.with_suffix(".png")))
    out(f"JSON written to {json_path}")
    failed = [r for r, v in results.items() if isinstance(v, Mapping) and "error" in v]
    return (1 if failed else 0), json_path


def raise_if_unknown(only: tuple[str, ...]) -> None:
    unknown = [r for r in only if r not in ROWS]
    if unknown:
        raise BenchError(f"--only: unknown row(s) {', '.join(unknown)}; choose from {', '.join(ROWS)}")
