"""``[sources.NAME] rate_limit``: a token bucket per source, in this web process's memory.

Per process, on purpose: the check sits on the ingest hot path, where a database round trip per
request would halve throughput. With N web processes a source may get up to N times its limit;
divide ``per_second`` and ``burst`` by the number of web processes if that matters. (The model
rate limits of the worker are shared through Postgres: see worker/limits.py.)
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass, field

from app.core.config import RateLimit


@dataclass
class _Bucket:
    tokens: float
    at: float


@dataclass
class IngestLimiter:
    _buckets: dict[str, _Bucket] = field(default_factory=dict)

    def take(self, source: str, limit: RateLimit, now: float | None = None) -> float:
        """0 when the request may go on, else the whole seconds the sender should wait (Retry-After)."""
        t = time.monotonic() if now is None else now
        cap = limit.capacity
        b = self._buckets.get(source)
        if b is None:
            b = self._buckets[source] = _Bucket(cap, t)
        b.tokens = min(cap, b.tokens + (t - b.at) * limit.per_second)
        b.at = t
        if b.tokens >= 1:
            b.tokens -= 1
            return 0.0
        return float(max(1, math.ceil((1 - b.tokens) / limit.per_second)))
