"""``POST /webhooks/{source}``: a straight line from raw bytes to one stored row.

raw body (size cap) → source lookup → signature check on the raw bytes → parse → sender handshake?
→ delivery id / type / tenant / ordering key → ``INSERT … ON CONFLICT DO NOTHING`` → 200.
The processing job is deferred by the table trigger in the same transaction; this path never calls
the model. A 5xx means nothing was stored, so the sender's retry is safe.
"""

from __future__ import annotations

import asyncio
import functools
import hashlib
import json
import logging
from typing import Any, NoReturn

import asyncpg
from starlette.requests import Request
from starlette.responses import Response

from app.core.config import Source
from app.core.errors import (
    BadRequest,
    DatabaseUnavailable,
    Forbidden,
    InvalidSignature,
    MethodNotAllowed,
    RateLimited,
    UnknownSource,
    ValidationFailed,
)
from app.core.querynames import IngestQuery
from app.core.sqlfiles import NamedQueries
from app.signatures import (
    PROVIDERS,
    HandshakeError,
    HandshakeReply,
    Headers,
    MetaError,
    SignatureError,
    accepts_get,
    extract_meta,
    handshake,
    parse_locator,
    verify,
)
from app.signatures.locators import Locator, first
from app.web import guard
from app.web.bodies import parse_payload, read_body
from app.web.metrics import note_outcome
from app.web.payloads import schema_violation
from app.web.responses import DB_FAILURES
from app.web.state import AppState
from app.web.sync_reply import Delivery
from app.web.sync_reply import default as sync_default
from app.web.sync_reply import reply as sync_reply

log = logging.getLogger("hookline.ingest")

Q: NamedQueries[IngestQuery] = NamedQueries("ingest", IngestQuery)


def public_url(request: Request, src: Source, base: str | None) -> str | None:
    """The URL the sender signed: the configured one, never what a proxy presents. Derived from
    ``HOOKLINE_PUBLIC_URL``, it ends in a slash when the request's path does (``/webhooks/NAME/``)."""
    slash = "/" if request.scope.get("path", "").endswith("/") else ""
    url = src.public_url or (f"{base.rstrip('/')}/webhooks/{src.name}{slash}" if base else None)
    if url and request.url.query and "?" not in url:
        url = f"{url}?{request.url.query}"
    return url


