"""HTTP/1.1 keep-alive load generator over raw asyncio streams (``python -m app.cli.bench loadgen``).

Runs in its own process so it never shares the server's event loop. Every request is built (and
signed) before the clock starts; C connections each send one request at a time for D seconds, then
finish the request in flight and stop. 127.0.0.1 only. Prints one JSON object on stdout.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import time
from dataclasses import dataclass, field
from typing import Any

SECRET_ENV = "HOOKLINE_BENCH_SECRET"  # noqa: S105 - the name of a variable, not a secret
HOST = "127.0.0.1"


def event_body(i: int, prefix: str, key: str | None = None) -> bytes:
    """A ~600-byte Standard Webhooks style event, distinct per ``i``."""
    doc = {
        "type": "bench.created",
        "id": f"{prefix}-{i}",
        "key": key or f"k-{i % 97}",
        "timestamp": "2026-01-01T00:00:00Z",
        "data": {
            "object": "bench_item",
            "sequence": i,
            "customer": {"id": f"cus_{i % 1000:06d}", "email": f"user{i % 1000}@example.com", "name": "Bench User"},
            "amount": 1999 + i % 100,
            "currency": "eur",
            "description": "A synthetic webhook of a typical size, for hookline bench. " * 4,
            "metadata": {"order": f"ord_{i:08d}", "channel": "web", "attempt": 1},
        },
    }
    return json.dumps(doc, separators=(",", ":")).encode()


def build_requests(*, port: int, path: str, count: int, prefix: str, secret: str) -> list[bytes]:
    """``count`` complete HTTP/1.1 requests with valid signatures and delivery ids ``prefix-i``."""
    from app.signatures import sign

    out: list[bytes] = []
    now = time.time()
    for i in range(count):
        body = event_body(i, prefix)
        headers = sign("standard_webhooks", secret=secret, body=body, delivery_id=f"{prefix}-{i}", now=now)
        lines = [
            f"POST {path} HTTP/1.1",
            f"Host: {HOST}:{port}",
            "User-Agent: hookline-bench",
            f"Content-Length: {len(body)}",
        ]
        lines += [f"{k}: {v}" for k, v in headers.items()]
        out.append(("\r\n".join(lines) + "\r\n\r\n").encode("latin-1") + body)
    return out


@dataclass
class _Run:
    requests: list[bytes]
    cycle: bool
    warm_end: float
    end: float
    next_index: int = 0
    exhausted: bool = False
    latencies: list[float] = field(default_factory=list)
    statuses: dict[str, int] = field(default_factory=dict)
    outcomes: dict[str, int] = field(default_factory=dict)
    sent_total: int = 0
    conn_errors: int = 0
    #: Paced (open-loop) mode: request k is due at ``start + k / rate``; latency counts from then.
    rate: float | None = None
    start: float = 0.0
    #: Stop after this many requests (any mode).
    total: int | None = None
    taken: int = 0

    def due(self) -> float | None:
        return None if self.rate is None else self.start + self.taken / self.rate

    def take(self) -> bytes | None:
        if self.total is not None and self.taken >= self.total:
            self.exhausted = True
            return None
        if self.next_index >= len(self.requests):
            if not self.cycle:
                self.exhausted = True
                return None
            self.next_index = 0
        req = self.requests[self.next_index]
        self.next_index += 1
        self.taken += 1
        return req


def _outcome(body: bytes) -> str:
    for word in ("accepted", "duplicate"):
        if f'"{word}"'.encode() in body:
            return word
    return "other"


async def _connection(run: _Run, port: int) -> None:
    reader: asyncio.StreamReader | None = None
    writer: asyncio.StreamWriter | None = None
    try:
        while time.perf_counter() < run.end:
            if writer is None:
                reader, writer = await asyncio.open_connection(HOST, port)
            assert reader is not None
            due = run.due()
            req = run.take()
            if req is None:
                return
            if due is not None:
                if due > run.end:
                    return
                wait = due - time.perf_counter()
                if wait > 0:
                    await asyncio.sleep(wait)
            t0 = time.perf_counter() if due is None else due
            try:
                writer.write(req)
                head = await reader.readuntil(b"\r\n\r\n")
                status = head[9:12].decode("ascii", "replace")
                length = 0
                for line in head.split(b"\r\n")[1:]:
                    if line[:15].lower() == b"content-length:":
                        length = int(line[15:].strip())
                body = await reader.readexactly(length) if length else b""
                closing = b"\r\nconnection: close" in head.lower()
            except (OSError, asyncio.IncompleteReadError, asyncio.LimitOverrunError, ValueError):
                run.conn_errors += 1
                writer.close()
                reader = writer = None
                continue
            t1 = time.perf_counter()
            run.sent_total += 1
            outcome = _outcome(body)
            run.outcomes[outcome] = run.outcomes.get(outcome, 0) + 1
            if run.warm_end <= t0 and t1 <= run.end:
                run.latencies.append(t1 - t0)
                run.statuses[status] = run.statuses.get(status, 0) + 1
            if closing:
                writer.close()
                reader = writer = None
    finally:
        if writer is not None:
            writer.close()
            with contextlib.suppress(Exception):
                await writer.wait_closed()


def _stat(pid: int | str) -> list[str]:
    with open(f"/proc/{pid}/stat") as f:
        return f.read().rsplit(")", 1)[1].split()


def cpu_snapshot(pid: int | None, *, children: bool = False) -> tuple[float, float, float, float] | None:
    """(process CPU s, own CPU s, machine busy s, machine total s) from /proc; None where unavailable.
    ``children``: the process's CPU plus that of its live children (a supervisor's server processes)."""
    try:
        with open("/proc/stat") as f:
            ticks = [int(x) for x in f.readline().split()[1:]]
        proc = 0
        if pid:
            fields = _stat(pid)
            proc = int(fields[11]) + int(fields[12])  # utime + stime
        if pid and children:
            for entry in os.listdir("/proc"):
                if not entry.isdigit():
                    continue
                with contextlib.suppress(OSError):
                    child = _stat(entry)
                    if int(child[1]) == pid:  # ppid
                        proc += int(child[11]) + int(child[12])
    except (OSError, ValueError, IndexError):
        return None
    hz = float(os.sysconf("SC_CLK_TCK"))
    idle = ticks[3] + (ticks[4] if len(ticks) > 4 else 0)  # idle + iowait
    return proc / hz, time.process_time(), (sum(ticks) - idle) / hz, sum(ticks) / hz


def cpu_usage(
    a: tuple[float, float, float, float] | None, b: tuple[float, float, float, float] | None, wall: float
) -> dict[str, float | None]:
    """CPU use between two snapshots, in percent of one core (server, load generator) and of the machine."""
    if a is None or b is None or wall <= 0:
        return {"server_pct_of_core": None, "loadgen_pct_of_core": None, "machine_busy_pct": None}
    total = b[3] - a[3]
    return {
        "server_pct_of_core": round(100 * (b[0] - a[0]) / wall, 1),
        "loadgen_pct_of_core": round(100 * (b[1] - a[1]) / wall, 1),
        "machine_busy_pct": round(100 * (b[2] - a[2]) / total, 1) if total > 0 else None,
    }


def percentile(sorted_values: list[float], p: float) -> float | None:
    """Linear interpolation between closest ranks; ``p`` in [0, 100]."""
    if not sorted_values:
        return None
    k = (len(sorted_values) - 1) * p / 100.0
    lo = int(k)
    hi = min(lo + 1, len(sorted_values) - 1)
    return sorted_values[lo] + (sorted_values[hi] - sorted_values[lo]) * (k - lo)


async def _sample_cpu(run: _Run, pid: int | None, out: dict[str, Any]) -> None:
    await asyncio.sleep(max(0.0, run.warm_end - time.perf_counter()))
    a = cpu_snapshot(pid)
    await asyncio.sleep(max(0.0, run.end - time.perf_counter()))
    out |= cpu_usage(a, cpu_snapshot(pid), run.end - run.warm_end)


async def run_load(
    *,
    port: int,
    requests: list[bytes],
    concurrency: int,
    duration: float,
    warmup: float,
    cycle: bool,
    server_pid: int | None = None,
    rate: float | None = None,
    total: int | None = None,
) -> dict[str, Any]:
    start = time.perf_counter()
    run = _Run(
        requests=requests,
        cycle=cycle,
        warm_end=start + warmup,
        end=start + warmup + duration,
        rate=rate,
        start=start,
        total=total,
    )
    cpu: dict[str, Any] = {}
    sampler = asyncio.create_task(_sample_cpu(run, server_pid, cpu))
    results = await asyncio.wait_for(
        asyncio.gather(*(_connection(run, port) for _ in range(concurrency)), return_exceptions=True),
        timeout=warmup + duration + 60,
    )
    if not sampler.done():
        sampler.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await sampler
    failures = [repr(r) for r in results if isinstance(r, BaseException)]
    stopped = time.perf_counter()
    window = min(run.end, stopped) - run.warm_end
    lat = sorted(run.latencies)
    ok = run.statuses.get("200", 0)
    return {
        "concurrency": concurrency,
        "offered_rate": rate,
        "elapsed_s": round(stopped - start, 3),
        "duration_s": duration,
        "warmup_s": warmup,
        "window_s": round(window, 3),
        "requests": len(lat),
        "ok": ok,
        "rps": len(lat) / window if window > 0 else 0.0,
        "ok_rps": ok / window if window > 0 else 0.0,
        "latency_ms": {f"p{p}": _ms(percentile(lat, p)) for p in (50, 90, 99)} | {"max": _ms(lat[-1] if lat else None)},
        "statuses": run.statuses,
        "errors": sum(n for s, n in run.statuses.items() if s != "200") + run.conn_errors,
        "connection_errors": run.conn_errors,
        "connection_failures": failures[:5],
        "sent_total": run.sent_total,
        "outcomes_total": run.outcomes,
        "pool_size": len(requests),
        "pool_exhausted": run.exhausted,
        "cpu": cpu,
    }


def _ms(v: float | None) -> float | None:
    return None if v is None else round(v * 1000.0, 3)


def main(args: Any) -> int:
    """Entry point of the child process; ``args`` from ``app.cli.bench.__main__``."""
    secret = os.environ[SECRET_ENV]
    t0 = time.perf_counter()
    requests = build_requests(port=args.port, path=args.path, count=args.count, prefix=args.prefix, secret=secret)
    build_s = time.perf_counter() - t0
    loop_name = "asyncio"
    try:
        import uvloop

        runner: Any = uvloop.run
        loop_name = "uvloop"
    except ImportError:  # pragma: no cover - uvicorn[standard] brings uvloop
        runner = asyncio.run
    result = runner(
        run_load(
            port=args.port,
            requests=requests,
            concurrency=args.concurrency,
            duration=args.duration,
            warmup=args.warmup,
            cycle=args.cycle,
            server_pid=args.server_pid,
            rate=getattr(args, "rate", None),
            total=getattr(args, "total", None),
        )
    )
    result |= {"loop": loop_name, "presign_s": round(build_s, 3)}
    print(json.dumps(result))
    return 0
