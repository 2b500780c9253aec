"""Which function runs each of the issue-9 scenarios of ``hookline bench``."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from app.cli.bench import workload
from app.cli.bench.scenarios import SCENARIOS, floors

if TYPE_CHECKING:
    from app.cli.bench.runner import Bench

__all__ = ["SCENARIOS", "run_scenario"]


def run_scenario(bench: Bench, name: str) -> dict[str, Any]:
    """Run one of ``SCENARIOS`` (the database is recreated first: each starts from empty tables)."""
    bench.db.recreate()
    fn = {
        "floors": floors,
        "ack": workload.ack,
        "duplicates": workload.duplicates,
        "worker": workload.worker,
        "scale": workload.scale,
    }[name]
    return fn(bench)
