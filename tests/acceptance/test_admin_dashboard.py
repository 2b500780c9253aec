"""The dashboard's door, over plain HTTP: login, the session cookie's attributes, CSRF and Origin checks.

The browser test (tests/browser/) drives the pages themselves; these tests speak HTTP the way a
hostile page or a careless proxy would.
"""

from __future__ import annotations

import asyncio
import html
import json
import re
from collections.abc import AsyncIterator
from typing import Any

import httpx
import psycopg
import pytest

from tests.acceptance.test_admin_api import TOKEN, admin_config, insert_event
from tests.harness import make_settings, web_server

FORM = {"content-type": "application/x-www-form-urlencoded"}


async def start(db_url: str, monkeypatch: pytest.MonkeyPatch, **over: Any) -> Any:
    monkeypatch.setenv("HL_STRIPE_SECRET", "whsec_x")
    monkeypatch.setenv("HL_GITHUB_SECRET", "gh")
    return web_server(make_settings(db_url, admin_token=TOKEN, **over), admin_config())


@pytest.fixture
async def base(db_url: str, monkeypatch: pytest.MonkeyPatch) -> AsyncIterator[str]:
    async with await start(db_url, monkeypatch) as url:
        yield url


async def login(client: httpx.AsyncClient, token: str = TOKEN, **headers: str) -> httpx.Response:
    page = await client.get("/admin/login")
    csrf = re.search(r'name="csrf_token" value="([^"]+)"', page.text)
    assert page.status_code == 200 and csrf is not None
    return await client.post(
        "/admin/login", content=f"csrf_token={csrf.group(1)}&token={token}", headers={**FORM, **headers}
    )


def csrf_of(page: httpx.Response) -> str:
    m = re.search(r'<meta name="csrf-token" content="([^"]+)">', page.text)
    assert m is not None
    return m.group(1)


async def test_login_sets_a_strict_httponly_session_cookie(base: str) -> None:
    async with httpx.AsyncClient(base_url=base) as client:
        first = await client.get("/admin", headers={"accept": "text/html"})
        assert first.status_code == 303 and first.headers["location"] == "/admin/login"
        wrong = await login(client, "not-the-token")
        assert wrong.status_code == 401 and "not the admin token" in wrong.text and TOKEN not in wrong.text
        ok = await login(client)
        assert ok.status_code == 303 and ok.headers["location"] == "/admin"
        cookie = next(v for k, v in ok.headers.multi_items() if k == "set-cookie" and v.startswith("hookline_session="))
        attrs = {a.strip().lower() for a in cookie.split(";")[1:]}
        assert {"httponly", "samesite=strict", "path=/admin"} <= attrs and "secure" not in attrs
        assert TOKEN not in cookie
        page = await client.get("/admin")
        assert page.status_code == 200 and "Live events" in page.text
        assert "default-src 'self'" in page.headers["content-security-policy"]
        assert (
            "http://" not in page.text.replace('xmlns="http://www.w3.org/2000/svg"', "") and "https://" not in page.text
        )
        chart = await client.get("/admin/chart.svg")
        assert chart.status_code == 200 and chart.headers["content-type"].startswith("image/svg+xml")
    value = cookie.split(";")[0].split("=", 1)[1]
    issued = int(value.split(".")[1])
    forged = [value[:-2] + "xx", value.replace(f".{issued}.", f".{issued + 3600}."), "v1.1.abc.def", ""]
    for bad in forged:
        async with httpx.AsyncClient(base_url=base, headers={"cookie": f"hookline_session={bad}"}) as other:
            assert (await other.get("/admin", headers={"accept": "text/html"})).status_code == 303, bad
    async with httpx.AsyncClient(base_url=base, headers={"cookie": f"hookline_session={value}"}) as other:
        assert (await other.get("/admin")).status_code == 200


