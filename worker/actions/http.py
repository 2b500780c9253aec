"""``type = "http"``: a signed JSON POST of the answer, or a call back to the sender's API.

* ``url_env``: the URL comes from the environment; the body is the answer's envelope (as before).
* ``url``: a template whose placeholders read only the event and the payload fields (never the
  model's output), each value percent-encoded as one path segment; the host is the one the
  configuration writes out, checked again after rendering.

Headers are set case-insensitively, once each (RFC 9110): defaults, then the configured headers
(plain values or ``{ env = …, prefix = … }``), then the signature headers. Every request carries the
action's idempotency key (``Idempotency-Key`` and Standard Webhooks ``webhook-id``) so a receiver
can drop the rare repeat after a crash between its 2xx and our bookkeeping.
"""

from __future__ import annotations

import json
from typing import Any

import httpx

from app.core.config import EnvHeader, HttpAction
from app.core.config.actions import fixed_origin
from app.signatures import sign
from worker.actions.base import ActionContext, ActionDeps, env_value, envelope, render
from worker.actions.outbound import check_destination, send
from worker.errors import PermanentError, TransientError, retry_after_seconds


def build_headers(action: HttpAction, ctx: ActionContext, deps: ActionDeps, body: bytes | None) -> httpx.Headers:
    what = f"http action {ctx.action}"
    headers = httpx.Headers({"user-agent": "hookline", "idempotency-key": ctx.idempotency_key})
    if body is not None:
        headers["content-type"] = "application/json"
    for name, value in action.headers.items():
        if isinstance(value, EnvHeader):
            headers[name] = value.prefix + env_value(deps.environ, value.env, what=f"{what}: header {name}")
        else:
            headers[name] = value
    # a named secret that is unset fails the action: never an unsigned request in place of a signed one
    secret = env_value(deps.environ, action.secret_env, what=f"{what}: secret_env") if action.secret_env else None
    if secret:
        signed = sign("standard_webhooks", secret=secret, body=body or b"", delivery_id=ctx.idempotency_key)
        for name, value in signed.items():
            if name.lower() == "content-type" and body is not None and "content-type" in headers:
                continue  # the configured or default one stays: one Content-Type (RFC 9110)
            headers[name] = value
    else:
        headers["webhook-id"] = ctx.idempotency_key
    return headers


def not_json(text: str, *, what: str) -> None:
    """A rendered body sent as JSON that is not JSON fails permanently before anything is sent: a value
    inserted between quotes without ``| tojson`` (an answer holding a quote or a newline) breaks it on
    some events and not others, and a lenient receiver would take the broken request."""
    try:
        json.loads(text)
    except json.JSONDecodeError as e:
        raise PermanentError(
            f"{what}: the rendered body is sent as JSON but is not JSON ({e.msg} at line {e.lineno} column "
            f"{e.colno}); insert values with | tojson ('{{\"text\": {{{{ output.reply | tojson }}}}}}'), which "
            f"quotes and escapes them, or set a Content-Type header that is not JSON"
        ) from None


async def run(action: HttpAction, ctx: ActionContext, deps: ActionDeps) -> dict[str, Any]:
    what = f"http action {ctx.action}"
    if action.url is not None:
        url = render(action.url, ctx, what=f"{what}: url", escape="url")
        check_destination(url, what=what, origin=fixed_origin(action.url))
    else:
        assert action.url_env is not None
        url = check_destination(env_value(deps.environ, action.url_env, what=what), what=what)
    body: bytes | None
    if action.method in ("GET", "DELETE"):
        body = None
    elif action.body is not None:
        text = render(action.body, ctx, what=f"{what}: body")
        if action.declares_json:
            not_json(text, what=f"{what}: body")
        body = text.encode()
    else:
        body = json.dumps(envelope(ctx), ensure_ascii=False, separators=(",", ":"), default=str).encode()
    headers = build_headers(action, ctx, deps, body)
    try:
        resp = await send(
            deps.http,
            action.method,
            url,
            what=what,
            timeout=deps.timeout_for(action.timeout_seconds, what=what),
            content=body,
            headers=headers,
        )
    except httpx.TimeoutException:
        raise TransientError(f"{what}: timed out") from None
    except httpx.TransportError as e:
        raise TransientError(f"{what}: {e.__class__.__name__}") from None
    result = {"status": resp.status_code, "body": resp.text[:500]}
    if 200 <= resp.status_code < 300:
        return result
    msg = f"{what}: receiver answered {resp.status_code}"
    if resp.status_code in (408, 409, 425, 429) or resp.status_code >= 500:
        raise TransientError(msg, retry_after=retry_after_seconds(resp.headers))
    raise PermanentError(msg)
