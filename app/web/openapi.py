"""``GET /openapi.json``: the OpenAPI 3.0 description of the ingest API and, when on, the admin API.

Written by hand next to the routes (``app/web/ingest.py``, ``app/web/admin/api.py``) and kept exact:
every status code a route can answer, its content type, and the bearer scheme of /admin/api, so a
property-based tester (schemathesis) can run against a live server. The admin paths are listed only
when ``HOOKLINE_ADMIN_TOKEN`` is set, because only then do they exist.
"""

from __future__ import annotations

from typing import Any

from starlette.requests import Request
from starlette.responses import Response

from app.core.config import Config
from app.core.settings import Settings
from app.core.status import EventStatus
from app.signatures import accepts_get
from app.web.responses import json_response

JSON = "application/json"
BIGINT = 2**63 - 1


def _ref(name: str) -> dict[str, str]:
    return {"$ref": f"#/components/schemas/{name}"}


def _json(schema: dict[str, Any], description: str) -> dict[str, Any]:
    return {"description": description, "content": {JSON: {"schema": schema}}}


def _error(description: str, *, retry_after: bool = False, challenge: bool = False) -> dict[str, Any]:
    out = _json(_ref("Error"), description)
    headers: dict[str, Any] = {}
    if retry_after:
        headers["Retry-After"] = {"description": "Seconds to wait.", "schema": {"type": "integer"}}
    if challenge:
        headers["WWW-Authenticate"] = {"description": "Bearer challenge.", "schema": {"type": "string"}}
    if headers:
        out["headers"] = headers
    return out


def _nullable(kind: str, **more: Any) -> dict[str, Any]:
    return {"type": kind, "nullable": True, **more}


def _obj(props: dict[str, Any], required: list[str] | None = None) -> dict[str, Any]:
    return {"type": "object", "properties": props, **({"required": required} if required else {})}


STR, INT, BOOL, NUM = {"type": "string"}, {"type": "integer"}, {"type": "boolean"}, {"type": "number"}
TIME = {"type": "string", "format": "date-time"}
N_STR, N_INT, N_NUM, N_TIME = _nullable("string"), _nullable("integer"), _nullable("number"), _nullable("string")
ANY: dict[str, Any] = {"nullable": True}
STATUS = {"type": "string", "enum": [s.value for s in EventStatus]}

STEPS = ("received", "queued", "started", "model_call", "action", "finished", "dismissed")
TEXT = {"type": "string", "minLength": 1, "maxLength": 1000, "pattern": "^[^\\u0000]*$"}

