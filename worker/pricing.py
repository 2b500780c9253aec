"""USD per million tokens, by model (effective 2026-10-07). Update with the provider's price page."""

from __future__ import annotations

from decimal import Decimal
from typing import Any

from app.core.config import Config

PRICES_EFFECTIVE = "2026-10-07"

#: model → (input, output, 5m cache write, 1h cache write, cache read), USD per 1M tokens.
PRICES: dict[str, tuple[str, str, str, str, str]] = {
    "claude-haiku-5-5": ("0.10", "0.50", "0.125", "0.20", "0.01"),
    "claude-haiku-4-5": ("1", "5", "1.25", "2", "0.10"),
    "claude-sonnet-5-5": ("2", "10", "2.50", "4", "0.10"),
    "claude-sonnet-5": ("2", "10", "2.50", "4", "0.20"),
    "claude-sonnet-4-6": ("3", "15", "3.75", "6", "0.30"),
    "claude-sonnet-4-5": ("3", "15", "3.75", "6", "0.30"),
    "claude-opus-5-5": ("4", "20", "5", "8", "0.20"),
    "claude-opus-5": ("5", "25", "6.25", "10", "0.50"),
    "claude-opus-4-8": ("5", "25", "6.25", "10", "0.50"),
    "claude-opus-4-7": ("5", "25", "6.25", "10", "0.50"),
    "claude-opus-4-6": ("5", "25", "6.25", "10", "0.50"),
    "claude-opus-4-5": ("5", "25", "6.25", "10", "0.50"),
    "claude-fable-5-1": ("10", "50", "12.50", "20", "0.25"),
    "claude-mythos-5-1": ("10", "50", "12.50", "20", "0.25"),
}
_M = Decimal(1_000_000)
#: model → prompt tokens (input + cache reads + cache writes) above which the whole request costs 5 ×
LONG_PROMPT_TIER: dict[str, int] = {"claude-haiku-5-5": 100_000}


_KEYS = ("input", "output", "cache_write_5m", "cache_write_1h", "cache_read")


def cost_usd(model: str, usage: dict[str, Any], override: dict[str, float | None] | None = None) -> Decimal | None:
    """Cost of one call from its ``usage`` block; None for a model without a price.

    ``override`` is ``[models."MODEL"].prices`` (USD / 1M tokens by key); its set keys replace the
    built-in table's (and give a price to a model the table does not know, missing keys at 0).
    """
    price = PRICES.get(model) or PRICES.get(model.rsplit("-", 1)[0])
    given = {k: v for k, v in (override or {}).items() if v is not None}
    if price is None and not given:
        return None
    inp = int(usage.get("input_tokens") or 0)
    out = int(usage.get("output_tokens") or 0)
    rd = int(usage.get("cache_read_input_tokens") or 0)
    cc = usage.get("cache_creation") or {}
    w5 = int(cc.get("ephemeral_5m_input_tokens") or 0)
    w1 = int(cc.get("ephemeral_1h_input_tokens") or 0)
    if not (w5 or w1):
        w5 = int(usage.get("cache_creation_input_tokens") or 0)
    # the built-in table's long-prompt tier (every token of the request at 5 ×); prices the config
    # sets are taken as they are, and the keys it leaves unset keep the table's tier
    tier = 5 if model in LONG_PROMPT_TIER and inp + rd + w5 + w1 > LONG_PROMPT_TIER[model] else 1
    base = {k: Decimal(v) * tier for k, v in zip(_KEYS, price or ("0",) * 5, strict=True)}
    base.update({k: Decimal(str(v)) for k, v in given.items()})
    p_in, p_out, p_w5, p_w1, p_rd = (base[k] for k in _KEYS)
    total = (inp * p_in + out * p_out + w5 * p_w5 + w1 * p_w1 + rd * p_rd) / _M
    if usage.get("service_tier") == "batch":
        total /= 2
    return total.quantize(Decimal("0.00000001"))


def unpriced_models(config: Config) -> list[str]:
    """Models the config may call (pipelines' ``model``, ``escalate.model`` and their ``fallback``) that
    have no price, when a tenant has a ``usd_per_day`` cap: their calls are refused (their cost could not
    be counted against it). Empty without any ``usd_per_day``."""
    if not any(t.usd_per_day is not None for t in config.tenants.values()):
        return []
    models: set[str] = set()
    for p in config.pipelines.values():
        for m in (p.model, p.escalate.model if p.escalate is not None else None):
            if m:
                models.add(m)
                models.update(f for f in (config.model_limits(m).fallback,) if f)
    out = []
    for m in sorted(models):
        prices = config.model_limits(m).prices
        if cost_usd(m, {}, prices.model_dump() if prices is not None else None) is None:
            out.append(m)
    return out
