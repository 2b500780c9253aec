"""Import targets for pipelines in tests: an output model and a python action."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, Field

#: What the python action received, in order.
RECEIVED: list[Any] = []


class Triage(BaseModel):
    category: Literal["billing", "bug", "other"]
    urgency: int = Field(ge=1, le=5)
    summary: str


async def record(ctx: Any) -> dict[str, Any]:
    RECEIVED.append(ctx)
    return {"seen": ctx.output["category"]}
