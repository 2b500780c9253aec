"""Response helpers shared by every route of the web process."""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any

import asyncpg
from starlette.responses import Response

#: Postgres is down or unreachable: answer 503 + Retry-After, the sender retries later.
DB_UNAVAILABLE: tuple[type[BaseException], ...] = (
    OSError,
    TimeoutError,
    asyncpg.PostgresConnectionError,
    asyncpg.InterfaceError,
    asyncpg.exceptions.OperatorInterventionError,
    asyncpg.exceptions.InsufficientResourcesError,
    asyncpg.exceptions.ConnectionDoesNotExistError,
    asyncpg.exceptions.InternalClientError,  # a connection reset after the server killed it mid-statement
)


def json_response(status: int, data: Mapping[str, Any], headers: Mapping[str, str] | None = None) -> Response:
    return Response(
        json.dumps(data, separators=(",", ":")),
        status_code=status,
        media_type="application/json",
        headers=dict(headers or {}),
    )