SCHEMAS: dict[str, Any] = {
    "Error": _obj({"error": STR, "detail": STR}, ["error", "detail"]),
    "Accepted": _obj(
        {"status": {"type": "string", "enum": ["accepted", "duplicate"]}, "event_id": INT}, ["status", "event_id"]
    ),
    "EventSummary": _obj(
        {
            "id": INT,
            "source": STR,
            "delivery_id": STR,
            "event_type": N_STR,
            "tenant": N_STR,
            "status": STATUS,
            "attempts": INT,
            "replays": INT,
            "dry_run": BOOL,
            "detail": N_STR,
            "last_error": N_STR,
            "received_at": TIME,
            "started_at": N_TIME,
            "finished_at": N_TIME,
        },
        ["id", "source", "delivery_id", "status", "received_at"],
    ),
    "EventPage": _obj(
        {"events": {"type": "array", "items": _ref("EventSummary")}, "next_cursor": N_STR}, ["events", "next_cursor"]
    ),
    "TimelineStep": _obj(
        {
            "step": {"type": "string", "enum": [*STEPS]},
            "at": TIME,
            "duration_ms": N_INT,
            "pipeline": N_STR,
            "name": N_STR,
            "status": N_STR,
            "input_tokens": N_INT,
            "output_tokens": N_INT,
            "cost_usd": N_NUM,
            "ref_id": N_INT,
            "detail": N_STR,
        },
        ["step", "at"],
    ),
    "EventDetail": _obj(
        {
            "event": {
                "allOf": [_ref("EventSummary")],
                "description": 'The event; payload fields named in the source\'s `redact` list read "[redacted]", '
                "as do their values where a model answer, an action result or an error repeats them; `pruned` is "
                "true once retention dropped its body and payload (a replay is then a 409); `dismissed_at`, "
                "`dismissed_by` and `dismissed_reason` are set on a dismissed dead letter.",
            },
            "timeline": {"type": "array", "items": _ref("TimelineStep")},
            "calls": {"type": "array", "items": {"type": "object"}},
            "actions": {"type": "array", "items": {"type": "object"}},
        },
        ["event", "timeline", "calls", "actions"],
    ),
    "DeadLetter": _obj(
        {
            "event_id": INT,
            "source": STR,
            "event_type": N_STR,
            "tenant": N_STR,
            "delivery_id": STR,
            "attempts": INT,
            "error": N_STR,
            "detail": N_STR,
            "received_at": TIME,
            "died_at": N_TIME,
            "invalid_output_pipeline": N_STR,
            "invalid_output_error": N_STR,
            "pruned": BOOL,
        },
        ["event_id", "source", "attempts"],
    ),
    "DeadLetterPage": _obj(
        {"dead_letters": {"type": "array", "items": _ref("DeadLetter")}, "next_cursor": N_STR},
        ["dead_letters", "next_cursor"],
    ),
    "ReplayOptions": _obj({"recompute": BOOL, "force": BOOL}),
    "ReplayFilter": {
        **_obj(
            {
                "source": TEXT,
                "type": TEXT,
                "status": {"type": "string", "enum": ["succeeded", "dead", "skipped"]},
                "since": TIME,
                "until": TIME,
                "recompute": BOOL,
                "force": BOOL,
            }
        ),
        "anyOf": [{"required": [key]} for key in ("source", "type", "status", "since", "until")],
    },
    "Replayed": _obj({"event_id": INT, "job_id": INT}, ["event_id", "job_id"]),
    "ReplayedMany": _obj(
        {"replayed": INT, "events": {"type": "array", "items": _ref("Replayed")}}, ["replayed", "events"]
    ),
    "DismissReason": _obj({"reason": {**TEXT, "description": "Why (kept as dismissed_reason)."}}),
    "DismissFilter": {
        **_obj({"source": TEXT, "type": TEXT, "since": TIME, "until": TIME, "reason": TEXT}),
        "anyOf": [{"required": [key]} for key in ("source", "type", "since", "until")],
    },
    "Dismissed": _obj({"event_id": INT, "dismissed_at": TIME, "dismissed_now": BOOL}, ["event_id", "dismissed_at"]),
    "DismissedMany": _obj(
        {"dismissed": INT, "events": {"type": "array", "items": _obj({"event_id": INT, "dismissed_at": TIME})}},
        ["dismissed", "events"],
    ),
    "Stats": _obj(
        {
            "events_by_status": {"type": "object", "additionalProperties": INT},
            "dead_letters": _obj({"open": INT, "dismissed": INT}, ["open", "dismissed"]),
            "last_hour": _obj({"received": INT, "finished": INT, "p50_seconds": N_NUM, "p95_seconds": N_NUM}),
            "queue": {"type": "array", "items": _obj({"queue_name": STR, "status": STR, "n": INT})},
        },
        ["events_by_status", "dead_letters", "last_hour", "queue"],
    ),
    "Cost": _obj(
        {
            "since": TIME,
            "until": TIME,
            "total_usd": NUM,
            "rows": {
                "type": "array",
                "items": _obj(
                    {
                        "tenant": STR,
                        "pipeline": STR,
                        "calls": INT,
                        "input_tokens": INT,
                        "output_tokens": INT,
                        "cost_usd": NUM,
                    }
                ),
            },
        },
        ["since", "until", "total_usd", "rows"],
    ),
}


def _q(name: str, schema: dict[str, Any], description: str) -> dict[str, Any]:
    return {"name": name, "in": "query", "required": False, "schema": schema, "description": description}


