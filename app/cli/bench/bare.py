"""The baseline of the ingest row: a bare Starlette route on the same uvicorn setup as ``hookline web``.

One route that reads the body and answers 200 JSON, nothing else; ``serve`` runs it with the options
``app.cli.cmd_web`` gives uvicorn (keep the two in step).
"""

from __future__ import annotations

import json

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route


async def _receive(request: Request) -> Response:
    await request.body()
    return Response(
        json.dumps({"status": "accepted", "event_id": 0}, separators=(",", ":")), media_type="application/json"
    )


def bare_app() -> Starlette:
    """uvicorn factory: ``uvicorn app.bench:bare_app --factory``."""
    return Starlette(routes=[Route("/webhooks/{source}", _receive, methods=["POST", "GET"])])


def serve(host: str, port: int, shutdown_timeout: float = 5.0, *, processes: int = 1) -> None:
    """``processes`` > 1: that many on the port under uvicorn's supervisor, as ``hookline web --processes``."""
    import uvicorn

    uvicorn.run(
        "app.cli.bench.bare:bare_app",
        factory=True,
        host=host,
        port=port,
        log_config=None,
        access_log=False,
        timeout_graceful_shutdown=shutdown_timeout,  # type: ignore[arg-type]  # an asyncio.timeout: a fraction kept
        proxy_headers=True,
        server_header=False,
        log_level="warning",
        workers=processes,
    )
