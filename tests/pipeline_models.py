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


#: What :func:`give_back` returns (a test sets ``value``) and how often it ran (``calls``).
GIVE_BACK: dict[str, Any] = {"value": None, "calls": 0}


def give_back(ctx: Any) -> Any:
    GIVE_BACK["calls"] += 1
    return GIVE_BACK["value"]


class Loose(BaseModel):
    """An output model with a field of any value: its JSON Schema has no ``type`` there."""

    summary: str
    extra: Any
