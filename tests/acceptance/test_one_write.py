"""A response's head and body leave in one write (``app.web.server.OneWrite``), on real sockets.

uvicorn writes a response's status line and headers as soon as the app starts its response, then the
body: two ``send`` calls per small answer. hookline's protocol joins what a response writes during
one turn of the event loop, and still sends a streamed response's head at once.
"""

from __future__ import annotations

import asyncio
import json
import uuid
from collections.abc import Iterator
from typing import Any

import pytest
import uvicorn

from app.signatures import sign_request
from app.web import server as web_server_module
from app.web.server import OneWrite, server_config
from tests.harness import config_from, free_port, make_settings, web_server

SECRET = "whsec_" + "b25lLXdyaXRlLXRlc3Qtc2VjcmV0LTEyMzQ1Njc4OTA="


class Recorder:
    """A transport stand-in that keeps what it is given (the loop stays real)."""

    def __init__(self) -> None:
        self.writes: list[bytes] = []
        self.closed = False
        self.eof = False

    def write(self, data: bytes) -> None:
        assert not self.closed, "written after close"
        self.writes.append(bytes(data))

    def is_closing(self) -> bool:
        return self.closed

    def close(self) -> None:
        self.closed = True

    def write_eof(self) -> None:
        self.eof = True

    def get_extra_info(self, name: str) -> str:
        return f"extra:{name}"


def _one_write(recorder: Recorder) -> OneWrite:
    return OneWrite(recorder, asyncio.get_running_loop())  # type: ignore[arg-type]


async def test_writes_of_one_turn_go_out_together() -> None:
    rec = Recorder()
    out = _one_write(rec)
    out.write(b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\n")
    out.write(b"{}")
    assert rec.writes == [b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\n{}"]
    await asyncio.sleep(0)
    assert rec.writes == [b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\n{}"]  # nothing left behind


async def test_a_lone_write_leaves_on_the_next_turn_of_the_loop() -> None:
    rec = Recorder()
    out = _one_write(rec)
    out.write(bytearray(b"head"))
    assert rec.writes == []
    await asyncio.sleep(0)
    assert rec.writes == [b"head"]
    out.write(memoryview(b"chunk"))  # a streamed chunk later on: held for one turn again
    await asyncio.sleep(0)
    assert rec.writes == [b"head", b"chunk"]


async def test_close_and_write_eof_send_what_is_held_first() -> None:
    rec = Recorder()
    out = _one_write(rec)
    out.write(b"answer")
    out.close()
    assert rec.writes == [b"answer"] and rec.closed
    rec2 = Recorder()
    out2 = _one_write(rec2)
    out2.write(b"answer")
    out2.write_eof()
    assert rec2.writes == [b"answer"] and rec2.eof
    assert out2.get_extra_info("peername") == "extra:peername"  # the rest is the transport's


async def test_nothing_is_written_to_a_closed_transport() -> None:
    rec = Recorder()
    out = _one_write(rec)
    out.write(b"late")
    rec.closed = True  # the client went away before the next turn
    await asyncio.sleep(0)
    assert rec.writes == []


@pytest.fixture
def recorded(monkeypatch: pytest.MonkeyPatch) -> Iterator[list[list[bytes]]]:
    """The real socket transport of each connection, with every write it gets noted (per connection)."""
    seen: list[list[bytes]] = []
    real_init = OneWrite.__init__

    class Noting:
        def __init__(self, transport: Any) -> None:
            self._t = transport
            self.writes: list[bytes] = []
            seen.append(self.writes)

        def write(self, data: bytes) -> None:
            self.writes.append(bytes(data))
            self._t.write(data)

        def __getattr__(self, name: str) -> Any:
            return getattr(self._t, name)

    def init(self: OneWrite, transport: Any, loop: asyncio.AbstractEventLoop) -> None:
        real_init(self, Noting(transport), loop)  # type: ignore[arg-type]

    monkeypatch.setattr(web_server_module.OneWrite, "__init__", init)
    yield seen


async def _exchange(port: int, request: bytes, times: int) -> list[bytes]:
    """Send ``request`` ``times`` times on one kept-alive connection; each full answer."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    answers = []
    try:
        for _ in range(times):
            writer.write(request)
            head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 30)
            length = next(
                int(line.split(b":", 1)[1])
                for line in head.split(b"\r\n")
                if line.lower().startswith(b"content-length:")
            )
            answers.append(head + await asyncio.wait_for(reader.readexactly(length), 30))
    finally:
        writer.close()
    return answers


async def test_each_webhook_answer_is_one_write_on_the_socket(
    db_url: str, monkeypatch: pytest.MonkeyPatch, recorded: list[list[bytes]]
) -> None:
    monkeypatch.setenv("HL_ONE_WRITE_SECRET", SECRET)
    config = config_from({"sources": {"sw": {"provider": "standard_webhooks", "secrets_env": ["HL_ONE_WRITE_SECRET"]}}})
    body = json.dumps({"type": "ping"}).encode()
    req = sign_request("standard_webhooks", secret=SECRET, body=body, delivery_id="msg_" + uuid.uuid4().hex)
    head = "".join(f"{k}: {v}\r\n" for k, v in req.headers.items())
    raw = (
        f"POST /webhooks/sw HTTP/1.1\r\nhost: 127.0.0.1\r\ncontent-type: application/json\r\n"
        f"content-length: {len(body)}\r\n{head}\r\n"
    ).encode() + body
    async with web_server(make_settings(db_url), config) as base:
        answers = await _exchange(int(base.rsplit(":", 1)[1]), raw, times=2)
    assert [json.loads(a.split(b"\r\n\r\n", 1)[1])["status"] for a in answers] == ["accepted", "duplicate"]
    writes = [w for conn in recorded for w in conn]
    assert writes == answers  # head and body of each answer in one write, nothing else


async def test_a_streamed_response_sends_its_head_before_its_first_chunk(db_url: str) -> None:
    release = asyncio.Event()

    async def app(scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            return
        await send({"type": "http.response.start", "status": 200, "headers": [(b"content-type", b"text/plain")]})
        await release.wait()  # the head must not wait for this
        await send({"type": "http.response.body", "body": b"late", "more_body": False})

    port = free_port()
    server = uvicorn.Server(server_config(app, make_settings(db_url), host="127.0.0.1", port=port, lifespan="off"))
    task = asyncio.create_task(server.serve())
    try:
        for _ in range(500):  # uvicorn has no started event to wait on
            if server.started:
                break
            await asyncio.sleep(0.02)
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        writer.write(b"GET / HTTP/1.1\r\nhost: x\r\n\r\n")
        head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 30)
        assert head.startswith(b"HTTP/1.1 200") and b"transfer-encoding: chunked" in head
        release.set()
        rest = await asyncio.wait_for(reader.readuntil(b"0\r\n\r\n"), 30)
        assert b"late" in rest
        writer.close()
    finally:
        release.set()
        server.should_exit = True
        await asyncio.wait_for(task, 10)
