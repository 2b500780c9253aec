"""The Message Batches endpoints of the fake Messages API.

``POST /v1/messages/batches`` answers each request at once with the same scripted steps as
``/v1/messages`` (per-model steps, ``enqueue_for`` matches, FIFO, generated), priced as batch
(``usage.service_tier = "batch"``); the batch stays ``in_progress`` for ``polls_until_ended``
retrieves, then ``ended`` with a ``results_url`` pointing back at the fake (JSONL results).
"""

from __future__ import annotations

import json
import threading
import time
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from tests.fakes._request_checks import RequestRejected, check_messages_body

if TYPE_CHECKING:
    from tests.fakes._responses import Outcome
    from tests.fakes.messages_api import FakeMessagesAPI


def _rfc3339(t: float) -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(t))


@dataclass
class FakeBatch:
    id: str
    created: float
    results: list[dict[str, Any]]
    polls: int = 0
    ended_at: float | None = None
    canceled: bool = False
    custom_ids: list[str] = field(default_factory=list)


class BatchStore:
    def __init__(self, fake: FakeMessagesAPI) -> None:
        self.fake = fake
        self.polls_until_ended = 1
        self._lock = threading.Lock()
        self._batches: dict[str, FakeBatch] = {}

    def all(self) -> list[FakeBatch]:
        with self._lock:
            return list(self._batches.values())

    def _json(self, batch: FakeBatch) -> dict[str, Any]:
        ended = batch.ended_at is not None
        counts = {"processing": 0 if ended else len(batch.results), "succeeded": 0, "errored": 0}
        counts |= {"canceled": 0, "expired": 0}
        if ended:
            for r in batch.results:
                counts[r["result"]["type"]] += 1
        return {
            "id": batch.id,
            "type": "message_batch",
            "processing_status": "ended" if ended else "in_progress",
            "request_counts": counts,
            "created_at": _rfc3339(batch.created),
            "expires_at": _rfc3339(batch.created + 86400),
            "ended_at": _rfc3339(batch.ended_at) if batch.ended_at else None,
            "archived_at": None,
            "cancel_initiated_at": None,
            "results_url": f"{self.fake.base_url}/v1/messages/batches/{batch.id}/results" if ended else None,
        }

    def route(self, method: str, path: str, raw_text: str, rid: str) -> Outcome:
        from tests.fakes._responses import Outcome, error_outcome, new_id

        parts = path.rstrip("/").split("/")[4:]  # after /v1/messages/batches
        if method == "POST" and not parts:
            try:
                body = json.loads(raw_text)
                requests = body["requests"]
                assert isinstance(requests, list) and requests
            except (ValueError, KeyError, AssertionError, TypeError):
                return error_outcome(400, "invalid_request_error", "requests: a non-empty list is required", rid)
            batch = FakeBatch(new_id("msgbatch_01"), time.time(), [self._answer(r) for r in requests])
            with self._lock:
                self._batches[batch.id] = batch
            return Outcome.json(200, self._json(batch))
        with self._lock:
            found = self._batches.get(parts[0]) if parts else None
        if found is None:
            return error_outcome(404, "not_found_error", f"no batch {path}", rid)
        batch = found
        if method == "GET" and len(parts) == 1:
            with self._lock:
                batch.polls += 1
                if batch.ended_at is None and batch.polls > self.polls_until_ended:
                    batch.ended_at = time.time()
            return Outcome.json(200, self._json(batch))
        if method == "GET" and parts[1:] == ["results"]:
            if batch.ended_at is None:
                return error_outcome(400, "invalid_request_error", "batch has not ended", rid)
            text = "".join(json.dumps(r) + "\n" for r in batch.results)
            return Outcome(200, text.encode(), "application/binary", {}, text)
        if method == "POST" and parts[1:] == ["cancel"]:
            with self._lock:
                batch.canceled = True
                batch.ended_at = batch.ended_at or time.time()
            return Outcome.json(200, self._json(batch))
        return error_outcome(404, "not_found_error", f"Not found: {method} {path}", rid)

    def _answer(self, item: Any) -> dict[str, Any]:
        from tests.fakes._responses import Ctx, new_id, run_step

        custom_id = item.get("custom_id") if isinstance(item, dict) else None
        params = item.get("params") if isinstance(item, dict) else None
        rid = new_id("req_")
        try:
            check_messages_body(params, {"anthropic-version": "2026-10-21"}, strict_schemas=self.fake.strict_schemas)
        except RequestRejected as rej:
            err = {"type": "error", "error": {"type": rej.error_type, "message": rej.message}, "request_id": rid}
            return {"custom_id": custom_id, "result": {"type": "errored", "error": err}}
        assert isinstance(params, dict)
        fake = self.fake
        step, _ = fake.take_for_model(str(params.get("model")))
        if step is None:
            step, _ = fake.take_keyed(json.dumps(params))
        if step is None:
            step, _ = fake.take_fifo_or_default()
        out = run_step(Ctx(fake, params, {}, rid), step)
        if out is None or not (isinstance(out.parsed, dict) and out.parsed.get("type") == "message"):
            body = out.parsed if out is not None else None
            err = body if isinstance(body, dict) and body.get("type") == "error" else {
                "type": "error", "error": {"type": "api_error", "message": "fake: no message"}, "request_id": rid
            }  # fmt: skip
            return {"custom_id": custom_id, "result": {"type": "errored", "error": err}}
        message = out.parsed
        message["usage"]["service_tier"] = "batch"
        return {"custom_id": custom_id, "result": {"type": "succeeded", "message": message}}
