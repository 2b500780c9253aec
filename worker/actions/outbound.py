"""The one check every outbound request of an action passes before it is sent, and the one way it is sent.

``http`` and ``slack`` call :func:`check_destination` with the URL they are about to use. Today it
refuses anything but ``http(s)://host`` and, for a ``url`` template, a host other than the one the
configuration wrote out; an outbound host allowlist belongs here too, so it covers every action.

:func:`send` makes the request with bounds httpx does not give: its ``timeout`` is per connect, read
or write, so a receiver that drips a byte every second holds an action for as long as it likes, and
a response body is read whole, however large. Here the timeout covers the whole exchange, and at most
:data:`MAX_ANSWER_BYTES` of the answer are read (an action keeps a few hundred characters of it).
"""

from __future__ import annotations

import asyncio
from typing import Any
from urllib.parse import urlsplit

import httpx

from worker.errors import PermanentError

#: The most of a receiver's answer an action reads; the rest is never downloaded.
MAX_ANSWER_BYTES = 64 * 1024

#: Response headers that describe the body as it travelled, not the (decoded, maybe cut) bytes kept.
_TRANSFER_HEADERS = frozenset({"content-encoding", "content-length", "transfer-encoding"})


def origin_of(url: str) -> str:
    parts = urlsplit(url)
    return f"{parts.scheme}://{parts.netloc.lower()}"


def check_destination(url: str, *, what: str, origin: str | None = None) -> str:
    """Return ``url`` if an action may send to it; else a permanent error that does not echo it
    (a URL from the environment may carry a token, like a Slack incoming webhook's path)."""
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise PermanentError(f"{what}: the destination is not an http(s) URL with a host")
    if origin is not None and origin_of(url) != origin:
        raise PermanentError(f"{what}: the rendered URL left the host fixed by the configuration ({origin})")
    return url


async def send(
    client: httpx.AsyncClient, method: str, url: str, *, what: str, timeout: float, **kwargs: Any
) -> httpx.Response:
    """``client.request(method, url, **kwargs)`` finished within ``timeout`` seconds from the first
    connect to the last byte read, with at most :data:`MAX_ANSWER_BYTES` of the body read (decoded).

    Running out of time raises ``httpx.ConnectTimeout`` while nothing was sent yet (connecting), else
    ``httpx.ReadTimeout`` (sent, outcome unknown), as each action already tells them apart: Slack and
    follow-ups retry only what was never sent. A URL httpx refuses is a permanent error that does not
    echo it."""
    traced = sent = False  # a transport that does not trace: counted as sent (at most once holds)

    async def trace(name: str, info: dict[str, Any]) -> None:  # httpcore's trace extension
        nonlocal traced, sent
        traced = True
        sent = sent or name.endswith("send_request_headers.started")

    extensions = {**kwargs.pop("extensions", {}), "trace": trace}
    deadline = asyncio.timeout(timeout)
    try:
        async with (
            deadline,
            client.stream(method, url, timeout=timeout, extensions=extensions, **kwargs) as resp,
        ):
            body = bytearray()
            async for chunk in resp.aiter_bytes():
                body += chunk
                if len(body) >= MAX_ANSWER_BYTES:
                    break
    except TimeoutError:
        if deadline.expired() and traced and not sent:
            raise httpx.ConnectTimeout(f"not connected within {timeout:g} s; nothing was sent") from None
        if deadline.expired():
            raise httpx.ReadTimeout(f"no complete answer within {timeout:g} s") from None
        raise
    except httpx.InvalidURL:
        raise PermanentError(f"{what}: the destination is not a valid URL") from None
    headers = [(k, v) for k, v in resp.headers.multi_items() if k.lower() not in _TRANSFER_HEADERS]
    return httpx.Response(
        resp.status_code, headers=headers, content=bytes(body[:MAX_ANSWER_BYTES]), request=resp.request
    )
