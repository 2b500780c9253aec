"""``type = "log"``: the answer as one log line (for trying a pipeline out)."""

from __future__ import annotations

import json
import logging
from typing import Any

from app.core.config import LogAction
from app.core.redaction import masked_values
from worker.actions.base import ActionContext, ActionDeps


async def run(action: LogAction, ctx: ActionContext, deps: ActionDeps) -> dict[str, Any]:
    logging.getLogger("hookline.output").log(
        logging.getLevelName(action.level.upper()),
        "%s/%s event %s: %s",
        ctx.pipeline,
        ctx.action,
        ctx.event_id,
        json.dumps(shown(ctx, deps), ensure_ascii=False, default=str),
    )
    return {"logged": True}


def shown(ctx: ActionContext, deps: ActionDeps) -> Any:
    """The answer as the event's page shows it: a value of the source's ``redact`` paths it repeats reads
    ``[redacted]`` (never logged in clear)."""
    if deps.config is None:
        return ctx.output
    return masked_values(deps.config, ctx.source, ctx.payload, ctx.output)
