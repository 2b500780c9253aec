"""The names of the named SQL blocks, one ``Literal`` per ``sql/queries/*.sql`` file.

Code reaches a block only through these types (see :class:`app.core.sqlfiles.NamedQueries`): a
mistyped name is a type error, and adding a block means adding its name here (the loader refuses a
file and a ``Literal`` that differ).
"""

from __future__ import annotations

from typing import Any, Literal

IngestQuery = Literal[
    "store_event",
    "find_event",
    "schema_versions",
    "queue_depth",
    "event_status_counts",
    "reply_state",
    "stored_answer",
    "reply_default",
]

WorkerQuery = Literal[
    "start_event",
    "finish_event",
    "retry_event",
    "succeeded_call",
    "insert_call",
    "claim_action",
    "finish_action",
    "prune_jobs",
    "prune_payloads",
    "supersede_calls",
    "newer_processed",
    "recent_for_key",
    "claim_late_reply",
]

ReplayQuery = Literal["replay_one", "replay_matching", "progress"]

WatchQuery = Literal["watch", "watched_table", "unwatch", "watched"]

AdminQuery = Literal[
    "list_events",
    "event_row",
    "event_calls",
    "event_actions",
    "event_timeline",
    "dead_letters",
    "replay_one",
    "replay_matching",
    "status_counts",
    "recent_counts",
    "queue_depth",
    "throughput",
    "cost",
    "events_by_ids",
]

ActionsQuery = Literal["sql_function_check", "record_action_succeeded"]

SchedulesQuery = Literal["insert_firing", "window_counts", "window_examples"]

#: Every file of sql/queries and its names (a test checks the two agree).
BY_FILE: dict[str, Any] = {
    "ingest": IngestQuery,
    "worker": WorkerQuery,
    "replay": ReplayQuery,
    "watch": WatchQuery,
    "admin": AdminQuery,
    "actions": ActionsQuery,
    "schedules": SchedulesQuery,
}
