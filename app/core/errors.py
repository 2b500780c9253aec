"""A small error tree: every error has a stable ``code``; HTTP errors also carry a status.

Starlette maps :class:`HTTPError` to ``{"error": code, "detail": …}`` in one handler (app.web).
"""

from __future__ import annotations


class HooklineError(Exception):
    """Base of hookline's own errors."""

    code = "hookline_error"


class ConfigError(HooklineError):
    """hookline.toml (or the environment it names) is wrong; the message says which key."""

    code = "config_error"


class HTTPError(HooklineError):
    status = 500
    code = "internal_error"

    def __init__(self, detail: str, *, headers: dict[str, str] | None = None) -> None:
        super().__init__(detail)
        self.detail = detail
        self.headers = headers or {}


class BadRequest(HTTPError):
    status = 400
    code = "bad_request"


class InvalidSignature(HTTPError):
    status = 401
    code = "invalid_signature"


class Unauthorized(HTTPError):
    status = 401
    code = "unauthorized"


class Forbidden(HTTPError):
    status = 403
    code = "forbidden"


class UnknownSource(HTTPError):
    status = 404
    code = "unknown_source"


class NotFound(HTTPError):
    status = 404
    code = "not_found"


class Conflict(HTTPError):
    status = 409
    code = "conflict"


class MethodNotAllowed(HTTPError):
    status = 405
    code = "method_not_allowed"


class PayloadTooLarge(HTTPError):
    status = 413
    code = "payload_too_large"


class ValidationFailed(HTTPError):
    status = 422
    code = "invalid_payload"


class ClientGone(HTTPError):
    """The client disconnected mid-request; the answer is never seen (499, as nginx logs it)."""

    status = 499
    code = "client_closed_request"


class UnsupportedMediaType(HTTPError):
    status = 415
    code = "unsupported_media_type"


class RateLimited(HTTPError):
    status = 429
    code = "rate_limited"


class MissingGrant(HTTPError):
    """The web process's database login lacks a privilege the request needs (the least-privilege roles
    of sql/roles.sql without the one that grants it): the server's setup, not the request, so a 5xx;
    retrying changes nothing, so not a 503 and no Retry-After. The detail names the grant to add."""

    status = 500
    code = "insufficient_privilege"


class DatabaseUnavailable(HTTPError):
    status = 503
    code = "database_unavailable"
