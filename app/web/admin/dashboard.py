"""The dashboard at ``/admin``: server-rendered Jinja2 pages, one static script, a live SSE stream.

Login with the admin token gives a signed session cookie (see :mod:`app.web.admin.auth`); every
POST signed in by that cookie carries a CSRF token and must come from this site. Scripts may send
``Authorization: Bearer $HOOKLINE_ADMIN_TOKEN`` instead, as on the API. Pages never load anything from another
origin (``Content-Security-Policy: default-src 'self'``), so the dashboard works with no network.
"""

from __future__ import annotations

import functools
import json
import re
import secrets
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any
from urllib.parse import parse_qsl, urlencode

import jinja2
from starlette.requests import Request
from starlette.responses import HTMLResponse, RedirectResponse, Response, StreamingResponse
from starlette.routing import Route

from app.core.errors import BadRequest, NotFound, PayloadTooLarge
from app.web.admin import api, chart, data
from app.web.admin.api import (
    EVENT_QUERY,
    PAGE_QUERY,
    clean,
    dismiss_event,
    event_filter,
    list_page,
    query,
    replay_event,
    run_db,
    today_utc,
)
from app.web.admin.auth import (
    CSRF_FIELD,
    LOGIN_CSRF_COOKIE,
    SESSION_COOKIE,
    SESSION_SECONDS,
    Session,
    Sessions,
    token_matches,
)
from app.web.admin.stream import updates
from app.web.guard import client_ip
from app.web.responses import json_response, private
from app.web.state import AppState
from app.web.throttle import too_many

HERE = Path(__file__).resolve().parent
TEMPLATES = jinja2.Environment(
    loader=jinja2.FileSystemLoader(HERE / "templates"),
    autoescape=True,
    undefined=jinja2.StrictUndefined,
)


def pretty_json(value: Any) -> str:
    """A payload, an answer or headers as indented JSON, for a ``<pre>``: autoescape escapes it as text.
    Jinja's ``tojson`` writes ``<``, ``>``, ``&`` and ``'`` as ``\\u003c``… (safe inside a ``<script>``),
    so a payload's ``<b>`` read ``\\u003cb\\u003e`` on the page: not what was sent."""
    return json.dumps(value, indent=2, sort_keys=True, ensure_ascii=False)


TEMPLATES.filters["pretty_json"] = pretty_json
SECURITY_HEADERS = {
    "Content-Security-Policy": "default-src 'self'; img-src 'self' data:; frame-ancestors 'none'; form-action 'self'",
    "X-Frame-Options": "DENY",
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "same-origin",
    "Cache-Control": "no-store",
}
CHART_MINUTES = 60
MAX_FORM_BYTES = 16 * 1024
STATUSES = ("queued", "processing", "retrying", "throttled", "succeeded", "skipped", "dead")

Page = Callable[[Request, AppState, Session], Awaitable[Response]]


def render(name: str, status: int = 200, **context: Any) -> HTMLResponse:
    return HTMLResponse(TEMPLATES.get_template(name).render(**context), status_code=status, headers=SECURITY_HEADERS)


def sessions(state: AppState) -> Sessions:
    assert state.settings.admin_token is not None  # routes exist only when it is set
    return Sessions(state.settings.admin_token.get_secret_value(), state.settings)


def signed_in(page: Page) -> Callable[[Request], Awaitable[Response]]:
    """The page with its session (cookie, or a bearer header); none → the login page (or 401 for
    scripts and streams)."""

    @functools.wraps(page)
    async def endpoint(request: Request) -> Response:
        state: AppState = request.state.hookline
        session = sessions(state).read(request, state.admin_attempts, client_ip(request, state.trusted_proxies))
        if session is None:
            if request.method == "GET" and "text/html" in request.headers.get("accept", ""):
                return RedirectResponse("/admin/login", status_code=303)
            return json_response(401, {"error": "unauthorized", "detail": "sign in at /admin/login"})
        return private(await run_db(state, lambda: page(request, state, session), write=request.method == "POST"))

    return endpoint


# -- login ---------------------------------------------------------------------------------------


async def login_form(request: Request) -> Response:
    state: AppState = request.state.hookline
    return _login_page(request, state, error=None, status=200)


def _login_page(
    request: Request, state: AppState, *, error: str | None, status: int, headers: dict[str, str] | None = None
) -> Response:
    csrf = secrets.token_urlsafe(24)
    response = render("login.html", status, csrf_field=CSRF_FIELD, csrf=csrf, error=error)
    response.headers.update(headers or {})
    sessions(state).set_cookie(request, response, LOGIN_CSRF_COOKIE, csrf, max_age=3600)
    return response


