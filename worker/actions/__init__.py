"""What happens with a validated answer: one module per action type, dispatched by ``type``.

Each action runs under a unique ``(event_id, pipeline, action)`` row in hookline.action_runs; the
caller skips actions already succeeded, so a retried or replayed job never repeats a side effect
it knows happened. What each type does when a worker dies mid-action:

* ``http``, ``email``: at least once, with a stable idempotency key (``Idempotency-Key`` /
  ``webhook-id`` headers; the ``Message-ID``), so the receiver can drop the repeat.
* ``slack``: at most once (Slack has no idempotency key): an interrupted post is not repeated.
* ``sql``: exactly once: the call commits with its record (:mod:`worker.actions.sql`).
* ``log``, ``python``: run again.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any

from app.core.config import Action
from worker.actions import email, http, log, python, slack
from worker.actions.base import ActionContext, ActionDeps, envelope, json_safe
from worker.errors import PermanentError

__all__ = ["AT_MOST_ONCE", "IN_TRANSACTION", "ActionContext", "ActionDeps", "envelope", "json_safe", "run_action"]

Runner = Callable[[Any, ActionContext, ActionDeps], Awaitable[dict[str, Any]]]

RUNNERS: dict[str, Runner] = {
    "http": http.run,
    "log": log.run,
    "python": python.run,
    "slack": slack.run,
    "email": email.run,
}
#: Types never started again while their last start has an unknown outcome.
AT_MOST_ONCE = frozenset({"slack"})
#: Types the pipeline runs inside the transaction that records them (worker.actions.sql).
IN_TRANSACTION = frozenset({"sql"})


async def run_action(action: Action, ctx: ActionContext, deps: ActionDeps) -> dict[str, Any]:
    """Run one action; its result made fit for ``action_runs.result`` (jsonb), whatever a ``python``
    function returned or a receiver answered, so the record of an action that ran cannot fail."""
    runner = RUNNERS.get(action.type)
    if runner is None:
        raise PermanentError(f"action type {action.type!r} does not run outside a transaction")
    result: dict[str, Any] = json_safe(await runner(action, ctx, deps))
    return result
