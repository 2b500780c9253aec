"""Typed records of the rows hookline's code reads back from Postgres.

Each is a ``TypedDict`` named after the query that returns it, so mypy checks every column a caller
reads (a misspelt or missing column is a type error), while the row stays the plain mapping the
driver produced: no copy per row on the hot path.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any, NotRequired, TypedDict


class EventRow(TypedDict):
    """``start_events``: the event a job works on."""

    id: int
    source: str
    delivery_id: str
    event_type: str | None
    tenant: str | None
    ordering_key: str | None
    occurred_at: datetime | None
    payload: Any
    attempts: int
    received_at: datetime
    request_id: str | None
    #: {pipeline: {"output": …}}: the succeeded answers stored for this event (loaded with it).
    answers: NotRequired[dict[str, Any]]
    #: the event's claims after this claim (hookline.events.claims): the run's fencing token, never handed
    #: out twice for one event, replays included (migration 0048)
    claims: int


class StartRow(TypedDict):
    """``start_events``: one claimed job; its event's columns (those of :class:`EventRow`) follow,
    all NULL (``id`` None) when the event was already terminal."""

    event_id: int
    #: None for the job procrastinate handed over; the id of a job this worker claimed itself
    job_id: int | None
    job_attempts: int | None
    id: int | None
    #: seconds from runnable to started (when asked for; None when procrastinate's log lacks it)
    pickup_s: float | None


class CallIdRow(TypedDict):
    """``insert_call``: the stored call (None when a succeeded call was already stored)."""

    id: int | None
    #: with finish parameters: whether the row finished its event (false: the run's claim was no longer
    #: current, migration 0047); None without them
    finished: NotRequired[bool | None]


class FinishedRow(TypedDict):
    """``finish_event``: whether the outcome was recorded (false: the run's claim was no longer current)."""

    finished: bool


class StoredCallRow(TypedDict):
    """``succeeded_call``: the stored answer a retry reuses."""

    id: int
    output: Any
    response: Any


class IdRow(TypedDict):
    """``insert_call``, ``newer_processed``, ``micro_item_stuck``: just an id."""

    id: int


class ClaimRow(TypedDict):
    """``claim_action``: the action run now owned by this job; ``id`` None when another worker's run
    of it may still be in flight (for up to ``held_s`` seconds more)."""

    id: int | None
    attempts: int | None
    previous_status: str | None
    idempotency_key: str | None
    held_s: float | None


class HistoryRow(TypedDict):
    """``recent_for_key``: an earlier event of the same entity."""

    id: int
    event_type: str | None
    occurred_at: datetime | None
    received_at: datetime
    status: str
    payload: Any


class LateReplyRow(TypedDict):
    """``claim_late_reply``: what the sync reply carried ('answer', 'default' or not yet decided)."""

    respond_sync: bool
    sync_reply: str | None
    remaining_s: float | None
