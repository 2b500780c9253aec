"""Process-local counters rendered as Prometheus text (``GET /metrics``)."""

from __future__ import annotations

import threading
from collections import Counter
from collections.abc import Iterable

_HELP = {
    "hookline_ingest_requests_total": "Webhook requests answered, by source and outcome.",
    "hookline_signature_failures_total": "Rejected signatures, by source, provider and reason code.",
    "hookline_handshakes_total": "Sender handshakes answered (not stored), by source.",
    "hookline_sync_replies_total": "Synchronous replies, by source, pipeline and outcome (answer, default, "
    "duplicate_answer, duplicate_default, render_error, disconnected).",
}


class Metrics:
    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._counters: Counter[tuple[str, tuple[tuple[str, str], ...]]] = Counter()

    def inc(self, name: str, amount: int = 1, **labels: str) -> None:
        key = (name, tuple(sorted(labels.items())))
        with self._lock:
            self._counters[key] += amount

    def value(self, name: str, **labels: str) -> int:
        with self._lock:
            return self._counters[(name, tuple(sorted(labels.items())))]

    def render(self, gauges: Iterable[tuple[str, str, dict[str, str], float]] = ()) -> str:
        lines: list[str] = []
        with self._lock:
            items = sorted(self._counters.items())
        seen: set[str] = set()
        for (name, labels), value in items:
            if name not in seen:
                seen.add(name)
                lines.append(f"# HELP {name} {_HELP.get(name, name)}")
                lines.append(f"# TYPE {name} counter")
            lines.append(f"{name}{_labels(labels)} {value}")
        for name, help_text, labels_d, gvalue in gauges:
            if name not in seen:
                seen.add(name)
                lines.append(f"# HELP {name} {help_text}")
                lines.append(f"# TYPE {name} gauge")
            lines.append(f"{name}{_labels(tuple(sorted(labels_d.items())))} {gvalue:g}")
        return "\n".join(lines) + "\n"


def _labels(labels: tuple[tuple[str, str], ...]) -> str:
    if not labels:
        return ""
    esc = (v.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n") for _, v in labels)
    return "{" + ",".join(f'{k}="{v}"' for (k, _), v in zip(labels, esc, strict=True)) + "}"
