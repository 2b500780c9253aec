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

#: The database cannot take a write now, for a reason that is not the request's: unreachable
#: (:data:`DB_UNAVAILABLE`), or any error Postgres answers with — its schema missing or older than this
#: code (a web process started before ``hookline migrate``), read-only (a failover, maintenance), a
#: lock or statement timeout, a missing privilege, a deadlock after its retries. Nothing was stored:
#: 503 + Retry-After. Catch the errors about a request's own values first (``DataError`` …: a 400).
DB_FAILURES: tuple[type[BaseException], ...] = (*DB_UNAVAILABLE, asyncpg.PostgresError)


def needs_grant(role: str, what: str) -> str:
    """What a refused privilege (SQLSTATE 42501) means for the web process: the role to grant its
    database login, never the database's own message."""
    return (
        f"the web process's database login may not {what}: grant {role} to it (sql/roles.sql), "
        "or run the web process with the owner's DATABASE_URL"
    )


#: Headers of every answer under /admin that a signed-in caller gets: payloads, errors and costs are
#: private, so no browser or proxy cache may keep them, and JSON is never sniffed as something else.
PRIVATE_HEADERS: Mapping[str, str] = {"Cache-Control": "no-store", "X-Content-Type-Options": "nosniff"}


def private(response: Response) -> Response:
    """``response`` with :data:`PRIVATE_HEADERS` (those it sets itself are kept)."""
    for name, value in PRIVATE_HEADERS.items():
        response.headers.setdefault(name, value)
    return response


def json_response(status: int, data: Mapping[str, Any], headers: Mapping[str, str] | None = None) -> Response:
    return Response(
        json.dumps(data, separators=(",", ":")),
        status_code=status,
        media_type="application/json",
        headers=dict(headers or {}),
    )
