"""``type = "log"``: the answer as one log line (for trying a pipeline out)."""

from __future__ import annotations

import json
import logging
from typing import Any

from app.core.config import LogAction
from worker.actions.base import ActionContext, ActionDeps


async def run(action: LogAction, ctx: ActionContext, deps: ActionDeps) -> dict[str, Any]:
    logging.getLogger("hookline.output").log(
        logging.getLevelName(action.level.upper()),
        "%s/%s event %s: %s",
        ctx.pipeline,
        ctx.action,
        ctx.event_id,
        json.dumps(ctx.output, ensure_ascii=False, default=str),
    )
    return {"logged": True}
