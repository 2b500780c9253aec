"""The names of the named SQL blocks, one ``Literal`` per ``sql/queries/*.sql`` file.

Code reaches a block only through these types (see :class:`app.core.sqlfiles.NamedQueries`): a
mistyped name is a type error, and adding a block means adding its name here (the loader refuses a
file and a ``Literal`` that differ).
"""

from __future__ import annotations

from typing import Any, Literal

IngestQuery = Literal[
    "store_event",
    "store_invalid_event",
    "find_event",
    "store_events",
    "notify_events_stored",
    "find_events",
    "schema_versions",
    "reply_state",
    "reply_answer",
    "reply_default",
]

WorkerQuery = Literal[
    "start_events",
    "fetch_job",
    "finish_event",
    "retry_job",
    "retry_event",
    "succeeded_call",
    "insert_call",
    "insert_calls",
    "notify_after_commit",
    "claim_action",
    "finish_action",
    "cut_off_action",
    "prune_jobs",
    "prune_payloads",
    "prune_alerts_sent",
    "fold_count_slots",
    "due_masked_events",
    "prune_event_payloads",
    "supersede_calls",
    "newer_processed",
    "recent_for_key",
    "claim_late_reply",
    "reply_no_answer",
    "micro_item_stuck",
    "open_batch_pipelines",
    "batch_item_cancel",
    "batch_retire_pending",
    "wake_throttled",
    "rate_limited_calls",
]

LimitsQuery = Literal[
    "take_model_capacity",
    "settle_model_capacity",
    "observe_model_limits",
    "admit_event",
    "admit_guarded",
    "reserve_budget",
    "settle_budget",
    "claim_alert",
    "claim_cap_alert",
    "breaker_acquire",
    "breaker_release",
    "breaker_record",
    "wake_breaker_waiters",
    "throttle_event",
    "replay_applied",
    "spend_today",
    "claim_once",
    "batch_item_latest",
    "batch_item_add",
    "batch_item_retire",
    "batch_claim_pending",
    "batch_mark_submitted",
    "batch_open",
    "batch_item_finish",
    "wake_event_job",
    "batch_item_finish_fail",
    "micro_item_latest",
    "micro_item_add",
    "micro_pending",
    "micro_claim",
    "micro_release",
    "micro_item_done",
    "micro_item_fail",
    "micro_simulated_part",
    "acquire_slots",
    "release_slots",
    "count_infra_failure",
    "escalation_due",
    "supersede_call",
    "store_escalated",
]

ReplayQuery = Literal["replay_one", "replay_matching", "dismiss", "progress"]

WatchQuery = Literal["watch", "watched_table", "unwatch", "watched"]

AdminQuery = Literal[
    "list_events",
    "event_row",
    "dead_letters",
    "event_payloads",
    "replay_one",
    "replay_matching",
    "dismiss_one",
    "dismiss_matching",
    "dead_letter_counts",
    "status_counts",
    "recent_counts",
    "queue_depth",
    "throughput",
    "cost",
    "events_by_ids",
]

ActionsQuery = Literal["sql_function_check", "record_action_succeeded", "action_run_status"]

SchedulesQuery = Literal["insert_firing", "window_counts", "window_examples"]

ObserveQuery = Literal[
    "event_detail",
    "event_payload",
    "event_timeline",
    "event_calls",
    "event_actions",
    "event_brief",
    "events_between",
    "metric_totals",
    "queue_depth",
    "dead_letters_count",
    "dismissed_count",
    "event_rates",
    "spend_today",
    "event_status_counts",
    "jobs_by_status",
    "breaker_states",
]

#: Every file of sql/queries and its names (a test checks the two agree).
BY_FILE: dict[str, Any] = {
    "ingest": IngestQuery,
    "worker": WorkerQuery,
    "limits": LimitsQuery,
    "replay": ReplayQuery,
    "watch": WatchQuery,
    "admin": AdminQuery,
    "actions": ActionsQuery,
    "schedules": SchedulesQuery,
    "observe": ObserveQuery,
}