async def receive_webhook(request: Request) -> Response:
    arrived = asyncio.get_running_loop().time()  # a synchronous reply's respond_timeout_ms counts from here
    state: AppState = request.state.hookline
    name = request.path_params["source"]
    src = state.config.sources.get(name)
    request_id = guard.request_id(request.headers.get("x-request-id"))
    if request.method not in ("POST", "GET"):  # HEAD, PUT, …: never reach verification or the store
        _method_not_allowed(src)
    if src is None:
        raise UnknownSource(f"no source named {name!r} is configured")
    provider = src.provider
    remote = guard.client_ip(request, state.trusted_proxies)
    if src.allowed_ips is not None and not guard.ip_allowed(remote, guard.networks(src.allowed_ips)):
        log.warning("request refused: address not allowed", extra={"source": name, "remote_addr": remote})
        raise Forbidden("this source does not accept requests from your address")
    headers = Headers(request.headers.raw)
    environ = state.settings.environ

    if request.method == "GET":
        if not accepts_get(provider):
            _method_not_allowed(src)
        token = environ.get(src.verify_token_env) if src.verify_token_env else None
        try:
            reply = handshake(
                provider,
                method="GET",
                headers=headers,
                body=b"",
                payload=None,
                query=dict(request.query_params),
                secrets=src.secrets(environ),
                verify_token=token,
            )
        except HandshakeError as e:
            raise BadRequest(str(e)) from None
        if reply is None:
            raise BadRequest("GET is only used for the subscription handshake")
        return _handshake_answer(request, state, name, reply)

    body = await read_body(request, src.max_body_bytes or state.settings.max_body_bytes)
    secrets = src.secrets(environ)
    try:
        verify(
            provider,
            secrets=secrets,
            headers=headers,
            body=body,
            url=public_url(request, src, state.settings.public_url),
            method=request.method,
            tolerance=src.tolerance_seconds,
            options=src.hmac_options(),
        )
    except SignatureError as e:
        state.metrics.inc("hookline_signature_failures_total", source=name, provider=provider, reason=e.code)
        log.warning(
            "signature rejected",
            extra={
                "source": name,
                "provider": provider,
                "reason": e.code,
                "remote_addr": remote,
                "request_id": request_id,
            },
        )
        raise InvalidSignature("signature verification failed") from None
    _rate_limit(state, src)

    content_type = request.headers.get("content-type", "")
    payload, raw = parse_payload(body, content_type, request.headers.get("content-encoding", ""))

    token = environ.get(src.verify_token_env) if src.verify_token_env else None
    try:
        reply = handshake(
            provider,
            method="POST",
            headers=headers,
            body=body,
            payload=payload,
            query={},  # only the GET handshake reads the query
            secrets=secrets,
            verify_token=token,
        )
    except HandshakeError as e:  # a handshake, so never an event to store, but one that cannot be answered
        raise BadRequest(str(e)) from None
    if reply is not None:
        return _handshake_answer(request, state, name, reply)

    try:
        meta = extract_meta(provider, headers=headers, payload=payload, overrides=src.overrides())
    except MetaError as e:
        raise BadRequest(str(e)) from None
    delivery_id = meta.delivery_id
    if not delivery_id:
        if not src.content_hash_ids:
            raise BadRequest(
                "no delivery id found in this request (the sender's event id header or field); "
                "set content_hash_ids = true on the source to use a hash of the body"
            )
        delivery_id = "sha256:" + hashlib.sha256(body).hexdigest()
    elif len(delivery_id) > 512:  # keep the key indexable; distinct long ids stay distinct
        # surrogatepass, as guard.indexable: a lone surrogate hashes; Postgres then refuses its payload (400)
        delivery_id = "sha256:" + hashlib.sha256(delivery_id.encode("utf-8", "surrogatepass")).hexdigest()
    invalid = schema_violation(src, meta.event_type, payload)
    if invalid is not None and src.on_invalid == "reject":
        raise ValidationFailed(f"payload does not match the schema for this event type: {invalid}")
    priority, sync = state.routing(name, meta.event_type)
    if sync is None:  # a re-send this process saw committed: answered before its row is even built
        known = state.batcher.known(name, delivery_id)
        if known is not None:
            return _acknowledge(request, name, meta.event_type, known, "duplicate", request_id)

    ordering = state.config.ordering_locators(name)
    ordering_key = first(_locators(ordering), headers, payload) if ordering else None
    stored = guard.stored_headers(
        headers, src, ordering, state.stored_header_names, state.settings.stored_header_max_bytes
    )
    row = (
        name,
        delivery_id,
        guard.indexable(meta.event_type),
        guard.indexable(meta.tenant),
        guard.indexable(ordering_key),
        meta.occurred_at,
        stored,
        body,
        payload,
        content_type or None,
        remote,
        request_id,
        priority,
    )
    try:
        if invalid is None:  # the common path: group commit with whatever else is arriving
            stored_row = row if raw is None else (*row[:8], raw, *row[9:])  # the body is the jsonb text
            event_id, dup = await state.batcher.insert((*stored_row, sync is not None))
        else:  # on_invalid = "store": kept as skipped, with the reason, and no job
            text = raw if raw is not None else json.dumps(payload, separators=(",", ":"))
            invalid_row = (*row[:8], text, *row[9:])
            event_id, dup = await _store_invalid(state, invalid_row, f"payload does not match the schema: {invalid}")
            if event_id is not None:  # its re-sends are answered from memory too, with no statement
                state.batcher.note_committed(name, delivery_id, event_id)
        status = "duplicate" if dup else "accepted"
    # The request's own values first (the group commit gives such a row its own error, the others of
    # its batch commit); any other failure of the database is 503: nothing of this request was stored.
    except asyncpg.exceptions.NumericValueOutOfRangeError:  # 1e1000000: JSON, past numeric's range
        raise BadRequest("body has a number Postgres cannot store (beyond the range of its numeric type)") from None
    except asyncpg.exceptions.DataError as e:  # \u0000, lone surrogates …: valid JSON Postgres cannot store
        raise BadRequest(
            f"body has values Postgres cannot store ({e.__class__.__name__.removesuffix('Error')}); "
            "e.g. \\u0000 or an unpaired surrogate"
        ) from None
    except asyncpg.exceptions.ProgramLimitExceededError:  # a value too large for an index or a row
        raise BadRequest("a value in this request is too large to store (index row limit)") from None
    except (*DB_FAILURES, DatabaseUnavailable) as e:  # type: ignore[misc]
        _store_failed(state, name, request_id, e)
    if sync is None or event_id is None:
        return _acknowledge(request, name, meta.event_type, event_id, status, request_id)
    _note(request, name, meta.event_type, event_id, status, request_id)
    delivery = Delivery(
        event_id=event_id,
        source=name,
        event_type=meta.event_type,
        tenant=meta.tenant,
        occurred_at=meta.occurred_at,
        payload=payload,
        duplicate=status == "duplicate",
        request_id=request_id,
        provider=provider,
        arrived=arrived,
    )
    if invalid is not None and not delivery.duplicate:  # stored as skipped: no answer will ever come
        return sync_default(state, sync, delivery)
    return await sync_reply(request, state, sync, delivery)


