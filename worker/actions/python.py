"""``type = "python"``: call ``package.module:function`` with the :class:`ActionContext`."""

from __future__ import annotations

import asyncio
import inspect
from typing import Any

from app.core.config import PythonAction, resolve_target
from worker.actions.base import ActionContext, ActionDeps


async def run(action: PythonAction, ctx: ActionContext, deps: ActionDeps) -> dict[str, Any]:
    fn = resolve_target(action.target)
    if inspect.iscoroutinefunction(fn):
        result = await fn(ctx)
    else:  # off the event loop: a slow function must not stall heartbeats or timeouts
        result = await asyncio.to_thread(fn, ctx)
        if inspect.isawaitable(result):
            result = await result
    return {"returned": result}  # made fit for jsonb by run_action (worker.actions.json_safe)
