"""One place decides transient (retry with backoff) versus permanent (dead letter)."""

from __future__ import annotations

import asyncio
import email.utils
import time
from collections.abc import Mapping
from typing import Any

import anthropic
import httpx
import jsonschema
import psycopg


class PipelineError(Exception):
    """Base of worker-side failures; ``permanent`` ones go straight to the dead letters."""

    permanent = False

    def __init__(
        self, message: str, *, retry_after: float | None = None, output: object = None, calls: list[Any] | None = None
    ) -> None:
        super().__init__(message)
        self.retry_after = retry_after
        self.output = output
        self.calls: list[Any] = calls or []


class TransientError(PipelineError):
    permanent = False


class PermanentError(PipelineError):
    permanent = True


class InvalidOutput(PipelineError):
    """The model's answer did not match the pipeline's schema (after the repair attempt)."""

    permanent = False


def retry_after_seconds(headers: Mapping[str, str] | None) -> float | None:
    """``retry-after-ms`` / ``retry-after`` (seconds or HTTP date) as seconds, if present."""
    if not headers:
        return None
    ms = headers.get("retry-after-ms")
    if ms:
        try:
            return max(0.0, float(ms) / 1000)
        except ValueError:
            pass
    ra = headers.get("retry-after")
    if not ra:
        return None
    try:
        return max(0.0, float(ra))
    except ValueError:
        parsed = email.utils.parsedate_to_datetime(ra) if ra else None
        return max(0.0, parsed.timestamp() - time.time()) if parsed else None


def classify(exc: BaseException) -> PipelineError:
    """Map any exception raised while processing an event to transient or permanent."""
    if isinstance(exc, PipelineError):
        return exc
    msg = f"{exc.__class__.__name__}: {exc}"
    if isinstance(exc, anthropic.APIStatusError):
        ra = retry_after_seconds(exc.response.headers if exc.response is not None else None)
        kind = getattr(exc, "type", None) or ""
        api = f"anthropic {exc.status_code} {kind}: {getattr(exc, 'api_message', None) or exc.message}"
        if isinstance(exc, anthropic.EnforcedSpendLimitReachedError | anthropic.ContractSpendLimitReachedError):
            return PermanentError(api)
        if exc.status_code in (408, 409, 429) or exc.status_code >= 500:
            return TransientError(api, retry_after=ra)
        return PermanentError(api)
    if isinstance(exc, anthropic.APIResponseValidationError):  # a 2xx whose body is not the API's JSON
        return TransientError(f"anthropic {exc.status_code}: {exc.message}")
    if isinstance(exc, anthropic.APIConnectionError | anthropic.APITimeoutError):
        return TransientError(f"anthropic connection: {exc.__class__.__name__}")
    if isinstance(exc, TimeoutError | asyncio.TimeoutError):
        return TransientError("timed out (pipeline timeout_seconds)")
    if isinstance(exc, httpx.TransportError | psycopg.OperationalError | OSError):
        return TransientError(msg)
    if isinstance(exc, RecursionError):  # the same data recurses the same way on every retry
        return PermanentError(f"RecursionError: data nested too deeply ({exc})")
    if isinstance(exc, ImportError | AttributeError | KeyError | TypeError | ValueError | jsonschema.SchemaError):
        return PermanentError(msg)
    return TransientError(msg)