def _store_failed(state: AppState, source: str, request_id: str, error: BaseException) -> NoReturn:
    """503 + Retry-After: the database did not store this request (unreachable, read-only, its schema
    missing or older, a lock timeout …). Logged by class and SQLSTATE, never the message (it may quote
    the request's values)."""
    sqlstate = getattr(error, "sqlstate", None)
    log.warning(
        "database unavailable: %s%s",
        error.__class__.__name__,
        f" ({sqlstate})" if sqlstate else "",
        extra={"source": source, "request_id": request_id},
    )
    raise DatabaseUnavailable(
        "the event store is unavailable; nothing was stored, retry later",
        headers={"Retry-After": str(state.settings.retry_after_seconds)},
    ) from None


def _method_not_allowed(src: Source | None) -> NoReturn:
    """405 with the ``Allow`` of the route ``/webhooks/{source}`` (GET is Meta's handshake), the same for
    every method and source, as the OpenAPI description has it; the detail says what this source takes."""
    only_post = src is not None and not accepts_get(src.provider)
    detail = "this source accepts POST only" if only_post else "this endpoint accepts POST (and GET for handshakes)"
    raise MethodNotAllowed(detail, headers={"Allow": "GET, POST"})


def _handshake_answer(request: Request, state: AppState, name: str, reply: HandshakeReply) -> Response:
    """The provider's handshake answer. Only one that succeeds counts as a handshake; a refused one
    (Meta's 403 for a wrong verify token) is counted as any refusal, under its error code."""
    if reply.status < 400:
        state.metrics.inc("hookline_handshakes_total", source=name)
        note_outcome(request.scope, "handshake")
    else:
        code = _error_code(reply.body)
        if code is not None:  # else the middleware labels it by its status
            note_outcome(request.scope, code)
    return Response(reply.body, status_code=reply.status, media_type=reply.content_type)


def _error_code(body: bytes) -> str | None:
    """The ``error`` of a refusal in hookline's shape (``{"error": code, "detail": …}``)."""
    try:
        code = json.loads(body).get("error")
    except (ValueError, AttributeError):
        return None
    return code if isinstance(code, str) and code else None


def _note(request: Request, source: str, event_type: str | None, event_id: int | None, status: str, rid: str) -> None:
    """The request's outcome for the metrics middleware, and its log line."""
    note_outcome(request.scope, status)
    if log.isEnabledFor(logging.INFO):
        log.info(
            "event %s %s",
            event_id,
            status,
            extra={"source": source, "event_type": event_type, "event_id": event_id, "request_id": rid},
        )


def _acknowledge(
    request: Request, source: str, event_type: str | None, event_id: int | None, status: str, rid: str
) -> Response:
    """The 2xx of an event stored (or already stored) that no synchronous pipeline answers."""
    _note(request, source, event_type, event_id, status, rid)
    return Response(
        f'{{"status":"{status}","event_id":{"null" if event_id is None else int(event_id)}}}',
        media_type="application/json",
        headers={"x-request-id": rid},
    )  # json_response's body, formatted directly: both values are ours (a status word, an integer)


@functools.lru_cache(maxsize=256)
def _locators(texts: tuple[str, ...]) -> tuple[Locator, ...]:
    """A source's ordering-key locators, parsed once (they come from the config, never a request)."""
    return tuple(parse_locator(s) for s in texts)


def _rate_limit(state: AppState, src: Source) -> None:
    """429 + Retry-After once a verified sender exceeds its source's rate_limit; nothing is stored."""
    if src.rate_limit is None:
        return
    wait = state.ingest_limiter.take(src.name, src.rate_limit)
    if wait:
        raise RateLimited(
            f"source {src.name!r} is over its rate limit ({src.rate_limit.per_second:g}/s); retry later",
            headers={"Retry-After": str(int(wait))},
        )


def _signature_headers(src: Source) -> tuple[str, ...]:
    opts = src.hmac
    return (str(opts["header"]),) if opts and "header" in opts else ()


async def _store_invalid(state: AppState, row: tuple[Any, ...], reason: str) -> tuple[int | None, bool]:
    pool = await state.db.ensure()
    found = await pool.fetchrow(Q["store_invalid_event"], *row, reason)
    if found is None:  # the first delivery committed while this statement ran
        found = await pool.fetchrow(Q["find_event"], row[0], row[1])
        return (found["id"] if found else None), True
    return found["id"], not found["inserted"]


__all__ = ["PROVIDERS", "receive_webhook"]
