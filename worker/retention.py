"""Payload retention of the events whose source masks fields (``redact`` in hookline.toml).

The admin API, the dashboard and the CLI mask a redacted value where an event's kept rows repeat it
(the model's answer, an action's result, an error: app/core/redaction.py), and they find those values
in the event's payload. Retention drops the payload, so before it does, this module masks the same
values in the stored rows, with the same functions: what retention keeps (``llm_calls.output``,
``error`` and a dead letter's ``response``, ``action_runs.result`` and ``error``, ``events.last_error``
and ``detail``) then reads ``[redacted]`` for good. The masking and the prune of a batch are one
transaction, so no event is ever pruned but left unmasked.

Events of other sources go through ``hookline.prune_payloads`` as before (worker.runtime).
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from app.core.config import SCHEDULE_SOURCE, Config
from app.core.redaction import Scrubber, hidden_values, may_hide
from worker.db import WorkerDB


def masked_sources(config: Config) -> list[str]:
    """The sources whose events may have values to mask (a schedule firing's digest too, when any
    source redacts): their payloads are pruned here, not by the plain batch."""
    return sorted(name for name in {*config.sources, SCHEDULE_SOURCE} if may_hide(config, name))


async def prune_masked(db: WorkerDB, config: Config, masked: list[str], *, days: int, batch: int) -> int:
    """Mask, then prune, the events of ``masked`` sources among the next ``batch`` due (those
    ``hookline.prune_payloads`` left), in one transaction; returns how many it pruned (0: none of the
    next ones due is theirs)."""
    async with db.transaction() as rows:
        due = await rows("due_masked_events", days=days, batch=batch, masked=masked)
        if not due:
            return 0
        events: list[dict[str, Any]] = []
        calls: list[dict[str, Any]] = []
        actions: list[dict[str, Any]] = []
        for event in due:
            hidden = hidden_values(config, event["source"], event["payload"])
            if hidden:
                mask = Scrubber(hidden)
                events += _masked([event], mask, ("last_error", "detail"))
                calls += _masked(event["calls"], mask, ("output", "error", "response"))
                actions += _masked(event["actions"], mask, ("result", "error"))
        ids = [int(e["id"]) for e in due]
        pruned = await rows("prune_event_payloads", ids=ids, events=events, calls=calls, actions=actions)
        return int(pruned[0]["pruned"])


def _masked(found: Iterable[dict[str, Any]], mask: Scrubber, columns: tuple[str, ...]) -> list[dict[str, Any]]:
    """The rows of ``found`` that masking changes: ``{"id": …}`` and each changed column's new value."""
    out = []
    for row in found:
        changed = {c: new for c in columns if (new := mask(row[c])) != row[c]}
        if changed:
            out.append({"id": row["id"], **changed})
    return out
