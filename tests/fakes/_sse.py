"""A message as a server-sent-event stream, the shape the SDK's streaming helpers need."""

from __future__ import annotations

import json
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from tests.fakes._responses import Outcome as Outcome


def to_sse(out: Outcome) -> Outcome:
    """The same message as a server-sent-event stream (built in full; sent with Content-Length)."""
    from tests.fakes._responses import Outcome

    msg = out.parsed
    frames: list[tuple[str, dict[str, Any]]] = []
    start = {
        **msg,
        "content": [],
        "stop_reason": None,
        "stop_details": None,
        "usage": {**msg["usage"], "output_tokens": 1},
    }
    frames.append(("message_start", {"type": "message_start", "message": start}))
    for i, block in enumerate(msg["content"]):
        if block["type"] == "text":
            first, deltas = {**block, "text": ""}, [{"type": "text_delta", "text": block["text"]}]
        elif block["type"] == "tool_use":
            js = json.dumps(block["input"])
            mid = len(js) // 2
            first = {**block, "input": {}}
            deltas = [{"type": "input_json_delta", "partial_json": p} for p in (js[:mid], js[mid:])]
        else:  # thinking
            first = {**block, "thinking": "", "signature": ""}
            deltas = [{"type": "thinking_delta", "thinking": block["thinking"]}]
            deltas.append({"type": "signature_delta", "signature": block["signature"]})
        frames.append(("content_block_start", {"type": "content_block_start", "index": i, "content_block": first}))
        frames += [("content_block_delta", {"type": "content_block_delta", "index": i, "delta": d}) for d in deltas]
        frames.append(("content_block_stop", {"type": "content_block_stop", "index": i}))
    delta = {"stop_reason": msg["stop_reason"], "stop_sequence": None, "stop_details": msg["stop_details"]}
    frames.append(
        (
            "message_delta",
            {
                "type": "message_delta",
                "delta": delta,
                "usage": {"output_tokens": msg["usage"]["output_tokens"]},
            },
        )
    )
    frames.append(("message_stop", {"type": "message_stop"}))
    text = "".join(f"event: {name}\ndata: {json.dumps(data)}\n\n" for name, data in frames)
    return Outcome(200, text.encode(), "text/event-stream; charset=utf-8", out.headers, msg)
