"""An action's outbound request is bounded as a whole: time and bytes.

Real sockets on 127.0.0.1 with receivers that misbehave the way real ones do: one answers a byte at a
time (httpx's per-read timeout never fires, so the action used to wait for as long as the receiver
liked), one answers a body far larger than anything an action keeps (it used to be read whole into
the worker's memory), and one URL from the environment ends with the newline a secrets file leaves.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Awaitable, Callable

import httpx
import pytest

from app.core.config import HttpAction, SlackAction
from worker.actions import ActionContext, ActionDeps
from worker.actions import http as http_action
from worker.actions import slack as slack_action
from worker.actions.outbound import MAX_ANSWER_BYTES
from worker.errors import PermanentError, TransientError

Handler = Callable[[asyncio.StreamReader, asyncio.StreamWriter], Awaitable[None]]
CTX = ActionContext(
    event_id=1,
    source="crm",
    event_type="x",
    pipeline="p",
    action="http#0",
    idempotency_key="hookline-1-p-http#0",
    output={"summary": "s"},
    payload={},
)


async def _read_request(reader: asyncio.StreamReader) -> None:
    head = await reader.readuntil(b"\r\n\r\n")
    length = next(
        (
            int(v)
            for k, _, v in (line.partition(b":") for line in head.split(b"\r\n"))
            if k.lower() == b"content-length"
        ),
        0,
    )
    await reader.readexactly(length)


async def _drip(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    await _read_request(reader)
    writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: 40\r\n\r\n")
    for _ in range(40):  # one byte every 0.3 s: each read is quick, the whole answer takes 12 s
        await writer.drain()
        await asyncio.sleep(0.3)
        writer.write(b"x")
    writer.close()


BIG = 64 * 1024 * 1024


async def _huge(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    await _read_request(reader)
    writer.write(b"HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nContent-Length: %d\r\n\r\n" % BIG)
    chunk = b"y" * (1 << 20)
    sent = 0
    try:
        while sent < BIG:
            writer.write(chunk)
            await writer.drain()
            sent += len(chunk)
    except ConnectionError:
        pass
    finally:
        writer.close()
        _huge_sent.append(sent)


_huge_sent: list[int] = []


async def _serve(handler: Handler) -> AsyncIterator[str]:
    server = await asyncio.start_server(handler, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    try:
        yield f"http://127.0.0.1:{port}/hook"
    finally:
        server.close()


async def _run(kind: str, url: str, timeout: float) -> object:
    async with httpx.AsyncClient() as client:
        if kind == "http":
            action = HttpAction.model_validate({"type": "http", "url_env": "U", "timeout_seconds": timeout})
            return await http_action.run(action, CTX, ActionDeps(http=client, environ={"U": url}, timeout=30))
        slack = SlackAction.model_validate(
            {"type": "slack", "webhook_url_env": "U", "text": "{{ output.summary }}", "timeout_seconds": timeout}
        )
        return await slack_action.run(slack, CTX, ActionDeps(http=client, environ={"U": url}, timeout=30))


@pytest.mark.parametrize(("kind", "error"), [("http", TransientError), ("slack", PermanentError)])
async def test_timeout_seconds_bounds_the_whole_answer_not_each_read(kind: str, error: type[Exception]) -> None:
    """http retries a timeout (its receiver dedupes on the idempotency key); Slack does not post twice."""
    async for url in _serve(_drip):
        started = time.monotonic()
        with pytest.raises(error, match=r"ReadTimeout|timed out"):
            await _run(kind, url, 1)
        assert time.monotonic() - started < 5  # 1 s and some slack, not the 12 s the receiver takes


async def test_a_huge_answer_is_not_downloaded() -> None:
    _huge_sent.clear()
    async for url in _serve(_huge):
        result = await _run("http", url, 30)
        assert result == {"status": 200, "body": "y" * 500}
        for _ in range(50):  # the receiver sees the connection go once the action stopped reading
            if _huge_sent:
                break
            await asyncio.sleep(0.1)
        assert _huge_sent and _huge_sent[0] < BIG // 4, _huge_sent
    assert MAX_ANSWER_BYTES < BIG // 4


@pytest.mark.parametrize("kind", ["http", "slack"])
async def test_a_url_from_the_environment_with_a_trailing_newline_is_used_trimmed(kind: str) -> None:
    seen: list[str] = []

    async def answer(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        head = await reader.readuntil(b"\r\n\r\n")
        seen.append(head.split(b" ")[1].decode())
        length = next(
            int(v)
            for k, _, v in (line.partition(b":") for line in head.split(b"\r\n"))
            if k.lower() == b"content-length"
        )
        await reader.readexactly(length)
        writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\nConnection: close\r\n\r\nok")
        await writer.drain()
        writer.close()

    async for url in _serve(answer):
        await _run(kind, url + "\n", 5)
    assert seen == ["/hook"]


async def test_a_url_httpx_refuses_fails_at_once_without_echoing_it() -> None:
    with pytest.raises(PermanentError, match="not a valid URL") as e:
        await _run("http", "http://127.0.0.1:1/a b\x7fsecret-token", 5)
    assert "secret-token" not in str(e.value)


@pytest.mark.parametrize(("kind", "message"), [("http", "timed out"), ("slack", "ConnectTimeout")])
async def test_a_connection_never_accepted_is_nothing_sent(kind: str, message: str, unreachable: str) -> None:
    """A listener whose accept queue is full drops the SYNs: the whole-request timeout fires while
    connecting, and Slack (at most once) still retries, since nothing was sent."""
    await asyncio.sleep(0.2)
    with pytest.raises(TransientError, match=message):
        await _run(kind, unreachable + "/hook", 1)
