"""Spend and load limits: ``[tenants."*"]`` / ``[tenants.NAME]``, ``[models."MODEL"]``, ``[[alerts]]``.

Tenants cap events per hour and tokens and dollars per UTC day; models carry shared per-minute rate
limits, a fallback, a circuit breaker and price overrides. The worker enforces all of them in
Postgres, so every worker process shares one count (see sql/migrations/0006_limits.sql).
"""

from __future__ import annotations

from typing import Literal

from pydantic import Field

from app.core.config._base import Strict


class Tenant(Strict):
    """``[tenants.NAME]`` (``"*"``: defaults for every tenant). An unset cap is no cap."""

    events_per_hour: int | None = Field(default=None, gt=0)
    tokens_per_day: int | None = Field(default=None, gt=0)
    usd_per_day: float | None = Field(default=None, gt=0)
    alert_at: float = Field(default=0.8, gt=0, le=1)
    on_cap: Literal["throttle", "dead"] = "throttle"

    def merged_over(self, defaults: Tenant) -> Tenant:
        """This tenant's own keys over the ``"*"`` defaults."""
        return defaults.model_copy(update={k: getattr(self, k) for k in self.model_fields_set})


class Breaker(Strict):
    """``breaker = { failures, window_seconds, open_seconds }``: open after ``failures`` failed calls
    within ``window_seconds``; after ``open_seconds`` one half-open probe decides."""

    failures: int = Field(default=5, ge=1)
    window_seconds: float = Field(default=60.0, gt=0)
    open_seconds: float = Field(default=30.0, gt=0)


class Prices(Strict):
    """USD per million tokens; overrides the built-in table for this model (unset keys keep it)."""

    input: float | None = Field(default=None, ge=0)
    output: float | None = Field(default=None, ge=0)
    cache_write_5m: float | None = Field(default=None, ge=0)
    cache_write_1h: float | None = Field(default=None, ge=0)
    cache_read: float | None = Field(default=None, ge=0)


class ModelLimits(Strict):
    """``[models."MODEL"]``: limits shared by every worker process, fallback, breaker, prices."""

    requests_per_minute: int | None = Field(default=None, gt=0)
    input_tokens_per_minute: int | None = Field(default=None, gt=0)
    output_tokens_per_minute: int | None = Field(default=None, gt=0)
    fallback: str | None = None
    breaker: Breaker | None = None
    prices: Prices | None = None


class RateLimit(Strict):
    """``[sources.NAME] rate_limit = { per_second, burst }``: ingest token bucket (per web process)."""

    per_second: float = Field(gt=0)
    burst: int | None = Field(default=None, gt=0)

    @property
    def capacity(self) -> float:
        return float(self.burst) if self.burst is not None else max(1.0, self.per_second)


__all__ = ["Breaker", "ModelLimits", "Prices", "RateLimit", "Tenant"]
