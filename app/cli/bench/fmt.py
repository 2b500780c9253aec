"""Number formatting shared by the bench's printed rows."""

from __future__ import annotations

from typing import Any


def fmt(v: Any, digits: int = 1) -> str:
    if v is None:
        return "-"
    if isinstance(v, float):
        return f"{v:,.{digits}f}"
    return f"{v:,}" if isinstance(v, int) else str(v)


def lat(d: dict[str, Any] | None) -> str:
    d = d or {}
    return " / ".join(fmt(d.get(k), 2) for k in ("p50", "p90", "p99"))
