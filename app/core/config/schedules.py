"""``[schedules.NAME]``: a pipeline run on a clock over a window of past events.

Each firing becomes an event row (source ``schedule``, event type the schedule's name, delivery id
``NAME@<scheduled time, UTC ISO>``) whose payload is a digest of the window's events, so a firing
happens once however many workers run and shows in every view like any other event.
"""

from __future__ import annotations

import re
from datetime import UTC, datetime, timedelta, tzinfo
from typing import Any
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from croniter import croniter
from pydantic import Field, field_validator

from app.core.config._base import Strict
from app.core.status import EventStatus

#: The source of every schedule firing's event row.
SCHEDULE_SOURCE = "schedule"
_DURATION = re.compile(r"^\s*(\d+)\s*([smhdw])\s*$")
_UNIT = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 604800}


def parse_duration(text: str) -> timedelta:
    """``90s``, ``15m``, ``24h``, ``7d``, ``2w``."""
    m = _DURATION.match(text)
    if not m or int(m.group(1)) == 0:
        raise ValueError(f"{text!r} is not a duration like '15m', '24h' or '7d'")
    return timedelta(seconds=int(m.group(1)) * _UNIT[m.group(2)])


class LocalCron(croniter):  # type: ignore[misc]  # croniter ships no type hints
    """croniter read in a time zone, firing once per local time, as cron does when daylight saving
    ends. The hour from 02:00 to 03:00 then happens twice; a schedule that names its hours
    (``30 2 * * *``) fires in the first of them only, not twice in one night. A schedule whose hour
    is a wildcard (``*/30 * * * *``) keeps firing through both. When the clocks go forward, a time in
    the skipped hour fires at the first instant after it (croniter's own rule, also cron's)."""

    cur: float  # croniter's own attributes (it has no type hints)
    tzinfo: tzinfo | None

    def __init__(self, expr_format: str, start_time: datetime, *args: Any, **kwargs: Any) -> None:
        super().__init__(expr_format, start_time, *args, **kwargs)
        self._fixed_hours = not expr_format.split()[1].startswith("*")

    def _calc_next(self, is_prev: bool) -> datetime:
        result: datetime = super()._calc_next(is_prev)
        if not self._fixed_hours:
            return result
        saved = self.cur
        # fold=1: the second occurrence of a local time that happens twice (zoneinfo sets it)
        while datetime.fromtimestamp(self.datetime_to_timestamp(result), self.tzinfo).fold:
            self.cur = self.datetime_to_timestamp(result)
            result = super()._calc_next(is_prev)
        self.cur = saved
        return result


class ScheduleFilter(Strict):
    """Which events of the window the digest counts: by source, status and event type."""

    source: tuple[str, ...] = ()
    status: tuple[str, ...] = ()
    events: tuple[str, ...] = ()

    @field_validator("source", "status", "events", mode="before")
    @classmethod
    def _listify(cls, v: Any) -> Any:
        return [v] if isinstance(v, str) else v

    @field_validator("status")
    @classmethod
    def _statuses(cls, v: tuple[str, ...]) -> tuple[str, ...]:
        allowed = {s.value for s in EventStatus}
        bad = [s for s in v if s not in allowed]
        if bad:
            raise ValueError(f"unknown status(es) {bad}; use {sorted(allowed)}")
        return v


class Schedule(Strict):
    name: str = ""
    cron: str
    pipeline: str
    window: str = "24h"
    timezone: str = "UTC"
    filter: ScheduleFilter = Field(default_factory=ScheduleFilter)
    examples: int = Field(default=5, ge=0, le=50)
    example_fields: tuple[str, ...] = ()

    @field_validator("cron")
    @classmethod
    def _cron(cls, v: str) -> str:
        if len(v.split()) not in (5, 6) or not croniter.is_valid(v):
            raise ValueError(f"{v!r} is not a cron expression (5 fields, or 6 with seconds last)")
        return v

    @field_validator("window")
    @classmethod
    def _window(cls, v: str) -> str:
        parse_duration(v)
        return v

    @field_validator("timezone")
    @classmethod
    def _tz(cls, v: str) -> str:
        try:
            ZoneInfo(v)
        except (ZoneInfoNotFoundError, ValueError):
            raise ValueError(f"unknown time zone {v!r} (an IANA name like 'Europe/Berlin')") from None
        return v

    @field_validator("example_fields", mode="before")
    @classmethod
    def _fields(cls, v: Any) -> Any:
        return [v] if isinstance(v, str) else v

    @property
    def zone(self) -> ZoneInfo:
        return ZoneInfo(self.timezone)

    @property
    def window_delta(self) -> timedelta:
        return parse_duration(self.window)

    def next_run(self, after: datetime | None = None) -> datetime:
        """The first firing strictly after ``after`` (default: now), in the schedule's time zone."""
        start = (after or datetime.now(UTC)).astimezone(self.zone)
        nxt: datetime = LocalCron(self.cron, start).get_next(datetime)
        return nxt

    def delivery_id(self, scheduled: datetime) -> str:
        """``NAME@2026-12-01T09:00:00Z``: one event row per firing, whichever worker fires it."""
        return f"{self.name}@{scheduled.astimezone(UTC).strftime('%Y-%m-%dT%H:%M:%SZ')}"
