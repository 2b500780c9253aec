"""What ``hookline bench`` runs, and how big."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

ROWS = ("ingest", "pickup", "throughput", "lockchain", "floors", "ack", "duplicates", "worker", "scale", "sync")


@dataclass(frozen=True)
class Plan:
    """What to run and how big; ``quick`` shrinks everything for the smoke test (< 30 s)."""

    quick: bool = False
    duration: float = 8.0
    concurrency: int = 32
    only: tuple[str, ...] = ROWS
    database_name: str = "hookline_bench"
    json_path: Path | None = None
    warmup: float = 1.0
    duplicate_duration: float = 2.0
    pickup_rate: float = 50.0
    pickup_seconds: float = 4.0
    throughput_events: int = 2000
    chain_links: int = 20
    chain_poll_interval: float = 5.0
    chain_concurrency: int = 4
    worker_concurrency: int = 10
    ack_rates: tuple[float, ...] = (100.0, 300.0, 500.0, 1000.0, 2000.0)
    ack_seconds: float = 4.0
    dup_deliveries: int = 10_000
    dup_distinct: int = 100
    dup_concurrency: int = 200
    worker_events: int = 1000
    #: (processes, concurrency) with the fake model at 0 ms, and at 1 s.
    worker_fast: tuple[tuple[int, int], ...] = ((1, 10), (1, 50), (2, 10), (2, 50))
    worker_slow: tuple[tuple[int, int], ...] = ((1, 10), (1, 50), (1, 200))
    #: Seconds of work each 1 s model run is given (events: this × concurrency/latency).
    slow_seconds: float = 6.0
    scale_max_processes: int = 4
    scale_events: int = 1000
    sync_requests: int = 300
    sync_concurrency: int = 4
    sync_model_ms: int = 200

    @classmethod
    def make(
        cls,
        *,
        quick: bool = False,
        duration: float | None = None,
        concurrency: int | None = None,
        only: tuple[str, ...] | None = None,
        database_name: str = "hookline_bench",
        json_path: Path | None = None,
    ) -> Plan:
        base = (
            cls(
                quick=True,
                duration=1.5,
                concurrency=8,
                warmup=0.3,
                duplicate_duration=0.5,
                pickup_seconds=1.0,
                throughput_events=100,
                chain_links=4,
                chain_poll_interval=0.5,
                ack_rates=(50.0, 200.0),
                ack_seconds=1.0,
                dup_deliveries=400,
                dup_distinct=20,
                dup_concurrency=20,
                worker_events=100,
                worker_fast=((1, 10),),
                worker_slow=((1, 20),),
                slow_seconds=2.0,
                scale_max_processes=2,
                scale_events=100,
                sync_requests=20,
                sync_model_ms=50,
            )
            if quick
            else cls()
        )
        d = duration if duration is not None else base.duration
        return cls(
            **{
                **base.__dict__,
                "duration": d,
                "concurrency": concurrency or base.concurrency,
                "only": only or ROWS,
                "database_name": database_name,
                "json_path": json_path,
                "warmup": min(base.warmup, d / 4),
            }
        )
