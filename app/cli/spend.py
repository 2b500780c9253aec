"""``hookline status``: today's spend per tenant against its ``[tenants]`` caps.

A separate function so the status command (whatever its layout) adds one key, ``spend``, to its
data: one entry per tenant with usage this UTC day / hour, each beside its cap (None: no cap).
"""

from __future__ import annotations

from decimal import Decimal
from typing import Any

import psycopg

from app.core.config import Config
from app.core.querynames import LimitsQuery
from app.core.sqlfiles import NamedQueries


def spend_today(conn: psycopg.Connection[Any], config: Config) -> list[dict[str, Any]]:
    """Rows of hookline.budget_windows for this UTC day and hour, merged per tenant, with caps."""
    named: NamedQueries[LimitsQuery] = NamedQueries("limits", LimitsQuery)
    cur = conn.execute(named["spend_today"])
    names = [d.name for d in cur.description or ()]
    per: dict[str, dict[str, Any]] = {}
    for rec in cur.fetchall():
        row = dict(zip(names, rec, strict=True))
        tenant = row["tenant"]
        caps = config.tenant(tenant or None)
        entry = per.setdefault(
            tenant,
            {
                "tenant": tenant or "(none)",
                "events_this_hour": 0,
                "events_per_hour": caps.events_per_hour,
                "tokens_today": 0,
                "tokens_per_day": caps.tokens_per_day,
                "usd_today": 0.0,
                "usd_per_day": caps.usd_per_day,
                "reserved_tokens": 0,
                "reserved_usd": 0.0,
                "alerted": False,
            },
        )
        if row["period"] == "hour":
            entry["events_this_hour"] = int(row["events"])
        else:
            entry["tokens_today"] = int(row["tokens"])
            entry["usd_today"] = float(Decimal(row["usd"]))
            entry["reserved_tokens"] = int(row["reserved_tokens"])
            entry["reserved_usd"] = float(Decimal(row["reserved_usd"]))
        entry["alerted"] = entry["alerted"] or row["alerted_at"] is not None
    return list(per.values())
