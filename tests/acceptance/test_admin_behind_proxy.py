"""The dashboard behind an auth proxy that forwards its own ``Authorization: Bearer <id token>``
(oauth2-proxy's ``pass_authorization_header``, Pomerium): that bearer is not the admin token, so the
session cookie decides, with its CSRF and Origin checks; the admin API still takes the bearer only."""

from __future__ import annotations

import httpx
import psycopg

from tests.acceptance.test_admin_api import TOKEN, insert_event
from tests.acceptance.test_admin_dashboard import FORM, base, csrf_of, login  # noqa: F401

PROXY = {"Authorization": "Bearer eyJhbGciOiJSUzI1NiJ9.proxy-id-token.sig"}


async def test_a_proxys_own_bearer_leaves_the_cookie_session_in_charge(
    base: str,  # noqa: F811
    conn: psycopg.Connection,
) -> None:
    dead = insert_event(conn, "stripe", "proxy-dead", status="dead")
    async with httpx.AsyncClient(base_url=base, headers=PROXY) as client:
        # no session yet: the foreign bearer signs nobody in
        before = await client.get("/admin", headers={"accept": "text/html"})
        assert before.status_code == 401 and before.headers["www-authenticate"].startswith("Bearer")
        assert "/admin/login" in before.json()["detail"]
        assert (await login(client)).status_code == 303
        page = await client.get("/admin", headers={"accept": "text/html"})
        assert page.status_code == 200, page.text[:200]
        assert (await client.get(f"/admin/events/{dead}", headers={"accept": "text/html"})).status_code == 200
        url = f"/admin/events/{dead}/replay"
        # a cookie session still needs its CSRF token: the foreign bearer is no pass
        replay = await client.post(url, content="", headers={**FORM, "origin": base, "accept": "application/json"})
        assert replay.status_code == 403, replay.text
        evil = await client.post(
            url, content=f"csrf_token={csrf_of(page)}", headers={**FORM, "origin": "https://evil.example"}
        )
        assert evil.status_code == 403
        assert conn.execute("SELECT status FROM hookline.events WHERE id = %s", (dead,)).fetchone() == ("dead",)
        good = await client.post(
            url,
            content=f"csrf_token={csrf_of(page)}",
            headers={**FORM, "origin": base, "accept": "application/json"},
        )
        assert good.status_code == 202 and good.json()["event_id"] == dead, good.text
        # the admin API is bearer only: the cookie is no API session, the proxy's token no admin token
        api = await client.get("/admin/api/events")
        assert api.status_code == 401 and "not valid" in api.json()["detail"]
    async with httpx.AsyncClient(base_url=base) as client:
        ok = await client.get("/admin/api/events", headers={"Authorization": f"Bearer {TOKEN}"})
        assert ok.status_code == 200
