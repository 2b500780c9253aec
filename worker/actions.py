"""What happens with a validated answer: ``http`` (signed POST), ``log``, ``python``.

Each action runs under a unique ``(event_id, pipeline, action)`` row in hookline.action_runs; the
caller skips actions already succeeded, so a retried or replayed job never repeats a side effect.
Outbound HTTP carries the idempotency key (``Idempotency-Key`` and Standard Webhooks ``webhook-id``)
so a receiver can drop the rare repeat after a crash between its 2xx and our bookkeeping.
"""

from __future__ import annotations

import asyncio
import inspect
import json
import logging
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import httpx

from app.core.config import Action, HttpAction, LogAction, PythonAction, resolve_target
from app.signatures import sign
from worker.errors import PermanentError, TransientError, retry_after_seconds

log = logging.getLogger("hookline.actions")


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


def envelope(ctx: ActionContext) -> dict[str, Any]:
    return {
        "event_id": ctx.event_id,
        "source": ctx.source,
        "event_type": ctx.event_type,
        "pipeline": ctx.pipeline,
        "action": ctx.action,
        "idempotency_key": ctx.idempotency_key,
        "output": ctx.output,
    }


async def run_action(
    action: Action, ctx: ActionContext, *, http: httpx.AsyncClient, environ: Mapping[str, str], timeout: float
) -> dict[str, Any]:
    if isinstance(action, HttpAction):
        return await _http(action, ctx, http=http, environ=environ, timeout=timeout)
    if isinstance(action, LogAction):
        logging.getLogger("hookline.output").log(
            logging.getLevelName(action.level.upper()),
            "%s/%s event %s: %s",
            ctx.pipeline,
            ctx.action,
            ctx.event_id,
            json.dumps(ctx.output, ensure_ascii=False, default=str),
        )
        return {"logged": True}
    if isinstance(action, PythonAction):
        fn = resolve_target(action.target)
        if inspect.iscoroutinefunction(fn):
            result = await fn(ctx)
        else:  # off the event loop: a slow function must not stall heartbeats or timeouts
            result = await asyncio.to_thread(fn, ctx)
            if inspect.isawaitable(result):
                result = await result
        plain = isinstance(result, str | int | float | bool | dict | list | None)
        return {"returned": result if plain else repr(result)}
    raise PermanentError(f"unknown action type {getattr(action, 'type', '?')}")


async def _http(
    action: HttpAction, ctx: ActionContext, *, http: httpx.AsyncClient, environ: Mapping[str, str], timeout: float
) -> dict[str, Any]:
    url = environ.get(action.url_env)
    if not url:
        raise PermanentError(f"http action {ctx.action}: environment variable {action.url_env} is not set")
    body = json.dumps(envelope(ctx), ensure_ascii=False, separators=(",", ":"), default=str).encode()
    headers = {
        "content-type": "application/json",
        "user-agent": "hookline",
        "idempotency-key": ctx.idempotency_key,
        **action.headers,
    }
    secret = environ.get(action.secret_env) if action.secret_env else None
    if secret:
        headers.update(sign("standard_webhooks", secret=secret, body=body, delivery_id=ctx.idempotency_key))
    else:
        headers["webhook-id"] = ctx.idempotency_key
    try:
        resp = await http.post(url, content=body, headers=headers, timeout=action.timeout_seconds or timeout)
    except httpx.TimeoutException:
        raise TransientError(f"http action {ctx.action}: timed out") from None
    except httpx.TransportError as e:
        raise TransientError(f"http action {ctx.action}: {e.__class__.__name__}") from None
    result = {"status": resp.status_code, "body": resp.text[:500]}
    if 200 <= resp.status_code < 300:
        return result
    msg = f"http action {ctx.action}: receiver answered {resp.status_code}"
    if resp.status_code in (408, 409, 425, 429) or resp.status_code >= 500:
        raise TransientError(msg, retry_after=retry_after_seconds(resp.headers))
    raise PermanentError(msg)
