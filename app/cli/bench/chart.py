"""The bench's PNG: worker and web throughput against processes, and ack latency against offered rate.

matplotlib is optional (``pip install 'hookline[bench]'``); without it the chart is skipped and the
bench says so. The figure is drawn headless (Agg backend).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any


def draw(doc: dict[str, Any], path: Path) -> str:
    """Draw what the results hold; returns a line for the console."""
    results = doc.get("results") or {}
    scale = (results.get("scale") or {}).get("steps") or []
    worker_runs = (results.get("worker") or {}).get("runs") or []
    rates = (results.get("ack") or {}).get("rates") or []
    web = _web_processes(results.get("floors") or {})
    if not (scale or rates or worker_runs or web):
        return "chart: nothing to draw (run the scale, worker, ack or floors scenarios)"
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return "chart: skipped (matplotlib is not installed; pip install 'hookline[bench]')"
    if web:
        fig, (left, middle, right) = plt.subplots(1, 3, figsize=(17, 4.8))
        for label, style in (("ingest", "o-"), ("duplicate re-send", "s--"), ("bare route (HTTP floor)", "^:")):
            middle.plot(*zip(*web[label], strict=True), style, label=label)
        middle.set_xticks(sorted({n for points in web.values() for n, _ in points}))
        middle.set_xlabel("web processes on the port")
        middle.set_ylabel("req/s")
        middle.set_title("Web throughput against processes (wrk)")
        middle.grid(True, alpha=0.3)
        middle.legend()
    else:
        fig, (left, right) = plt.subplots(1, 2, figsize=(12, 4.8))
    if scale:
        xs = [s["processes"] for s in scale]
        left.plot(xs, [s["events_per_s"] or 0 for s in scale], "o-", label="dry-run worker (c=10 each)")
    fast = [r for r in worker_runs if not r["model_latency_s"] and r["concurrency"] == 10]
    if fast:
        left.plot(
            [r["processes"] for r in fast],
            [r["events_per_s"] or 0 for r in fast],
            "s--",
            label="fake model 0 ms (c=10 each)",
        )
    left.set_xlabel("worker processes")
    left.set_ylabel("events/s")
    left.set_title("Worker throughput against processes")
    left.grid(True, alpha=0.3)
    if left.lines:
        left.legend()
    if rates:
        offered = [r["offered_rate"] for r in rates]
        for key, style in (("p50", "o-"), ("p99", "s-")):
            right.plot(
                offered,
                [(r["latency_ms"] or {}).get(key) or 0 for r in rates],
                style,
                label=f"ack {key}, worker running",
            )
        right.plot(offered, [(r["pickup_ms"] or {}).get("p99") or 0 for r in rates], "^--", label="pickup p99 (worker)")
        alone = (results.get("ack") or {}).get("web_only") or []
        if alone:
            right.plot(
                [r["offered_rate"] for r in alone],
                [(r["latency_ms"] or {}).get("p99") or 0 for r in alone],
                "d:",
                label="ack p99, web only",
            )
        right.set_yscale("log")
        right.legend()
    right.set_xlabel("offered rate (req/s, paced)")
    right.set_ylabel("ms")
    right.set_title("Ack latency against offered rate")
    right.grid(True, alpha=0.3)
    fig.suptitle(f"hookline bench {doc.get('started_at', '')[:19]}")
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return f"chart written to {path}"


def _web_processes(floors: dict[str, Any]) -> dict[str, list[tuple[int, float]]]:
    """(processes, req/s) of the floors row's one- and two-process runs; empty when it has no second run."""
    two = floors.get("two_processes")
    if not two or "error" in floors:
        return {}
    runs = [(1, floors), (two["processes"], two)]
    return {
        label: [(n, float(r[key]["ok_rps"] or 0)) for n, r in runs]
        for label, key in (
            ("ingest", "ingest"),
            ("duplicate re-send", "duplicates"),
            ("bare route (HTTP floor)", "http_floor"),
        )
    }
