"""What every action receives, and the helpers they share (environment look-ups, templates)."""

from __future__ import annotations

import asyncio
import datetime as dt
import math
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import httpx

from app.core import templates
from app.core.config import Config
from worker.errors import PermanentError, TransientError


@dataclass(frozen=True)
class ActionContext:
    """What an action receives (a ``python`` action gets this object)."""

    event_id: int
    source: str
    event_type: str | None
    pipeline: str
    action: str
    idempotency_key: str
    output: Any
    payload: Any
    tenant: str | None = None
    occurred_at: Any = None
    fields: Mapping[str, Any] = field(default_factory=dict)

    def template_context(self) -> templates.TemplateContext:
        """What a template sees: the output, the event and the trimmed fields (never secrets)."""
        return templates.TemplateContext.of(
            output=self.output,
            event_id=self.event_id,
            source=self.source,
            event_type=self.event_type,
            tenant=self.tenant,
            occurred_at=self.occurred_at,
            fields=self.fields,
        )


@dataclass(frozen=True)
class ActionDeps:
    """What the running worker lends an action: its HTTP client, the environment, default limits, its config.

    ``deadline`` (event-loop time): when the action must be over, a little before its pipeline's
    ``timeout_seconds`` runs out, so that the action's own timeout fires first, it ends the way that
    timeout ends (Slack and follow-ups tell "nothing was sent" from "sent, outcome unknown") and its
    outcome is recorded, instead of being cancelled mid-request with its row left ``running``."""

    http: httpx.AsyncClient
    environ: Mapping[str, str]
    timeout: float
    slack_api_url: str = "https://slack.com/api"
    deadline: float | None = None
    #: the running config: the ``log`` action masks what the source's ``redact`` paths hide by it
    config: Config | None = None

    def timeout_for(self, own: float | None, *, what: str) -> float:
        """The action's timeout (its ``timeout_seconds``, else the default), cut to what the pipeline
        has left; a transient error, before anything is sent, when nothing is left."""
        timeout = own or self.timeout
        if self.deadline is None:
            return timeout
        left = self.deadline - asyncio.get_running_loop().time()
        if left <= 0:
            raise TransientError(f"{what}: no time left in the pipeline's timeout_seconds; nothing was sent")
        return min(timeout, left)


def envelope(ctx: ActionContext) -> dict[str, Any]:
    """The JSON an ``http`` action posts when it has no ``body`` template."""
    return {
        "event_id": ctx.event_id,
        "source": ctx.source,
        "event_type": ctx.event_type,
        "pipeline": ctx.pipeline,
        "action": ctx.action,
        "idempotency_key": ctx.idempotency_key,
        "output": ctx.output,
    }


#: What a jsonb string cannot hold: NUL, and surrogate code points (a lone one is no character).
_NOT_JSONB = re.compile("[\x00\ud800-\udfff]")
#: Containers nested deeper than this are cut (a value that contains itself ends here).
_MAX_RESULT_DEPTH = 32


def json_safe(value: Any, depth: int = 0) -> Any:
    """``value`` as something ``hookline.action_runs.result`` (jsonb) can hold, so recording an action
    that ran never fails after its side effect: dates and times as ISO text, a NaN or infinity as
    ``"nan"`` / ``"inf"``, tuples and sets as lists, keys as text, NUL and lone surrogates as U+FFFD,
    anything else (a Decimal, a UUID, an object) as its ``str``."""
    if value is None or isinstance(value, bool | int):
        return value
    if isinstance(value, float):
        return value if math.isfinite(value) else str(value)
    if isinstance(value, str):
        return _NOT_JSONB.sub("\ufffd", value)
    if isinstance(value, dt.date | dt.time):
        return value.isoformat()
    if depth >= _MAX_RESULT_DEPTH:
        return f"[nested deeper than {_MAX_RESULT_DEPTH} levels, cut]"
    if isinstance(value, Mapping):
        return {json_safe(str(k)): json_safe(v, depth + 1) for k, v in value.items()}
    if isinstance(value, list | tuple | set | frozenset):
        return [json_safe(v, depth + 1) for v in value]
    return json_safe(str(value))


def env_value(environ: Mapping[str, str], name: str, *, what: str) -> str:
    """The value of environment variable ``name`` without surrounding whitespace (a secret loaded from
    a file often ends with a newline); a permanent error naming it (never a value) if unset or blank."""
    value = (environ.get(name) or "").strip()
    if not value:
        raise PermanentError(f"{what}: environment variable {name} is not set")
    return value


def render(source: str, ctx: ActionContext, *, what: str, escape: templates.Escape = "none") -> str:
    """Render one template; a render error is a permanent action failure with Jinja's message kept."""
    try:
        return templates.render(source, ctx.template_context(), escape)
    except templates.TemplateRenderError as e:
        raise PermanentError(f"{what}: {e}") from None


def render_value(value: Any, ctx: ActionContext, *, what: str, slack: bool = False) -> Any:
    """:func:`render` for every string of a structure; ``slack``: Slack ``blocks`` (text objects escaped)."""
    try:
        if slack:
            return templates.render_slack_blocks(value, ctx.template_context())
        return templates.render_value(value, ctx.template_context())
    except templates.TemplateRenderError as e:
        raise PermanentError(f"{what}: {e}") from None