TEXT_FILTER = {"type": "string", "maxLength": 1000, "pattern": "^[^\\u0000]*$"}
CURSOR = _q("cursor", {"type": "string", "pattern": "^[0-9]{1,19}$"}, "next_cursor of the previous page.")
LIMIT = _q("limit", {"type": "integer", "minimum": 1, "maximum": 500, "default": 50}, "Page size.")
EVENT_ID = {"name": "event_id", "in": "path", "required": True, "schema": {"type": "integer", "minimum": 1}}
AUTH = {
    "401": _error("No token, or a wrong one.", challenge=True),
    "429": _error("Too many wrong tokens from this address; retry after Retry-After seconds.", retry_after=True),
    "500": _error("insufficient_privilege: the web process's database login lacks a grant; detail names it."),
    "503": _error("Postgres is unreachable.", retry_after=True),
}
BAD = {"400": _error("A parameter is not valid; detail says which.")}


def _op(summary: str, ok: tuple[str, dict[str, Any]], *, params: Any = None, **extra: Any) -> Any:
    responses = {ok[0]: ok[1], **AUTH, **{k: v for k, v in extra.items() if k[0].isdigit()}}
    out: dict[str, Any] = {"summary": summary, "tags": ["admin"], "parameters": params or [], "responses": responses}
    if "body" in extra:
        required = bool(extra.get("body_required", False))
        out["requestBody"] = {"required": required, "content": {JSON: {"schema": extra["body"]}}}
    return out


def admin_paths() -> dict[str, Any]:
    ev = ("200", _json(_ref("EventPage"), "A page of events, newest first."))
    filters = [
        _q("source", TEXT_FILTER, "Source name."),
        _q("type", TEXT_FILTER, "Event type."),
        _q("status", STATUS, "Event status."),
        _q("tenant", TEXT_FILTER, "Tenant."),
        _q("since", TIME, "Received at or after (ISO-8601; UTC when no offset)."),
        _q("until", TIME, "Received before."),
        CURSOR,
        LIMIT,
    ]
    not_found = {"404": _error("No such event.")}
    replay_fail = {"409": _error("The event is not finished, or its payload was pruned."), "413": _error("Too large.")}
    return {
        "/admin/api/events": {"get": _op("List events", ev, params=filters, **BAD)},
        "/admin/api/events/{event_id}": {
            "get": _op(
                "One event with its timeline, model calls and action runs",
                ("200", _json(_ref("EventDetail"), "The event.")),
                params=[EVENT_ID],
                **BAD,
                **not_found,
            )
        },
        "/admin/api/events/{event_id}/replay": {
            "post": _op(
                "Replay one finished event (hookline.replay)",
                ("202", _json(_ref("Replayed"), "Queued again.")),
                params=[EVENT_ID],
                body=_ref("ReplayOptions"),
                **BAD,
                **not_found,
                **replay_fail,
            )
        },
        "/admin/api/replay": {
            "post": _op(
                "Replay every finished event matching a filter (at least one of source, type, status, since, until)",
                ("202", _json(_ref("ReplayedMany"), "Queued again.")),
                body=_ref("ReplayFilter"),
                body_required=True,
                **BAD,
                **replay_fail,
            )
        },
        "/admin/api/events/{event_id}/dismiss": {
            "post": _op(
                "Dismiss one dead letter (hookline.dismiss): it leaves the dead letters and their counts",
                ("200", _json(_ref("Dismissed"), "Dismissed (now, or before).")),
                params=[EVENT_ID],
                body=_ref("DismissReason"),
                **(BAD | not_found | {"409": _error("The event is not dead."), "413": _error("Too large.")}),
            )
        },
        "/admin/api/dismiss": {
            "post": _op(
                "Dismiss every dead letter matching a filter (at least one of source, type, since, until)",
                ("200", _json(_ref("DismissedMany"), "Dismissed now.")),
                body=_ref("DismissFilter"),
                body_required=True,
                **(BAD | {"413": _error("Too large.")}),
            )
        },
        "/admin/api/dead-letters": {
            "get": _op(
                "Dead letters (not dismissed), newest first",
                ("200", _json(_ref("DeadLetterPage"), "A page of dead letters.")),
                params=[CURSOR, LIMIT],
                **BAD,
            )
        },
        "/admin/api/stats": {
            "get": _op("Counts by status, last hour, queue depth", ("200", _json(_ref("Stats"), "")), **BAD)
        },
        "/admin/api/cost": {
            "get": _op(
                "Model calls, tokens and USD per tenant and pipeline for [since, until) (default: today, UTC)",
                ("200", _json(_ref("Cost"), "Spend.")),
                params=[_q("since", TIME, "Start (default: today 00:00 UTC)."), _q("until", TIME, "End.")],
                **BAD,
            )
        },
    }


