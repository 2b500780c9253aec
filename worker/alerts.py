"""``[[alerts]]``: budget, breaker and loop-guard alerts, sent through the configured actions.

An alert goes on a task of its own (:attr:`Runtime.alerts`), never inside the run of the event that
raised it: an alert's destination that is slow or down must not hold that event, nor spend its
pipeline's ``timeout_seconds`` (a breaker's probe that answered, then timed out sending the alert, failed
its event with the answer in hand). :meth:`Runtime.close` waits for the alerts still on their way.
A failed alert is logged, never retried.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import logging
from typing import Any

from app.core.config import SqlAction
from worker.runtime import Runtime

log = logging.getLogger("hookline.limits")


async def send_alert(rt: Runtime, kind: str, text: str, data: dict[str, Any], once: str | None = None) -> None:
    """Log the alert and send it through every ``[[alerts]]`` action, on a task of its own."""
    log.warning("alert (%s): %s", kind, text)
    if not rt.config.alerts:
        return
    task = asyncio.get_running_loop().create_task(_deliver(rt, kind, text, data, once), name=f"hookline-alert-{kind}")
    rt.alerts.add(task)
    task.add_done_callback(rt.alerts.discard)


async def _deliver(rt: Runtime, kind: str, text: str, data: dict[str, Any], once: str | None) -> None:
    """Each action in turn; a failure is logged and the next one still runs."""
    from worker.action_runs import deps_of
    from worker.actions import ActionContext, run_action
    from worker.actions import sql as sql_action

    for index, action in enumerate(rt.config.alerts):
        key = f"hookline-alert-{kind}-{once or dt.datetime.now(dt.UTC).isoformat()}-{index}"
        ctx = ActionContext(
            event_id=int(data.get("event_id") or 0),
            source="hookline",
            event_type=f"alert.{kind}",
            pipeline="alerts",
            action=f"{action.type}#{index}",
            idempotency_key=key,
            output={"alert": kind, "message": text, **data},
            payload=None,
        )
        try:
            if isinstance(action, SqlAction):  # its own transaction: an alert has no action run to record
                timeout = action.timeout_seconds or rt.settings.outbound_timeout
                async with rt.db.pool.connection() as conn:
                    await sql_action.call_alone(conn, action, ctx, timeout)
            else:
                await run_action(action, ctx, deps_of(rt))
        except Exception as e:
            log.warning("alert action %s failed: %s", ctx.action, e)
