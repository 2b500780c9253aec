"""HTTP plumbing of the fake Messages API (stdlib `http.server`)."""

from __future__ import annotations

import contextlib
import json
import sys
import traceback
from http.server import BaseHTTPRequestHandler
from typing import Any
from urllib.parse import urlsplit

from tests.fakes._responses import Outcome, error_outcome, new_id, respond

__all__ = ["Handler", "Outcome"]

_REASONS = {529: "Overloaded", 499: "Client Closed Request"}
_CLIENT_GONE = (BrokenPipeError, ConnectionResetError, ConnectionAbortedError, TimeoutError)


class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"  # keep-alive, like the real API; every answer has a Content-Length
    server_version = "fake-messages-api"
    sys_version = ""
    server: Any  # tests.fakes.messages_api._Server

    def setup(self) -> None:
        super().setup()
        self.server.fake.track_conn(self.connection, True)

    def finish(self) -> None:
        with contextlib.suppress(*_CLIENT_GONE, OSError):
            super().finish()
        self.server.fake.track_conn(self.connection, False)

    def handle(self) -> None:
        with contextlib.suppress(*_CLIENT_GONE, OSError, ValueError):
            super().handle()

    def log_message(self, format: str, *args: Any) -> None:
        pass

    def do_GET(self) -> None:
        self._dispatch("GET")

    def do_POST(self) -> None:
        self._dispatch("POST")

    def do_DELETE(self) -> None:
        self._dispatch("DELETE")

    def do_PUT(self) -> None:
        self._dispatch("PUT")

    def _read_body(self) -> bytes:
        length = self.headers.get("content-length")
        if length is None:
            return b""
        return self.rfile.read(int(length))

    def _dispatch(self, method: str) -> None:
        fake = self.server.fake
        path = urlsplit(self.path).path
        raw = self._read_body().decode("utf-8", errors="replace")
        if path.startswith("/_fake/"):
            try:
                body = json.loads(raw) if raw.strip() else None
            except ValueError:
                self._send(Outcome.json(400, {"ok": False, "error": "body is not JSON"}))
                return
            self._send(fake.control(method, path, body))
            return
        headers: dict[str, str] = {}
        for key, value in self.headers.items():
            k = key.lower()
            headers[k] = f"{headers[k]}, {value}" if k in headers else value
        try:
            parsed: Any = json.loads(raw) if raw else None
        except ValueError:
            parsed = None
        rec = fake.new_record(method=method, path=path, headers=headers, body=parsed)
        try:
            out = respond(fake, rec, raw)
        except Exception as exc:  # a bug in the fake: say so loudly, in the API's error shape
            traceback.print_exc(file=sys.stderr)
            out = error_outcome(500, "api_error", f"fake Messages API bug: {exc!r}", new_id("req_"))
        if out is None:  # stopping during slow()/hang(): drop the connection without an answer
            self.close_connection = True
            return
        fake.complete_record(rec, out)
        self._send(out)

    def _send(self, out: Outcome) -> None:
        with contextlib.suppress(*_CLIENT_GONE):
            self.send_response(out.status, _REASONS.get(out.status))
            self.send_header("Content-Type", out.content_type)
            self.send_header("Content-Length", str(len(out.body)))
            for key, value in out.headers.items():
                self.send_header(key, value)
            if self.server.fake.stopping.is_set():
                self.send_header("Connection", "close")
                self.close_connection = True
            self.end_headers()
            self.wfile.write(out.body)
            self.wfile.flush()