def _source_param(names: list[str], others: list[str]) -> dict[str, Any]:
    """The {source} path parameter: one of ``names``; when there is none, any name but ``others``."""
    schema: dict[str, Any] = {"type": "string"}
    if names:
        schema["enum"] = names
    elif others:
        schema["not"] = {"enum": others}  # no source answers this method: every name is a 404
    return {"name": "source", "in": "path", "required": True, "schema": schema, "description": "A configured source."}


def ingest_paths(config: Config) -> dict[str, Any]:
    source = _source_param(sorted(config.sources), [])
    get_sources = sorted(n for n, s in config.sources.items() if accepts_get(s.provider))
    accepted = _json(_ref("Accepted"), "Stored (accepted) or already stored (duplicate).")
    accepted["content"]["*/*"] = {}  # a provider handshake may answer in its own content type
    errors = {
        "400": _error("Unparseable body, no delivery id, or a GET that is not a handshake."),
        "401": _error("Missing or bad signature (no detail on why)."),
        "404": _error("No such source."),
        "405": _error("Method not allowed for this source."),
        "413": _error("Body larger than the source accepts."),
        "429": _error("The source's ingest limit was hit.", retry_after=True),
        "503": _error("Postgres is unreachable; nothing was stored.", retry_after=True),
    }
    if any(s.allowed_ips is not None for s in config.sources.values()):
        errors["403"] = _error("The client address is not in the source's allowed_ips.")
    if any(s.schemas for s in config.sources.values()):
        errors["422"] = _error("The payload does not match the source's JSON Schema for its event type.")
    ok = {"200": _json({"type": "object"}, "Up.")}
    return {
        "/webhooks/{source}": {
            "post": {
                "summary": "Receive a signed webhook",
                "tags": ["ingest"],
                "parameters": [source],
                "requestBody": {"required": True, "content": {"*/*": {"schema": {"type": "string"}}}},
                "responses": {"200": accepted, **errors},
            },
            "get": {
                "summary": "Subscription handshake of providers that verify the URL with a GET (Meta's "
                "hub.challenge); other sources answer 405",
                "tags": ["ingest"],
                "parameters": [_source_param(get_sources, sorted(config.sources))],
                "responses": {"200": {"description": "The challenge echoed.", "content": {"text/plain": {}}}, **errors},
            },
        },
        "/healthz": {"get": {"summary": "Liveness", "tags": ["health"], "responses": ok}},
        "/readyz": {
            "get": {
                "summary": "Readiness: Postgres answers, accepts writes and has every migration this code expects",
                "tags": ["health"],
                "responses": {**ok, "503": _json({"type": "object"}, "Not ready.")},
            }
        },
    }


def document(settings: Settings, config: Config) -> dict[str, Any]:
    admin_on = settings.admin_token is not None and bool(settings.admin_token.get_secret_value())
    paths = ingest_paths(config)
    components: dict[str, Any] = {"schemas": SCHEMAS}
    if admin_on:
        paths.update(admin_paths())
        components["securitySchemes"] = {"adminToken": {"type": "http", "scheme": "bearer"}}
        for item in paths.values():
            for op in item.values():
                if op.get("tags") == ["admin"]:
                    op["security"] = [{"adminToken": []}]
    return {
        "openapi": "3.0.3",
        "info": {
            "title": "hookline",
            "version": "1",
            "description": "Verified webhooks in (POST /webhooks/{source}); the admin API under /admin/api.",
        },
        "paths": paths,
        "components": components,
    }


async def openapi_json(request: Request) -> Response:
    state = request.state.hookline
    return json_response(200, document(state.settings, state.config))