async def login(request: Request) -> Response:
    state: AppState = request.state.hookline
    s = sessions(state)
    s.check_origin(request)
    form = await read_form(request)
    s.check_login_csrf(request, _str(form.get(CSRF_FIELD)))
    assert state.settings.admin_token is not None
    address = client_ip(request, state.trusted_proxies)
    wait = state.admin_attempts.retry_after(address)
    if wait:  # over the limit: the token is not even compared
        error = too_many(wait).capitalize() + "."
        return _login_page(request, state, error=error, status=429, headers={"Retry-After": str(wait)})
    if not token_matches(_str(form.get("token")) or "", state.settings.admin_token.get_secret_value()):
        state.admin_attempts.failed(address)
        return _login_page(request, state, error="That is not the admin token.", status=401)
    cookie, _ = s.issue()
    response = RedirectResponse("/admin", status_code=303)
    s.set_cookie(request, response, SESSION_COOKIE, cookie, max_age=SESSION_SECONDS)
    s.clear_cookie(request, response, LOGIN_CSRF_COOKIE)
    return response


async def _checked_form(request: Request, state: AppState, session: Session) -> Any:
    """A signed-in POST's form, once its Origin (for a cookie session) and its CSRF token are checked."""
    if not session.bearer:
        sessions(state).check_origin(request)
    form = await read_form(request)
    sessions(state).check_csrf(request, session, _str(form.get(CSRF_FIELD)))
    return form


@signed_in
async def logout(request: Request, state: AppState, session: Session) -> Response:
    await _checked_form(request, state, session)
    response = RedirectResponse("/admin/login", status_code=303)
    sessions(state).clear_cookie(request, response, SESSION_COOKIE)
    return response


def _str(value: Any) -> str | None:
    return value if isinstance(value, str) else None


async def read_form(request: Request) -> dict[str, str]:
    """An ``application/x-www-form-urlencoded`` body (the only kind the dashboard posts)."""
    if request.headers.get("content-type", "").split(";")[0].strip() != "application/x-www-form-urlencoded":
        raise BadRequest("post the form as application/x-www-form-urlencoded")
    body = await request.body()
    if len(body) > MAX_FORM_BYTES:
        raise PayloadTooLarge("the form is too large")
    return dict(parse_qsl(body.decode("utf-8", "replace"), keep_blank_values=True))


# -- pages ---------------------------------------------------------------------------------------


def event_id_of(raw: str) -> int:
    """The event id of a dashboard path; 404 unless it is ASCII digits naming a bigint (``str.isdigit``
    also takes '²' and '٣', which ``int`` then refuses: a 500)."""
    if not re.fullmatch(r"[0-9]{1,19}", raw) or not 0 < int(raw) < 2**63:
        raise NotFound(f"no event with id {raw}")
    return int(raw)


@signed_in
async def overview(request: Request, state: AppState, session: Session) -> Response:
    pool = await state.db.ensure()
    since, until = today_utc()
    stats = await data.stats(pool)
    return render(
        "overview.html",
        csrf=session.csrf,
        statuses=STATUSES,
        counts=data.tiles(stats["events_by_status"], stats["dead_letters"]),
        events=await data.list_events(pool, state.config, data.EventFilter(), before=None, limit=30),
        dead=await data.dead_letters(pool, state.config, before=None, limit=50),
        cost=await data.cost(pool, since, until),
        day=since.date().isoformat(),
        stats=stats,
    )


@signed_in
async def event_page(request: Request, state: AppState, session: Session) -> Response:
    raw = str(request.path_params["event_id"])
    event_id = event_id_of(raw)
    detail = await data.event_detail(await state.db.ensure(), state.config, event_id)
    if detail is None:
        raise NotFound(f"no event with id {raw}")
    return render("event.html", csrf=session.csrf, replayable=("succeeded", "dead", "skipped"), **detail)


def form_query(request: Request, *allowed: str) -> dict[str, str]:
    """A GET form's fields, checked as the API checks its query (an unknown name is a 400); the empty
    ones are left out, as a form sends every field."""
    return {k: v for k, v in query(request, *allowed).items() if v != ""}


def next_link(path: str, fields: dict[str, str], cursor: str | None) -> str | None:
    """The next page's URL: the same fields, the page's ``next_cursor``."""
    return None if cursor is None else f"{path}?{urlencode({**fields, 'cursor': cursor})}"


