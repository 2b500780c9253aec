"""Dismissing dead letters over HTTP (README "Admin API", "Dashboard"): the admin API's POSTs beside the
replay ones, the dashboard's Dismiss form (session, CSRF, Origin), and what the overview, /stats and
/metrics count afterwards."""

from __future__ import annotations

import re

import httpx
import psycopg

from tests.acceptance.test_admin_api import admin, insert_event  # noqa: F401 - the fixture
from tests.acceptance.test_admin_dashboard import FORM, base, csrf_of, login  # noqa: F401 - the fixture


async def test_the_api_dismisses_one_dead_letter_and_many(admin: httpx.AsyncClient, conn: psycopg.Connection) -> None:  # noqa: F811
    one = insert_event(conn, "stripe", "one", status="dead")
    many = [insert_event(conn, "github", f"g{i}", status="dead") for i in range(2)]
    done = insert_event(conn, "stripe", "done", status="succeeded")
    r = await admin.post(f"/admin/api/events/{one}/dismiss", json={"reason": "refunded"})
    assert r.status_code == 200 and r.json()["event_id"] == one and r.json()["dismissed_now"] is True, r.text
    again = await admin.post(f"/admin/api/events/{one}/dismiss")
    assert again.status_code == 200 and again.json()["dismissed_now"] is False
    assert again.json()["dismissed_at"] == r.json()["dismissed_at"]
    assert (await admin.post(f"/admin/api/events/{done}/dismiss")).status_code == 409
    missing = await admin.post("/admin/api/events/999999/dismiss")
    assert missing.status_code == 404 and "999999" in missing.json()["detail"]
    assert (await admin.post(f"/admin/api/events/{one}/dismiss", json={"reasn": "x"})).status_code == 400
    assert (await admin.post("/admin/api/dismiss", json={"reason": "everything?"})).status_code == 400
    bulk = await admin.post("/admin/api/dismiss", json={"source": "github", "reason": "outage, handled"})
    assert bulk.status_code == 200 and bulk.json()["dismissed"] == 2, bulk.text
    assert [e["event_id"] for e in bulk.json()["events"]] == many
    assert (await admin.get("/admin/api/dead-letters")).json()["dead_letters"] == []
    stats = (await admin.get("/admin/api/stats")).json()
    assert stats["dead_letters"] == {"open": 0, "dismissed": 3}
    assert stats["events_by_status"]["dead"] == 3  # the status stays: it is a contract
    detail = (await admin.get(f"/admin/api/events/{one}")).json()
    assert detail["event"]["dismissed_reason"] == "refunded" and detail["event"]["dismissed_by"] == "admin api"
    assert detail["timeline"][-1]["step"] == "dismissed"
    metrics = (await admin.get("/metrics")).text
    assert re.search(r"^hookline_dead_letters 0\.0$", metrics, re.MULTILINE), metrics
    spec = (await admin.get("/openapi.json")).json()
    assert {"/admin/api/events/{event_id}/dismiss", "/admin/api/dismiss"} <= set(spec["paths"])
    # without the token, nothing is dismissed
    other = insert_event(conn, "stripe", "other", status="dead")
    async with httpx.AsyncClient(base_url=str(admin.base_url)) as anonymous:
        assert (await anonymous.post(f"/admin/api/events/{other}/dismiss")).status_code == 401
    assert conn.execute("SELECT dismissed_at FROM hookline.events WHERE id = %s", (other,)).fetchone() == (None,)


async def test_the_dashboard_dismisses_from_the_event_page(base: str, conn: psycopg.Connection) -> None:  # noqa: F811
    dead = insert_event(conn, "stripe", "dead", status="dead")
    async with httpx.AsyncClient(base_url=base) as client:
        assert (await login(client)).status_code == 303
        overview = await client.get("/admin", headers={"accept": "text/html"})
        assert re.search(rf'<button[^>]*class="dismiss" data-id="{dead}"', overview.text)
        page = await client.get(f"/admin/events/{dead}", headers={"accept": "text/html"})
        assert f'action="/admin/events/{dead}/dismiss"' in page.text
        url = f"/admin/events/{dead}/dismiss"
        forged = await client.post(url, content="csrf_token=forged&reason=x", headers={**FORM, "origin": base})
        cross = await client.post(
            url, content=f"csrf_token={csrf_of(page)}", headers={**FORM, "origin": "https://evil.example"}
        )
        assert forged.status_code == 403 and cross.status_code == 403
        assert conn.execute("SELECT dismissed_at FROM hookline.events WHERE id = %s", (dead,)).fetchone() == (None,)
        form = f"csrf_token={csrf_of(page)}&reason=answered+%3Cb%3Eby+hand%3C%2Fb%3E"
        done = await client.post(url, content=form, headers={**FORM, "origin": base})
        assert done.status_code == 303 and done.headers["location"] == f"/admin/events/{dead}"
        after = (await client.get(f"/admin/events/{dead}", headers={"accept": "text/html"})).text
        assert "answered &lt;b&gt;by hand&lt;/b&gt;" in after and 'class="dismiss"' not in after
        assert "by dashboard" in after
        now = (await client.get("/admin", headers={"accept": "text/html"})).text
        assert f'data-id="{dead}"' not in now.split('id="dead"')[1]  # out of the dead letters list
        assert re.search(r'<span class="n" data-status="dead">0</span>', now)
        assert "1 dismissed dead letter(s)" in now
