"""``type = "slack"``: a message through an incoming webhook or ``chat.postMessage``.

Slack has no idempotency key, so this action is **at most once**: hookline posts again only when it
knows the previous attempt did not post (Slack answered an error, a 429, or the connection was
refused). When it cannot know (the worker died mid-request, a read timed out), the action fails
permanently with that reason instead of risking a second message; ``hookline replay`` posts again
once someone has looked at the channel. 429 and ``Retry-After`` are honoured.
"""

from __future__ import annotations

from typing import Any

import httpx

from app.core.config import SlackAction
from worker.actions.base import ActionContext, ActionDeps, env_value, render, render_value
from worker.actions.outbound import check_destination, send
from worker.errors import PermanentError, TransientError, retry_after_seconds

#: ``chat.postMessage`` errors worth another attempt (Slack's side, not our request; nothing was posted).
RETRYABLE = frozenset({"ratelimited", "service_unavailable", "request_timeout"})
#: Errors after which, Slack's reference says, "it's possible some aspect of the operation succeeded":
#: the message may be out, so they are not tried again (at most once).
MAYBE_POSTED = frozenset({"internal_error", "fatal_error"})
#: Marks an action that must not be started again while its last start has an unknown outcome.
AT_MOST_ONCE = True


async def _post(
    deps: ActionDeps, url: str, payload: dict[str, Any], headers: dict[str, str], what: str, timeout: float
) -> httpx.Response:
    try:
        return await send(deps.http, "POST", url, what=what, timeout=timeout, json=payload, headers=headers)
    except (httpx.ConnectError, httpx.ConnectTimeout, httpx.PoolTimeout) as e:  # nothing was sent
        raise TransientError(f"{what}: {e.__class__.__name__}") from None
    except httpx.TransportError as e:  # sent, outcome unknown: at most once
        raise PermanentError(
            f"{what}: {e.__class__.__name__} after the request was sent; Slack may or may not have posted "
            "it, and hookline does not post twice (at most once)"
        ) from None


def _http_error(resp: httpx.Response, what: str) -> None:
    if resp.status_code == 429 or resp.status_code >= 500:
        wait = retry_after_seconds(resp.headers)
        raise TransientError(f"{what}: Slack answered {resp.status_code}", retry_after=wait)
    if resp.status_code >= 300:
        raise PermanentError(f"{what}: Slack answered {resp.status_code}: {resp.text[:200]}")


async def run(action: SlackAction, ctx: ActionContext, deps: ActionDeps) -> dict[str, Any]:
    what = f"slack action {ctx.action}"
    # values are text, never Slack markup (``<!channel>``, a disguised link): see templates "slack"
    payload: dict[str, Any] = {"text": render(action.text, ctx, what=f"{what}: text", escape="slack")}
    if action.blocks is not None:
        payload["blocks"] = render_value(action.blocks, ctx, what=f"{what}: blocks", slack=True)
    timeout = deps.timeout_for(action.timeout_seconds, what=what)
    if action.webhook_url_env is not None:
        url = check_destination(env_value(deps.environ, action.webhook_url_env, what=what), what=what)
        resp = await _post(deps, url, payload, {}, what, timeout)
        _http_error(resp, what)
        return {"ok": True, "via": "webhook"}
    assert action.token_env is not None and action.channel is not None
    token = env_value(deps.environ, action.token_env, what=what)
    url = check_destination(deps.slack_api_url.rstrip("/") + "/chat.postMessage", what=what)
    payload["channel"] = action.channel
    resp = await _post(deps, url, payload, {"authorization": f"Bearer {token}"}, what, timeout)
    _http_error(resp, what)
    try:
        data = resp.json()
    except ValueError:
        raise PermanentError(f"{what}: Slack answered something that is not JSON") from None
    if not data.get("ok"):
        error = str(data.get("error") or "unknown_error")
        if error in RETRYABLE:
            raise TransientError(f"{what}: Slack error {error}", retry_after=retry_after_seconds(resp.headers))
        if error in MAYBE_POSTED:
            raise PermanentError(
                f"{what}: Slack error {error}, after which Slack may or may not have posted the message; "
                "hookline does not post twice (at most once)"
            )
        raise PermanentError(f"{what}: Slack error {error}")
    return {"ok": True, "via": "chat.postMessage", "channel": data.get("channel"), "ts": data.get("ts")}
