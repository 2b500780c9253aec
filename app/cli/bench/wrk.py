"""The C load generator, when installed: ``wrk`` (Debian package ``wrk``) with pre-signed requests.

The requests are the Python load generator's own (``loadgen.build_requests``: valid signatures,
distinct delivery ids), written verbatim into a Lua script that hands them out in turn; wrk runs one
thread, so each request is sent once until the list wraps. Results are shaped like the Python load
generator's (``ok_rps``, ``latency_ms``, ``errors``), so the report reads either.
"""

from __future__ import annotations

import re
import shutil
import subprocess
import time
from pathlib import Path
from typing import Any

from app.cli.bench.loadgen import cpu_snapshot, cpu_usage

_CHUNK = 4000  # requests per Lua function (LuaJIT caps constants per function)


def available() -> str | None:
    """Path of ``wrk``, or None."""
    return shutil.which("wrk")


def lua_script(requests: list[bytes], *, started: Path | None = None) -> str:
    """The script handing out ``requests`` in turn; with ``started``, wrk's ``init`` (called once the
    script is loaded, just before the timed run) creates that file."""
    out = ["local r = {}"]
    for start in range(0, len(requests), _CHUNK):
        out.append("do local function f()")
        out.extend(f"r[#r + 1] = {_lua_string(req)}" for req in requests[start : start + _CHUNK])
        out.append("end f() end")
    out.append('for k = 1, #r do r[k] = r[k]:gsub("\\n", "\\r\\n") end')
    out.append("local i, n = 0, #r")
    out.append("request = function() i = i + 1; if i > n then i = 1 end; return r[i] end")
    if started is not None:
        assert "]====]" not in str(started)
        out.append(f"init = function(args) local f = io.open([====[{started}]====], 'w'); if f then f:close() end end")
    return "\n".join(out) + "\n"


def _lua_string(data: bytes) -> str:
    """A Lua long string of these bytes with CRLF written as LF (Lua reads any line break in a long
    string as LF; the script puts the CR back once at load). Bench bodies are one-line JSON."""
    text = data.decode("latin-1")
    head, sep, body = text.partition("\r\n\r\n")
    assert "\n" not in body and "\r" not in body and "]====]" not in text
    return "[====[" + (head + sep).replace("\r\n", "\n") + body + "]====]"


_UNITS = {"us": 0.001, "ms": 1.0, "s": 1000.0, "m": 60000.0}


def _ms(text: str) -> float | None:
    m = re.fullmatch(r"([\d.]+)(us|ms|s|m)", text.strip())
    return round(float(m.group(1)) * _UNITS[m.group(2)], 3) if m else None


def parse(output: str, duration: float) -> dict[str, Any]:
    lat: dict[str, float | None] = {}
    for pct, key in (("50", "p50"), ("90", "p90"), ("99", "p99")):
        m = re.search(rf"^\s*{pct}%\s+(\S+)", output, re.MULTILINE)
        lat[key] = _ms(m.group(1)) if m else None
    m = re.search(r"Latency\s+\S+\s+\S+\s+(\S+)", output)
    lat["max"] = _ms(m.group(1)) if m else None
    total = int(m.group(1)) if (m := re.search(r"(\d+) requests in ([\d.]+)(\w+)", output)) else 0
    non2xx = int(m.group(1)) if (m := re.search(r"Non-2xx or 3xx responses: (\d+)", output)) else 0
    sock = re.search(r"Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)", output)
    sock_errors = sum(int(x) for x in sock.groups()) if sock else 0
    rps = float(m.group(1)) if (m := re.search(r"Requests/sec:\s+([\d.]+)", output)) else 0.0
    ok_share = (total - non2xx) / total if total else 0.0
    return {
        "generator": "wrk",
        "requests": total,
        "rps": rps,
        "ok_rps": rps * ok_share,
        "latency_ms": lat,
        "errors": non2xx + sock_errors,
        "non_2xx": non2xx,
        "socket_errors": sock_errors,
        "duration_s": duration,
    }


def run(
    *,
    port: int,
    path: str,
    requests: list[bytes],
    concurrency: int,
    duration: float,
    workdir: Path,
    name: str,
    server_pid: int | None = None,
    server_children: bool = False,
) -> dict[str, Any]:
    """One wrk run against 127.0.0.1:``port``; raises if wrk is missing or fails.

    With ``server_pid``, the server's CPU (with its children's: ``server_children``) is measured from the
    moment wrk starts sending to its exit, not while it loads its script (seconds, for a long list)."""
    exe = available()
    if exe is None:
        raise RuntimeError("wrk is not installed")
    script = workdir / f"{name}.lua"
    started = workdir / f"{name}.started"
    started.unlink(missing_ok=True)
    script.write_text(lua_script(requests, started=started), encoding="latin-1")
    argv = [
        exe,
        "-t1",
        f"-c{concurrency}",
        f"-d{max(1, round(duration))}s",
        "--latency",
        "--timeout",
        "10s",
        "-s",
        str(script),
        f"http://127.0.0.1:{port}{path}",
    ]
    proc = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.monotonic() + 120
        while not started.exists() and proc.poll() is None and time.monotonic() < deadline:
            time.sleep(0.005)
        cpu_a, t_a = cpu_snapshot(server_pid, children=server_children), time.perf_counter()
        stdout, stderr = proc.communicate(timeout=duration + 120)
        cpu_b, t_b = cpu_snapshot(server_pid, children=server_children), time.perf_counter()
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    if proc.returncode != 0:
        raise RuntimeError(f"wrk exited {proc.returncode}: {stderr.strip()[:300]}")
    result = parse(stdout, duration)
    result |= {"pool_size": len(requests), "pool_wrapped": result["requests"] > len(requests)}
    if server_pid is not None:
        usage = cpu_usage(cpu_a, cpu_b, t_b - t_a)
        result |= {
            "server_cpu_pct_of_core": usage["server_pct_of_core"],
            "machine_busy_pct": usage["machine_busy_pct"],
            "cpu_window_s": round(t_b - t_a, 3),  # wrk's own run: from its first request to its exit
        }
    return result
