"""Statuses of events, model calls and action runs: one enum each, shared by every process.

They are ``StrEnum``s, so a member is the very string stored in Postgres (and passes as a query
parameter as is). ``tests/integration/test_status_enums.py`` checks each against the table's
``CHECK`` constraint, so Python and SQL cannot drift apart.
"""

from __future__ import annotations

from enum import StrEnum


class EventStatus(StrEnum):
    """``hookline.events.status``."""

    QUEUED = "queued"
    PROCESSING = "processing"
    SUCCEEDED = "succeeded"
    RETRYING = "retrying"
    DEAD = "dead"
    SKIPPED = "skipped"
    THROTTLED = "throttled"

    @property
    def terminal(self) -> bool:
        return self in TERMINAL_EVENT_STATUSES


TERMINAL_EVENT_STATUSES = frozenset({EventStatus.SUCCEEDED, EventStatus.DEAD, EventStatus.SKIPPED})


class CallStatus(StrEnum):
    """``hookline.llm_calls.status``."""

    SUCCEEDED = "succeeded"
    INVALID_OUTPUT = "invalid_output"
    FAILED = "failed"
    DRY_RUN = "dry_run"
    SUPERSEDED = "superseded"
    SIMULATED = "simulated"


class ActionStatus(StrEnum):
    """``hookline.action_runs.status``."""

    RUNNING = "running"
    SUCCEEDED = "succeeded"
    FAILED = "failed"


#: Each enum and the (table, CHECK constraint) it mirrors.
CHECKED: dict[type[StrEnum], tuple[str, str]] = {
    EventStatus: ("hookline.events", "events_status_check"),
    CallStatus: ("hookline.llm_calls", "llm_calls_status_check"),
    ActionStatus: ("hookline.action_runs", "action_runs_status_check"),
}
