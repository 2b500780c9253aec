"""[tenants], [models], [[alerts]], the new pipeline keys and source rate_limit: names and checks."""

from __future__ import annotations

from decimal import Decimal
from typing import Any

import pytest

from app.core.config import parse_config
from app.core.errors import ConfigError
from app.web.ratelimit import IngestLimiter
from worker.pricing import cost_usd

BASE: dict[str, Any] = {
    "sources": {"stripe": {"provider": "stripe", "secrets_env": ["S"]}},
    "pipelines": {
        "triage": {
            "source": "stripe",
            "instructions": "x",
            "output_schema": {"type": "object", "properties": {"urgent": {"type": "boolean"}}},
        }
    },
}


def _with(**top: Any) -> dict[str, Any]:
    return {**BASE, **top}


def test_the_issue_block_parses_and_tenant_caps_merge_over_the_defaults() -> None:
    config = parse_config(
        _with(
            tenants={
                "*": {"events_per_hour": 5000, "tokens_per_day": 5_000_000, "usd_per_day": 20.0, "alert_at": 0.8},
                "acme": {"usd_per_day": 100.0},
            },
            models={
                "claude-haiku-5-5": {
                    "requests_per_minute": 4000,
                    "input_tokens_per_minute": 400000,
                    "output_tokens_per_minute": 80000,
                    "fallback": "claude-haiku-4-5",
                    "breaker": {"failures": 5, "window_seconds": 60, "open_seconds": 30},
                    "prices": {"input": 0.10, "output": 0.50, "cache_write_5m": 0.125, "cache_write_1h": 0.20,
                               "cache_read": 0.01},
                }
            },
            alerts=[{"type": "http", "url_env": "OPS_ALERT_URL"}],
            pipelines={
                "triage": {
                    **BASE["pipelines"]["triage"],
                    "priority": 10,
                    "concurrency": {"per_tenant": 4, "per_key": 1},
                    "loop_guard": {"max_events": 30, "window_seconds": 60},
                    "escalate": {"model": "claude-sonnet-5-5", "when": "urgent"},
                }
            },
        )
    )  # fmt: skip
    acme, other = config.tenant("acme"), config.tenant("zeta")
    assert (acme.usd_per_day, acme.tokens_per_day, acme.on_cap) == (100.0, 5_000_000, "throttle")
    assert other.usd_per_day == 20.0 and config.tenant(None) == other
    assert config.priority_for("stripe", "anything") == 10 and config.priority_for("other", None) == 0
    assert config.model_limits("claude-haiku-5-5").fallback == "claude-haiku-4-5"


@pytest.mark.parametrize(
    ("top", "expected"),
    [
        ({"tenants": {"*": {"on_cap": "explode"}}}, "tenants.*.on_cap"),
        ({"tenants": {"acme": {"usd_per_day": -1}}}, "tenants.acme.usd_per_day"),
        ({"models": {"m": {"fallback": "m"}}}, "cannot fall back to itself"),
        ({"models": {"m": {"breaker": {"failures": 0}}}}, "models.m.breaker.failures"),
        ({"models": {"m": {"rpm": 5}}}, "models.m.rpm: unknown key"),
        ({"alerts": [{"type": "pager"}]}, "alerts.0"),
    ],
)
def test_bad_limits_name_the_key(top: dict[str, Any], expected: str) -> None:
    with pytest.raises(ConfigError) as exc:
        parse_config(_with(**top))
    assert expected in str(exc.value)


def test_escalate_needs_a_boolean_field_and_batch_excludes_batch_api() -> None:
    p = BASE["pipelines"]["triage"]
    with pytest.raises(ConfigError, match=r"escalate\.when"):
        parse_config(_with(pipelines={"triage": {**p, "escalate": {"model": "m", "when": "nope"}}}))
    with pytest.raises(ConfigError, match="do not combine"):
        parse_config(_with(pipelines={"triage": {**p, "batch": {"max_events": 5}, "mode": "batch_api"}}))


def test_price_overrides_replace_the_built_in_table() -> None:
    usage = {"input_tokens": 10_000, "output_tokens": 10_000}
    assert cost_usd("claude-haiku-5-5", usage) == Decimal("0.006")
    assert cost_usd("claude-haiku-5-5", usage, {"input": 1.0, "output": None}) == Decimal("0.015")
    assert cost_usd("my-own-model", usage) is None
    assert cost_usd("my-own-model", usage, {"input": 2.0}) == Decimal("0.02")


def test_the_long_prompt_tier_keeps_for_the_prices_the_config_leaves_unset() -> None:
    """Haiku 5.5 above 100k prompt tokens costs 5 × for every token of the request; a config that sets
    one price (its cache reads, say) must not bill the others at the short-prompt rate."""
    long = {"input_tokens": 100_001, "output_tokens": 1_000}
    assert cost_usd("claude-haiku-5-5", long) == Decimal("0.0525005")  # (100,001 × 0.50 + 1,000 × 2.50) / 1M
    assert cost_usd("claude-haiku-5-5", long, {"cache_read": 0.02}) == Decimal("0.0525005")
    assert cost_usd("claude-haiku-5-5", long, {"input": 0.3}) == Decimal("0.0325003")  # as set, output tiered
    at_edge = {"input_tokens": 60_000, "cache_read_input_tokens": 40_000, "output_tokens": 0}
    assert cost_usd("claude-haiku-5-5", at_edge) == Decimal("0.0064")  # 100,000 exactly: the short tier


def test_ingest_bucket_refills_and_says_how_long_to_wait() -> None:
    config = parse_config(
        {"sources": {"s": {"provider": "stripe", "secrets_env": ["S"], "rate_limit": {"per_second": 2, "burst": 2}}}}
    )
    limit = config.sources["s"].rate_limit
    assert limit is not None
    lim = IngestLimiter()
    assert [lim.take("s", limit, now=0.0) for _ in range(3)] == [0.0, 0.0, 1.0]
    assert lim.take("s", limit, now=0.5) == 0.0  # one token back after half a second
