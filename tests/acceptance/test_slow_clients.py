"""Slow clients and big headers against the real server, on real sockets (issue 12, finding 6).

No timing is asserted: each wait is bounded by a generous timeout and the assertion is about what
the server answered (or that it closed the connection).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import uuid
from collections.abc import AsyncIterator
from typing import Any

import httpx
import pytest

from app.signatures import sign_request
from tests.harness import config_from, make_settings, rows, web_server

SECRET = "whsec_" + "c2xvdy1jbGllbnQtdGVzdC1zZWNyZXQtMTIzNDU2Nzg="


@pytest.fixture
def config(monkeypatch: pytest.MonkeyPatch) -> Any:
    monkeypatch.setenv("HL_SLOW_SECRET", SECRET)
    return config_from({"sources": {"sw": {"provider": "standard_webhooks", "secrets_env": ["HL_SLOW_SECRET"]}}})


def _port(base: str) -> int:
    return int(base.rsplit(":", 1)[1])


async def _answer(reader: asyncio.StreamReader, timeout: float = 20.0) -> bytes:
    """Everything the server sends until it closes the connection."""
    return await asyncio.wait_for(reader.read(), timeout)


@contextlib.asynccontextmanager
async def _connections(port: int, n: int) -> AsyncIterator[list[tuple[asyncio.StreamReader, asyncio.StreamWriter]]]:
    conns = []
    try:
        for _ in range(n):
            conns.append(await asyncio.open_connection("127.0.0.1", port))
        yield conns
    finally:
        for _, writer in conns:
            writer.close()


async def _legit(client: httpx.AsyncClient, base: str) -> httpx.Response:
    body = json.dumps({"type": "ping"}).encode()
    req = sign_request("standard_webhooks", secret=SECRET, body=body, delivery_id="msg_" + uuid.uuid4().hex)
    return await asyncio.wait_for(client.post(f"{base}/webhooks/sw", content=body, headers=req.headers), 30)


async def test_legitimate_request_served_while_hundreds_of_slow_connections_are_open(db_url: str, config: Any) -> None:
    settings = make_settings(db_url, header_timeout=60.0, body_timeout=60.0)
    async with web_server(settings, config) as base:
        port = _port(base)
        async with _connections(port, 300) as conns:
            # a third send nothing, a third a partial header, a third a body that never completes
            for i, (_, writer) in enumerate(conns):
                if i % 3 == 1:
                    writer.write(b"POST /webhooks/sw HTTP/1.1\r\nHost: x\r\nX-Slow: ")
                elif i % 3 == 2:
                    writer.write(b"POST /webhooks/sw HTTP/1.1\r\nHost: x\r\nContent-Length: 100\r\n\r\n{")
            await asyncio.gather(*(w.drain() for _, w in conns))
            async with httpx.AsyncClient() as client:
                resp = await _legit(client, base)
            assert resp.status_code == 200, resp.text
            assert resp.json()["status"] == "accepted"
    assert rows(db_url, "SELECT count(*) FROM hookline.events") == [(1,)]


async def test_header_timeout_answers_408_and_closes(db_url: str, config: Any) -> None:
    async with web_server(make_settings(db_url, header_timeout=0.5), config) as base:
        reader, writer = await asyncio.open_connection("127.0.0.1", _port(base))
        writer.write(b"POST /webhooks/sw HTTP/1.1\r\nHost: x\r\nX-Slow: a")  # never finishes its headers
        answer = await _answer(reader)
        idle_reader, idle_writer = await asyncio.open_connection("127.0.0.1", _port(base))
        idle = await _answer(idle_reader)  # sends nothing at all
        writer.close()
        idle_writer.close()
    assert answer.startswith(b"HTTP/1.1 408 "), answer
    assert idle.startswith(b"HTTP/1.1 408 "), idle


async def test_body_timeout_answers_408_and_stores_nothing(db_url: str, config: Any) -> None:
    body = json.dumps({"type": "ping"}).encode()
    signed = sign_request("standard_webhooks", secret=SECRET, body=body, delivery_id="msg_slow")
    head = "".join(f"{k}: {v}\r\n" for k, v in signed.headers.items())
    async with web_server(make_settings(db_url, body_timeout=0.5), config) as base:
        reader, writer = await asyncio.open_connection("127.0.0.1", _port(base))
        writer.write(f"POST /webhooks/sw HTTP/1.1\r\nHost: x\r\nContent-Length: {len(body)}\r\n{head}\r\n".encode())
        writer.write(body[:1])  # Content-Length says more: the rest never comes
        answer = await _answer(reader)
        writer.close()
    assert answer.startswith(b"HTTP/1.1 408 "), answer
    assert rows(db_url, "SELECT count(*) FROM hookline.events") == [(0,)]


async def test_timeouts_follow_each_request_on_a_kept_alive_connection(db_url: str, config: Any) -> None:
    """The header and body deadlines move with every request (one timer per connection checks them):
    after answered requests, a stalled body still gets its 408, and a stalled next request its own."""
    settings = make_settings(db_url, header_timeout=0.6, body_timeout=1.2, keepalive_timeout=30.0)

    def signed(n: int) -> tuple[bytes, bytes]:
        body = json.dumps({"type": "ping", "n": n}).encode()
        req = sign_request("standard_webhooks", secret=SECRET, body=body, delivery_id=f"msg_moving_{n}")
        head = "".join(f"{k}: {v}\r\n" for k, v in req.headers.items())
        return f"POST /webhooks/sw HTTP/1.1\r\nHost: x\r\nContent-Length: {len(body)}\r\n{head}\r\n".encode(), body

    async with web_server(settings, config) as base:
        reader, writer = await asyncio.open_connection("127.0.0.1", _port(base))
        for n in range(3):  # answered requests, each a while after the last (past the first deadline)
            head, body = signed(n)
            writer.write(head + body)
            answer = await asyncio.wait_for(reader.readuntil(b"}"), 20)
            assert answer.startswith(b"HTTP/1.1 200 "), answer
            await asyncio.sleep(0.3)
        head, body = signed(3)
        writer.write(head + body[:1])  # then a body that stops
        stalled_body = await _answer(reader)
        writer.close()
        reader, writer = await asyncio.open_connection("127.0.0.1", _port(base))
        head, body = signed(4)
        writer.write(head + body)
        answer = await asyncio.wait_for(reader.readuntil(b"}"), 20)
        writer.write(b"POST /webhooks/sw HTTP/1.1\r\nHost: x\r\nX-Slow: a")  # next headers never finish
        stalled_headers = await _answer(reader)
        writer.close()
    assert answer.startswith(b"HTTP/1.1 200 "), answer
    assert stalled_body.startswith(b"HTTP/1.1 408 ") and b"body" in stalled_body, stalled_body
    assert stalled_headers.startswith(b"HTTP/1.1 408 ") and b"headers" in stalled_headers, stalled_headers
    assert rows(db_url, "SELECT count(*) FROM hookline.events") == [(4,)]


async def test_keepalive_timeout_closes_idle_connections(db_url: str, config: Any) -> None:
    async with web_server(make_settings(db_url, keepalive_timeout=0.5), config) as base:
        reader, writer = await asyncio.open_connection("127.0.0.1", _port(base))
        writer.write(b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n")
        answer = await _answer(reader)  # the response, then the close once the connection is idle
        writer.close()
    assert answer.startswith(b"HTTP/1.1 200 ") and answer.count(b"HTTP/1.1") == 1


@pytest.mark.parametrize(
    ("what", "request_head"),
    [
        ("one huge header", b"POST /webhooks/sw HTTP/1.1\r\nHost: x\r\nX-Big: " + b"a" * 2_000_000 + b"\r\n\r\n"),
        ("huge header, never finished", b"POST /webhooks/sw HTTP/1.1\r\nHost: x\r\nX-Big: " + b"a" * 2_000_000),
        ("huge URL", b"POST /webhooks/sw?" + b"q" * 100_000 + b" HTTP/1.1\r\nHost: x\r\n\r\n"),
        (
            "many headers",
            b"POST /webhooks/sw HTTP/1.1\r\n" + b"".join(b"X-H%d: v\r\n" % i for i in range(500)) + b"\r\n",
        ),
    ],
)
async def test_big_or_many_headers_get_431(what: str, request_head: bytes, db_url: str, config: Any) -> None:
    async with web_server(make_settings(db_url, max_header_bytes=16384, max_headers=100), config) as base:
        reader, writer = await asyncio.open_connection("127.0.0.1", _port(base))
        writer.write(request_head)
        with contextlib.suppress(ConnectionError):
            await writer.drain()
        answer = await _answer(reader)
        writer.close()
        async with httpx.AsyncClient() as client:  # and the server is still fine
            assert (await _legit(client, base)).status_code == 200
    assert answer.startswith(b"HTTP/1.1 431 "), (what, answer[:100])


async def test_connection_cap_refuses_the_excess_with_503(db_url: str, config: Any) -> None:
    async with web_server(make_settings(db_url, max_connections=20), config) as base:
        async with _connections(_port(base), 20) as held:
            reader, writer = await asyncio.open_connection("127.0.0.1", _port(base))
            answer = await _answer(reader)
            writer.close()
            assert answer.startswith(b"HTTP/1.1 503 "), answer
            assert len(held) == 20
        await asyncio.sleep(0.3)  # the held connections are closed: there is room again
        async with httpx.AsyncClient() as client:
            assert (await _legit(client, base)).status_code == 200
