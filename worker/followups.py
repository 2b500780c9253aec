"""Follow-up actions: ``slack_response`` and ``discord_followup`` (models in app/core/config/followups.py).

They hand a late answer to the sender's own reply channel, at most once: neither Slack's
``response_url`` nor Discord's webhook endpoint takes an idempotency key, so a request whose outcome
is unknown (sent, then the connection broke) fails permanently instead of posting twice.

On a ``respond = "sync"`` pipeline with ``late_only`` (the default) they first ask
:func:`reply_was_late`: the web process and the worker record, once and atomically, whether the HTTP
reply carried the answer (``sync_reply``), so the sender sees the answer exactly once, in the HTTP
response or as the follow-up.
"""

from __future__ import annotations

import asyncio
import contextlib
import ipaddress
import json
from typing import Any
from urllib.parse import urlsplit

import httpx

from app.core.config import Pipeline
from app.core.config.followups import DiscordFollowupAction, SlackResponseAction
from app.core.payload import dig
from app.core.templates import TemplateContext, TemplateRenderError, render, render_slack_blocks, render_value
from worker.actions.base import ActionContext, json_safe
from worker.actions.outbound import send
from worker.errors import PermanentError, TransientError, retry_after_seconds
from worker.runtime import Runtime

FollowupAction = SlackResponseAction | DiscordFollowupAction

#: The longest a follow-up waits for the web process to say whether its reply carried the answer
#: (beyond the pipeline's own deadline), before deciding by the clock.
_POLL = 0.05


async def reply_was_late(rt: Runtime, event_id: int, pipeline: Pipeline) -> bool:
    """True when the sender's HTTP reply did not carry the answer (it got ``respond_default``)."""
    timeout_s = pipeline.respond_timeout_ms / 1000
    while True:
        row = await rt.db.one("claim_late_reply", event_id=event_id, pipeline=pipeline.name, timeout_s=timeout_s)
        if row is None or not row["respond_sync"]:  # no HTTP reply waited for this event
            return True
        if row["sync_reply"] is not None:
            return bool(row["sync_reply"] == "default")
        await asyncio.sleep(min(max(float(row["remaining_s"] or 0.0), 0.0) + 0.01, _POLL))


async def run_followup(
    action: FollowupAction, ctx: ActionContext, tctx: TemplateContext, *, http: httpx.AsyncClient, timeout: float
) -> dict[str, Any]:
    try:
        if isinstance(action, SlackResponseAction):
            method, url, body = _slack(action, ctx, tctx)
        else:
            method, url, body = _discord(action, ctx, tctx)
    except TemplateRenderError as e:
        raise PermanentError(f"{action.type} action {ctx.action}: {e}") from None
    data = json.dumps(body, ensure_ascii=False, separators=(",", ":")).encode()
    headers = {"content-type": "application/json", "user-agent": "hookline"}
    what = f"{action.type} action {ctx.action}"
    try:
        resp = await send(http, method, url, what=what, timeout=timeout, content=data, headers=headers)
    except (httpx.ConnectError, httpx.ConnectTimeout, httpx.PoolTimeout) as e:  # nothing was sent
        raise TransientError(f"{action.type} action {ctx.action}: {e.__class__.__name__}") from None
    except httpx.TransportError as e:  # sent, outcome unknown: neither endpoint takes an idempotency key
        raise PermanentError(
            f"{action.type} action {ctx.action}: {e.__class__.__name__} after the request was sent; the "
            "message may or may not have been posted, and hookline does not post twice (at most once)"
        ) from None
    result = {"status": resp.status_code, "body": json_safe(resp.text[:500])}  # jsonb holds no NUL
    if 200 <= resp.status_code < 300:
        return result
    msg = f"{action.type} action {ctx.action}: receiver answered {resp.status_code}"
    if resp.status_code in (408, 425, 429) or resp.status_code >= 500:
        raise TransientError(msg, retry_after=retry_after_seconds(resp.headers))
    raise PermanentError(msg)  # 404: Slack's response_url (30 min) or Discord's token (15 min) expired


def _slack(action: SlackResponseAction, ctx: ActionContext, tctx: TemplateContext) -> tuple[str, str, Any]:
    url = dig(ctx.payload, action.response_url)
    if not isinstance(url, str) or not url:
        raise PermanentError(f"slack_response action {ctx.action}: no {action.response_url} in the payload")
    _check_url(url, action.allowed_hosts, ctx.action)
    body: dict[str, Any] = {"response_type": action.response_type}
    if action.text is not None:
        body["text"] = render(action.text, tctx, "slack")  # values are text, never Slack markup
    if action.blocks is not None:
        body["blocks"] = render_slack_blocks(action.blocks, tctx)
    if action.replace_original is not None:
        body["replace_original"] = action.replace_original
    return "POST", url, body


def _discord(action: DiscordFollowupAction, ctx: ActionContext, tctx: TemplateContext) -> tuple[str, str, Any]:
    payload = ctx.payload if isinstance(ctx.payload, dict) else {}
    app_id, token = payload.get("application_id"), payload.get("token")
    if not isinstance(app_id, str | int) or not isinstance(token, str) or not token:
        raise PermanentError(f"discord_followup action {ctx.action}: no application_id and token in the payload")
    if not str(app_id).isdigit() or not all(c.isalnum() or c in "-_." for c in token):
        raise PermanentError(f"discord_followup action {ctx.action}: application_id or token is malformed")
    body: dict[str, Any] = {}
    if action.content is not None:
        body["content"] = render(action.content, tctx)
    if action.embeds is not None:
        body["embeds"] = render_value(action.embeds, tctx)
    base = f"{action.api_base}/webhooks/{app_id}/{token}"
    if action.edit_original:
        return "PATCH", f"{base}/messages/@original", body
    if action.ephemeral:
        body["flags"] = 64
    return "POST", base, body


def _check_url(url: str, allowed: tuple[str, ...], name: str) -> None:
    """The response URL comes from the (verified) payload; still, post only where it may point."""
    parts = urlsplit(url)
    host = parts.hostname or ""
    loopback = host == "localhost"
    with contextlib.suppress(ValueError):
        loopback = loopback or ipaddress.ip_address(host).is_loopback
    if host not in allowed or not (parts.scheme == "https" or (parts.scheme == "http" and loopback)):
        raise PermanentError(
            f"slack_response action {name}: response URL host {host!r} is not allowed (allowed_hosts: {list(allowed)})"
        )
