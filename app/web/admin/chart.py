"""The dashboard's throughput and latency chart: a small hand-written SVG, no JavaScript library.

Bars: events received per minute over the last hour. Line: p95 latency (received → finished) of the
events received in that minute that have finished, on its own scale at the right.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from html import escape
from typing import Any

WIDTH, HEIGHT = 720, 220
LEFT, RIGHT, TOP, BOTTOM = 44, 52, 16, 28


def _nice(value: float) -> float:
    """A round axis maximum ≥ value (1, 2, 5 × 10^n)."""
    if value <= 0:
        return 1.0
    magnitude = 1.0
    while magnitude * 10 <= value:
        magnitude *= 10
    while magnitude > value:
        magnitude /= 10
    for step in (1, 2, 5, 10):
        if step * magnitude >= value:
            return step * magnitude
    return 10 * magnitude


def _seconds(v: float) -> str:
    return f"{v * 1000:.0f} ms" if v < 1 else f"{v:.1f} s"


def render(rows: list[dict[str, Any]], minutes: int = 60, now: datetime | None = None) -> str:
    """The SVG document for ``throughput`` rows (minute, received, p50_seconds, p95_seconds)."""
    now = (now or datetime.now(UTC)).replace(second=0, microsecond=0)
    first = now - timedelta(minutes=minutes - 1)
    by_minute = {r["minute"].astimezone(UTC).replace(second=0, microsecond=0): r for r in rows}
    slots = [by_minute.get(first + timedelta(minutes=i)) for i in range(minutes)]
    counts = [int(r["received"]) if r else 0 for r in slots]
    p95 = [float(r["p95_seconds"]) if r and r["p95_seconds"] is not None else None for r in slots]
    max_count = _nice(max(counts, default=0))
    max_latency = _nice(max((v for v in p95 if v is not None), default=0.0))
    plot_w, plot_h = WIDTH - LEFT - RIGHT, HEIGHT - TOP - BOTTOM
    slot_w = plot_w / minutes
    out = [
        f'<svg xmlns="http://www.w3.org/2000/svg" viewBox="0 0 {WIDTH} {HEIGHT}" width="{WIDTH}" height="{HEIGHT}" '
        'role="img" aria-label="Events per minute and p95 latency, last hour" font-family="sans-serif" font-size="11">',
        f'<rect x="{LEFT}" y="{TOP}" width="{plot_w}" height="{plot_h}" fill="#fafafa" stroke="#ddd"/>',
    ]
    for frac in (0.0, 0.5, 1.0):
        y = TOP + plot_h * (1 - frac)
        out.append(f'<line x1="{LEFT}" y1="{y:.1f}" x2="{LEFT + plot_w}" y2="{y:.1f}" stroke="#e5e5e5"/>')
        out.append(f'<text x="{LEFT - 6}" y="{y + 4:.1f}" text-anchor="end" fill="#2f6fb0">{max_count * frac:g}</text>')
        label = escape(_seconds(max_latency * frac))
        out.append(f'<text x="{LEFT + plot_w + 6}" y="{y + 4:.1f}" fill="#c0392b">{label}</text>')
    for i, n in enumerate(counts):
        if n:
            h = plot_h * n / max_count
            out.append(
                f'<rect class="bar" x="{LEFT + i * slot_w + 1:.1f}" y="{TOP + plot_h - h:.1f}" '
                f'width="{max(slot_w - 2, 1):.1f}" height="{h:.1f}" fill="#2f6fb0"><title>{n} event(s)</title></rect>'
            )
    points = [
        f"{LEFT + (i + 0.5) * slot_w:.1f},{TOP + plot_h * (1 - v / max_latency):.1f}"
        for i, v in enumerate(p95)
        if v is not None
    ]
    if len(points) == 1:
        cx, cy = points[0].split(",")
        out.append(f'<circle cx="{cx}" cy="{cy}" r="3" fill="#c0392b"/>')
    elif points:
        out.append(f'<polyline points="{" ".join(points)}" fill="none" stroke="#c0392b" stroke-width="2"/>')
    for i in range(0, minutes, 15):
        label = (first + timedelta(minutes=i)).strftime("%H:%M")
        out.append(f'<text x="{LEFT + i * slot_w:.1f}" y="{HEIGHT - 10}" fill="#666">{label}</text>')
    out.append(f'<text x="{LEFT}" y="{TOP - 4}" fill="#2f6fb0">events/min</text>')
    out.append(f'<text x="{LEFT + plot_w}" y="{TOP - 4}" text-anchor="end" fill="#c0392b">p95 latency</text>')
    out.append("</svg>")
    return "\n".join(out)
