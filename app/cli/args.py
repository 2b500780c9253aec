"""Argument types shared by the ``hookline`` subcommands."""

from __future__ import annotations

import argparse
import re
from collections.abc import Callable
from datetime import UTC, datetime, timedelta

_RELATIVE = re.compile(r"^(\d+(?:\.\d+)?)\s*([smhdw])$")
_UNITS = {"s": "seconds", "m": "minutes", "h": "hours", "d": "days", "w": "weeks"}


def at_least_one(what: str) -> Callable[[str], int]:
    """An argparse ``type``: a whole number of ``what`` (``"process"``, ``"run"``), one or more; anything
    else is refused with the reason (argparse prints it after the option's name)."""

    def parse(text: str) -> int:
        try:
            n = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{text!r} is not a whole number") from None
        if n < 1:
            raise argparse.ArgumentTypeError(f"{n} is fewer than one {what}")
        return n

    return parse


def when(text: str, now: datetime | None = None) -> datetime:
    """An argparse ``type`` (``--since``, ``--until``): ``2026-11-22T10:00:00Z``, ``2026-11-22``, or
    relative to now: ``90s``, ``30m``, ``2h``, ``7d``, ``1w``. Anything else is refused as any bad
    option value is (argparse names the option; exit 2), with the forms it reads."""
    now = now or datetime.now(UTC)
    m = _RELATIVE.match(text.strip())
    if m:
        try:
            return now - timedelta(**{_UNITS[m.group(2)]: float(m.group(1))})
        except OverflowError:
            raise argparse.ArgumentTypeError(f"{text!r} reaches further back than a date can (year 1)") from None
    try:
        parsed = datetime.fromisoformat(text.strip().replace("Z", "+00:00"))
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"cannot read {text!r} as a time: use ISO-8601 (2026-11-22T10:00Z) or a duration ago: 30m / 2h / 7d"
        ) from None
    return parsed if parsed.tzinfo else parsed.replace(tzinfo=UTC)