@signed_in
async def events_list(request: Request, state: AppState, session: Session) -> Response:
    """Every event, filtered and paged as ``GET /admin/api/events``; a bad filter is the page with the
    API's message (400) and the fields as typed."""
    fields: dict[str, str] = dict(request.query_params)
    error: str | None = None
    events: list[dict[str, Any]] = []
    cursor: str | None = None
    try:
        fields = form_query(request, *EVENT_QUERY)
        f, (before, limit) = event_filter(fields), list_page(fields)
    except BadRequest as e:
        error = e.detail
    else:
        rows = await data.list_events(await state.db.ensure(), state.config, f, before=before, limit=limit + 1)
        events, cursor = api.page(rows, limit, "id")
    return render(
        "events.html",
        400 if error else 200,
        csrf=session.csrf,
        statuses=STATUSES,
        sources=sorted(state.config.sources),
        fields=fields,
        error=error,
        events=events,
        next_url=next_link("/admin/events", fields, cursor),
    )


@signed_in
async def dead_letters_list(request: Request, state: AppState, session: Session) -> Response:
    """Every dead letter, paged as ``GET /admin/api/dead-letters``, with the overview's buttons."""
    pool = await state.db.ensure()
    fields: dict[str, str] = {}
    error: str | None = None
    dead: list[dict[str, Any]] = []
    cursor: str | None = None
    try:
        fields = form_query(request, *PAGE_QUERY)
        before, limit = list_page(fields)
    except BadRequest as e:
        error = e.detail
    else:
        rows = await data.dead_letters(pool, state.config, before=before, limit=limit + 1)
        dead, cursor = api.page(rows, limit, "event_id")
    return render(
        "dead_letters.html",
        400 if error else 200,
        csrf=session.csrf,
        error=error,
        dead=dead,
        open_count=(await data.dead_letter_counts(pool))["open"],
        next_url=next_link("/admin/dead-letters", fields, cursor),
    )


@signed_in
async def replay(request: Request, state: AppState, session: Session) -> Response:
    form = await _checked_form(request, state, session)
    event_id = event_id_of(str(request.path_params["event_id"]))
    job_id = await replay_event(state, event_id, recompute=form.get("recompute") == "1", force=False)
    return _done(request, event_id, 202, {"event_id": event_id, "job_id": job_id})


@signed_in
async def dismiss(request: Request, state: AppState, session: Session) -> Response:
    form = await _checked_form(request, state, session)
    event_id = event_id_of(str(request.path_params["event_id"]))
    result = await dismiss_event(state, event_id, reason=clean("reason", form.get("reason")), by="dashboard")
    return _done(request, event_id, 200, result)


def _done(request: Request, event_id: int, status: int, body: Any) -> Response:
    """A button's answer: JSON for the page's script, else back to the event's page (a plain form)."""
    if "application/json" in request.headers.get("accept", ""):
        return json_response(status, body)
    return RedirectResponse(f"/admin/events/{event_id}", status_code=303)


@signed_in
async def chart_svg(request: Request, state: AppState, session: Session) -> Response:
    rows = await data.throughput(await state.db.ensure(), CHART_MINUTES)
    return Response(
        chart.render(rows, CHART_MINUTES), media_type="image/svg+xml", headers={"Cache-Control": "no-store"}
    )


@signed_in
async def stream(request: Request, state: AppState, session: Session) -> Response:
    headers = {"Cache-Control": "no-store", "X-Accel-Buffering": "no"}
    if request.method == "HEAD":  # the stream's headers, at once: no LISTEN subscription, no open response
        response = Response(media_type="text/event-stream", headers=headers)
        del response.headers["content-length"]  # as GET's (a stream has none), not a length of 0
        return response
    return StreamingResponse(updates(state), media_type="text/event-stream", headers=headers)


def routes() -> list[Route]:
    return [
        Route("/", overview, methods=["GET"]),
        Route("/login", login_form, methods=["GET"]),
        Route("/login", login, methods=["POST"]),
        Route("/logout", logout, methods=["POST"]),
        Route("/events", events_list, methods=["GET"]),
        Route("/dead-letters", dead_letters_list, methods=["GET"]),
        Route("/events/{event_id}", event_page, methods=["GET"]),
        Route("/events/{event_id}/replay", replay, methods=["POST"]),
        Route("/events/{event_id}/dismiss", dismiss, methods=["POST"]),
        Route("/chart.svg", chart_svg, methods=["GET"]),
        Route("/stream", stream, methods=["GET"]),
    ]