async def test_the_cookie_is_secure_behind_https_only_when_trusted(
    db_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    # As on a PaaS: the proxy in front is not loopback, so uvicorn itself does not believe its headers.
    monkeypatch.setenv("FORWARDED_ALLOW_IPS", "192.0.2.1")
    https = {"x-forwarded-proto": "https"}
    async with await start(db_url, monkeypatch) as url, httpx.AsyncClient(base_url=url, headers=https) as client:
        r = await login(client)
        assert r.status_code == 303
        assert "secure" not in r.headers["set-cookie"].lower(), "X-Forwarded-Proto must not be trusted by default"
    trusted = await start(db_url, monkeypatch, trust_forwarded_proto=True)
    # The client speaks plain http to the test server, so it would hold back Secure cookies: pass them by hand.
    async with trusted as url, httpx.AsyncClient(base_url=url, headers=https) as client:
        form = await client.get("/admin/login")
        login_cookie = form.cookies["hookline_login_csrf"]
        assert "secure" in form.headers["set-cookie"].lower()
        r = await client.post(
            "/admin/login",
            content=f"csrf_token={login_cookie}&token={TOKEN}",
            headers={**FORM, "cookie": f"hookline_login_csrf={login_cookie}"},
        )
        assert r.status_code == 303
        cookie = next(v for k, v in r.headers.multi_items() if k == "set-cookie" and "hookline_session=" in v)
        assert "secure" in cookie.lower()
        session = {"cookie": cookie.split(";")[0]}
        page = await client.get("/admin", headers=session)
        assert page.status_code == 200
        # Over HTTPS, an http:// Origin is another origin.
        replay = await client.post(
            "/admin/events/1/replay",
            content=f"csrf_token={csrf_of(page)}",
            headers={**FORM, **session, "origin": url},
        )
        assert replay.status_code == 403


async def test_a_cross_site_post_is_refused(base: str, conn: psycopg.Connection) -> None:
    dead = insert_event(conn, "stripe", "dead", status="dead")
    async with httpx.AsyncClient(base_url=base) as client:
        assert (await login(client)).status_code == 303
        csrf = csrf_of(await client.get("/admin"))
        url = f"/admin/events/{dead}/replay"
        good = f"csrf_token={csrf}"
        attempts = [
            ({**FORM, "origin": "https://evil.example"}, good),
            ({**FORM, "origin": "null"}, good),
            ({**FORM, "referer": "https://evil.example/page"}, good),
            ({**FORM, "sec-fetch-site": "cross-site"}, good),
            ({**FORM, "origin": base}, ""),
            ({**FORM, "origin": base}, "csrf_token=forged"),
            ({"content-type": "text/plain", "origin": "https://evil.example"}, good),
        ]
        for headers, body in attempts:
            r = await client.post(url, content=body, headers=headers)
            assert r.status_code == 403, (headers, body, r.text)
        assert conn.execute("SELECT status FROM hookline.events WHERE id = %s", (dead,)).fetchone() == ("dead",)
        # The login form is protected too (login CSRF): a foreign page cannot sign the browser in.
        evil_login = await client.post(
            "/admin/login", content=f"csrf_token=x&token={TOKEN}", headers={**FORM, "origin": "https://evil.example"}
        )
        assert evil_login.status_code == 403
        same_site = await client.post(url, content=good, headers={**FORM, "origin": base, "accept": "application/json"})
        assert same_site.status_code == 202 and same_site.json()["event_id"] == dead
        assert same_site.headers["cache-control"] == "no-store"  # a dashboard JSON answer is private too
        assert conn.execute("SELECT status FROM hookline.events WHERE id = %s", (dead,)).fetchone() == ("queued",)


async def test_without_a_session_actions_and_the_stream_are_refused(base: str, conn: psycopg.Connection) -> None:
    dead = insert_event(conn, "stripe", "dead", status="dead")
    async with httpx.AsyncClient(base_url=base) as client:
        assert (
            await client.post(f"/admin/events/{dead}/replay", content="csrf_token=x", headers=FORM)
        ).status_code == 401
        assert (await client.get("/admin/stream")).status_code == 401
        assert (await client.get(f"/admin/events/{dead}", headers={"accept": "text/html"})).status_code == 303
        # The API's bearer token is not a dashboard session, and a session is not an API token.
        api = await client.get("/admin/api/events", headers={"Authorization": f"Bearer {TOKEN}"})
        assert api.status_code == 200
        assert (await login(client)).status_code == 303
        assert (await client.get("/admin/api/events")).status_code == 401


async def test_the_dashboard_takes_the_bearer_token_too(base: str, conn: psycopg.Connection) -> None:
    """DESIGN: the dashboard is behind the bearer token, as the API is (for scripts and proxies). A
    browser never attaches that header by itself, so a bearer request needs no CSRF token."""
    dead = insert_event(conn, "stripe", "bearer-dead", status="dead")
    bearer = {"Authorization": f"Bearer {TOKEN}"}
    async with httpx.AsyncClient(base_url=base) as client:
        for path in ("/admin", f"/admin/events/{dead}", "/admin/chart.svg"):
            r = await client.get(path, headers={**bearer, "accept": "text/html"})
            assert r.status_code == 200, (path, r.status_code, r.text[:200])
            assert "set-cookie" not in r.headers  # no session is made from it
        assert "Live events" in (await client.get("/admin", headers=bearer)).text
        wrong = await client.get("/admin", headers={"Authorization": "Bearer not-the-token", "accept": "text/html"})
        assert wrong.status_code == 401 and wrong.headers["www-authenticate"].startswith("Bearer")
        assert "not valid" in wrong.json()["detail"] and TOKEN not in wrong.text
        replay = await client.post(
            f"/admin/events/{dead}/replay", content="", headers={**FORM, **bearer, "accept": "application/json"}
        )
        assert replay.status_code == 202 and replay.json()["event_id"] == dead, replay.text
        assert conn.execute("SELECT status FROM hookline.events WHERE id = %s", (dead,)).fetchone() == ("queued",)
    # a proxy's Basic credentials in front of the dashboard leave the cookie login as it was
    async with httpx.AsyncClient(base_url=base, headers={"Authorization": "Basic dXNlcjpwdw=="}) as client:
        assert (await login(client)).status_code == 303
        page = await client.get("/admin")
        assert page.status_code == 200 and csrf_of(page)


async def test_the_stream_sends_rows_named_by_notify(base: str, conn: psycopg.Connection) -> None:
    """A row written by anyone (here a DBA's psql) reaches the open stream through LISTEN/NOTIFY."""
    async with httpx.AsyncClient(base_url=base, timeout=20) as client:
        assert (await login(client)).status_code == 303
        async with client.stream("GET", "/admin/stream") as stream:
            assert stream.headers["content-type"].startswith("text/event-stream")
            messages: list[tuple[str, Any]] = []
            event = ""
            inserted: list[int] = []
            async for line in stream.aiter_lines():
                if line.startswith("event: "):
                    event = line.removeprefix("event: ")
                elif line.startswith("data: "):
                    messages.append((event, json.loads(line.removeprefix("data: "))))
                    if event == "hello":
                        assert messages[-1][1] == {"listening": True}
                        inserted.append(insert_event(conn, "github", "live-1", status="queued"))
                        conn.execute("UPDATE hookline.events SET status = 'dead' WHERE id = %s", (inserted[0],))
                    elif event == "update" and any(
                        e["id"] == inserted[0] and e["status"] == "dead" for e in messages[-1][1]["events"]
                    ):
                        break
    updates = [m for e, m in messages if e == "update"]
    assert updates and all(e["id"] == inserted[0] for m in updates for e in m["events"])
    assert sum(updates[0]["counts"].values()) == 1, "the first update carries the counts by status"


async def test_head_of_the_stream_is_its_headers_and_ends_at_once(base: str, conn: psycopg.Connection) -> None:
    """HEAD /admin/stream answers the stream's headers and ends: no LISTEN subscription is made for it,
    and the server closes the ``Connection: close`` request (a held stream would keep it open)."""
    url = httpx.URL(base)
    reader, writer = await asyncio.open_connection(url.host, url.port)
    writer.write(
        f"HEAD /admin/stream HTTP/1.1\r\nHost: {url.netloc.decode()}\r\nAuthorization: Bearer {TOKEN}\r\n"
        "Connection: close\r\n\r\n".encode()
    )
    try:
        async with asyncio.timeout(30):  # a guard, not a measure: a held stream never reaches EOF
            raw = (await reader.read()).decode().lower()
    finally:
        writer.close()
    assert raw.startswith("http/1.1 200") and raw.endswith("\r\n\r\n"), raw
    assert "content-type: text/event-stream" in raw and "cache-control: no-store" in raw
    assert "content-length" not in raw and "transfer-encoding" not in raw
    listening = conn.execute(
        "SELECT count(*) FROM pg_stat_activity"
        " WHERE application_name = 'hookline-web-listen' AND datname = current_database()"
    ).fetchone()
    assert listening == (0,), "HEAD must not start the LISTEN connection"
    async with httpx.AsyncClient(base_url=base) as client:  # without a session it is refused, as GET is
        assert (await client.head("/admin/stream")).status_code == 401


async def test_an_event_id_that_is_not_ascii_digits_is_404_not_500(base: str) -> None:
    """str.isdigit() takes '²' and '٣', which int() refuses: such an id is no event, never a server error."""
    bearer = {"Authorization": f"Bearer {TOKEN}", "accept": "application/json"}
    async with httpx.AsyncClient(base_url=base, headers=bearer) as client:
        for raw in ("%C2%B2", "%D9%A3", "1%C2%B2"):
            page = await client.get(f"/admin/events/{raw}")
            assert page.status_code == 404 and page.json()["error"] == "not_found", (raw, page.text)
            replay = await client.post(f"/admin/events/{raw}/replay", content="", headers=FORM)
            assert replay.status_code == 404 and replay.json()["error"] == "not_found", (raw, replay.text)


async def test_a_pruned_event_offers_no_replay(base: str, conn: psycopg.Connection) -> None:
    """Retention dropped the payload: hookline.replay refuses the event (409), so the page says why
    instead of offering a button that fails; the admin API says "pruned"."""
    pruned = insert_event(conn, "stripe", "pruned-dead", status="dead")
    kept = insert_event(conn, "stripe", "kept-dead", status="dead")
    conn.execute("UPDATE hookline.events SET body = NULL, payload = NULL WHERE id = %s", (pruned,))
    bearer = {"Authorization": f"Bearer {TOKEN}"}
    async with httpx.AsyncClient(base_url=base, headers=bearer) as client:
        page = (await client.get(f"/admin/events/{pruned}", headers={"accept": "text/html"})).text
        assert re.search(r'<button[^>]*class="replay"[^>]*disabled', page) and "cannot be replayed" in page
        other = (await client.get(f"/admin/events/{kept}", headers={"accept": "text/html"})).text
        assert not re.search(r'<button[^>]*class="replay"[^>]*disabled', other) and "cannot be replayed" not in other
        api = await client.get(f"/admin/api/events/{pruned}")
        assert api.json()["event"]["pruned"] is True
        assert (await client.get(f"/admin/api/events/{kept}")).json()["event"]["pruned"] is False
        # the overview's dead letters too: its row's Replay button is off (it answered 409 in an alert)
        overview = (await client.get("/admin", headers={"accept": "text/html"})).text
        assert re.search(rf'<button type="button" class="replay" data-id="{pruned}" disabled', overview)
        assert re.search(rf'<button type="button" class="replay" data-id="{kept}">', overview)
        listed = (await client.get("/admin/api/dead-letters")).json()["dead_letters"]
        assert {d["event_id"]: d["pruned"] for d in listed} == {pruned: True, kept: False}


async def test_every_link_answers_and_values_show_as_sent(base: str, conn: psycopg.Connection) -> None:
    """Each href, src and form action of the pages answers, and the pages name an icon (without one the
    browser asks /favicon.ico: a 404 in the console of every page). A payload, an answer and headers
    read as sent: Jinja's tojson wrote '<' as '\\u003c' in the page's <pre>."""
    sent = {"note": "<img src=x onerror=alert(1)> & 'quoted' café"}
    dead = insert_event(conn, "stripe", "links-dead", status="dead", payload=sent)
    conn.execute(
        "INSERT INTO hookline.llm_calls (event_id, pipeline, model, status, request, output)"
        " VALUES (%s, 'p', 'claude-haiku-5-5', 'succeeded', '{}', %s)",
        (dead, json.dumps({"subject": "<b>Hi</b>"})),
    )
    bearer = {"Authorization": f"Bearer {TOKEN}", "accept": "text/html"}
    async with httpx.AsyncClient(base_url=base, headers=bearer) as client:
        for path in ("/admin/login", "/admin", f"/admin/events/{dead}", "/admin/events", "/admin/dead-letters"):
            page = (await client.get(path)).text
            assert re.search(r'<link rel="icon" href="/admin/static/[^"]+"', page), path
            targets = set(re.findall(r'(?:href|src)="([^"]+)"', page))
            assert {"/admin/static/admin.css", "/admin/static/admin.js"} <= targets, path
            for target in targets:
                assert (await client.get(target)).status_code == 200, (path, target)
            for action in re.findall(r'<form method="post" action="([^"]+)"', page):  # a POST route, not a 404
                assert (await client.post(action, content="", headers=FORM)).status_code != 404, (path, action)
        page = (await client.get(f"/admin/events/{dead}")).text
        assert "\\u003c" not in page and "\\u0026" not in page and "\\u00e9" not in page
        shown = [html.unescape(p) for p in re.findall(r"<pre[^>]*>(.*?)</pre>", page, re.DOTALL)]
        assert json.dumps({"subject": "<b>Hi</b>"}, indent=2) in shown and json.dumps(sent, indent=2) not in shown
        assert json.dumps(sent, indent=2, ensure_ascii=False) in shown
        assert "<img" not in page and "&lt;img src=x" in page  # escaped as text, never markup
