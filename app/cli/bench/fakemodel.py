"""A minimal Messages API for the bench's ``worker`` scenario: answers after a fixed delay.

``POST /v1/messages`` → a message whose one text block is ``{"label": "bench"}`` (what the bench
pipelines' output schema asks for), with small usage figures. Served by uvicorn on 127.0.0.1, so a
model latency of 1 s costs the worker nothing but waiting: how many calls one process keeps in
flight is then what the scenario measures. It is not the test suite's fake (tests/fakes), which
checks requests strictly; this one only answers.
"""

from __future__ import annotations

import asyncio
import itertools
import json

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

_ids = itertools.count(1)


def fake_model_app(delay: float) -> Starlette:
    async def messages(request: Request) -> Response:
        body = await request.json()
        if delay > 0:
            await asyncio.sleep(delay)
        n = next(_ids)
        answer = {
            "id": f"msg_bench_{n:08d}",
            "type": "message",
            "role": "assistant",
            "model": body.get("model", "claude-bench"),
            "content": [{"type": "text", "text": json.dumps({"label": "bench"})}],
            "stop_reason": "end_turn",
            "stop_sequence": None,
            "usage": {"input_tokens": 50, "output_tokens": 8},
        }
        return Response(json.dumps(answer), media_type="application/json", headers={"request-id": f"req_bench_{n}"})

    return Starlette(routes=[Route("/v1/messages", messages, methods=["POST"])])


def serve(port: int, delay: float) -> None:
    import uvicorn

    uvicorn.run(
        fake_model_app(delay),
        host="127.0.0.1",
        port=port,
        log_config=None,
        access_log=False,
        log_level="warning",
        backlog=4096,
    )
