"""A local fake of Slack's two ways in: incoming webhooks and ``chat.postMessage``.

It speaks the real wire formats: an incoming webhook answers ``200 ok`` (text) or a 4xx with an error
word (``invalid_payload``, ``no_text``); the Web API answers ``200 {"ok": true, "channel", "ts",
"message"}`` or ``200 {"ok": false, "error": "invalid_auth"}``; a rate limit is ``429`` with
``Retry-After`` (and ``{"ok": false, "error": "ratelimited"}`` from the Web API).

    with FakeSlack(token="xoxb-test") as slack:
        slack.webhook_url            # http://127.0.0.1:PORT/services/T000/B000/secretpath
        slack.api_url                # http://127.0.0.1:PORT/api   (HOOKLINE_SLACK_API_URL)
        slack.enqueue(rate_limited(retry_after=1))   # the next request gets this, then normal again
        slack.hold(60)               # record the next post, then sit on the answer (crash tests)
"""

from __future__ import annotations

import itertools
import json
import threading
import time
from collections import deque
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

WEBHOOK_PATH = "/services/T000/B000/secretpath"


@dataclass
class Post:
    path: str
    headers: dict[str, str]
    body: dict[str, Any]


@dataclass
class Answer:
    status: int
    body: bytes
    headers: dict[str, str] = field(default_factory=dict)


def rate_limited(retry_after: int = 1, *, api: bool = True) -> Answer:
    body = json.dumps({"ok": False, "error": "ratelimited"}).encode() if api else b"rate_limited"
    return Answer(429, body, {"retry-after": str(retry_after)})


class FakeSlack:
    def __init__(self, token: str = "xoxb-test-token") -> None:  # noqa: S107 - a fake
        self.token = token
        self.posts: list[Post] = []
        self._answers: deque[Answer] = deque()
        self._holds: deque[float] = deque()
        self._ts = itertools.count(100)
        self._lock = threading.Lock()
        self._posted = threading.Condition(self._lock)
        outer = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                raw = self.rfile.read(int(self.headers.get("content-length", "0")))
                try:
                    body = json.loads(raw or b"{}")
                except ValueError:
                    body = {"_raw": raw.decode(errors="replace")}
                headers = {k.lower(): v for k, v in self.headers.items()}
                with outer._lock:
                    outer.posts.append(Post(self.path, headers, body))
                    answer = outer._answers.popleft() if outer._answers else None
                    hold = outer._holds.popleft() if outer._holds else 0.0
                    outer._posted.notify_all()
                if hold:
                    time.sleep(hold)
                self._answer(answer or outer._normal(self.path, headers, body))

            def _answer(self, a: Answer) -> None:
                self.send_response(a.status)
                for k, v in a.headers.items():
                    self.send_header(k, v)
                self.send_header("content-length", str(len(a.body)))
                self.end_headers()
                self.wfile.write(a.body)

            def log_message(self, *args: Any) -> None:
                pass

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._server.daemon_threads = True
        self._thread = threading.Thread(target=self._server.serve_forever, kwargs={"poll_interval": 0.02}, daemon=True)

    def _normal(self, path: str, headers: dict[str, str], body: dict[str, Any]) -> Answer:
        if path == WEBHOOK_PATH:
            if not body.get("text") and not body.get("blocks"):
                return Answer(400, b"no_text", {"content-type": "text/html"})
            return Answer(200, b"ok", {"content-type": "text/html"})
        if path == "/api/chat.postMessage":
            ctype = headers.get("content-type", "")
            if headers.get("authorization") != f"Bearer {self.token}":
                return self._api({"ok": False, "error": "invalid_auth"})
            if not ctype.startswith("application/json"):
                return self._api({"ok": False, "error": "invalid_form_data"})
            if not body.get("channel"):
                return self._api({"ok": False, "error": "channel_not_found"})
            if not body.get("text") and not body.get("blocks"):
                return self._api({"ok": False, "error": "no_text"})
            ts = f"1764579600.{next(self._ts):06d}"
            message = {"type": "message", "text": body.get("text", ""), "ts": ts, "bot_id": "B0FAKE"}
            return self._api({"ok": True, "channel": body["channel"], "ts": ts, "message": message})
        return Answer(404, b"no_service", {"content-type": "text/html"})

    @staticmethod
    def _api(data: dict[str, Any]) -> Answer:
        return Answer(200, json.dumps(data).encode(), {"content-type": "application/json; charset=utf-8"})

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self._server.server_address[1]}"

    @property
    def webhook_url(self) -> str:
        return self.base_url + WEBHOOK_PATH

    @property
    def api_url(self) -> str:
        return self.base_url + "/api"

    def enqueue(self, *answers: Answer) -> None:
        with self._lock:
            self._answers.extend(answers)

    def hold(self, seconds: float) -> None:
        """The next post is recorded at once, answered only after ``seconds``."""
        with self._lock:
            self._holds.append(seconds)

    def wait_for(self, count: int, timeout: float = 20.0) -> list[Post]:
        with self._posted:
            if not self._posted.wait_for(lambda: len(self.posts) >= count, timeout):
                raise AssertionError(f"expected {count} Slack post(s) in {timeout}s, got {len(self.posts)}")
            return list(self.posts)

    def __enter__(self) -> FakeSlack:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._server.shutdown()
        self._server.server_close()
