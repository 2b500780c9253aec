"""The dashboard's lists beyond the overview, over plain HTTP: ``/admin/events`` (the API's filters as a
GET form, paged by its cursor) and ``/admin/dead-letters`` (every dead letter, with the overview's
buttons). Both read what ``/admin/api/events`` and ``/admin/api/dead-letters`` read, masked the same way.
"""

from __future__ import annotations

import html
import re
from datetime import UTC, datetime, timedelta

import httpx
import psycopg

from tests.acceptance.test_admin_api import TOKEN, insert_event
from tests.acceptance.test_admin_dashboard import base, login  # noqa: F401  (base: a fixture)
from tests.acceptance.test_admin_redaction import EMAIL, story

PAGE = {"Authorization": f"Bearer {TOKEN}", "accept": "text/html"}


def ids(page: httpx.Response) -> list[int]:
    """The event ids a list page shows, in its order (each row links to the event's page)."""
    return [int(i) for i in re.findall(r'<tr data-id="(\d+)">\s*<td><a href="/admin/events/\1">', page.text)]


def next_url(page: httpx.Response) -> str | None:
    m = re.search(r'<a href="([^"]+)" rel="next"', page.text)
    return html.unescape(m.group(1)) if m else None


async def test_the_event_list_filters_and_pages_as_the_api(base: str, conn: psycopg.Connection) -> None:  # noqa: F811
    tuesday = datetime.now(UTC) - timedelta(days=6)
    failed = [insert_event(conn, "stripe", f"tue-{n}", status="dead", received_at=tuesday) for n in range(3)]
    insert_event(conn, "stripe", "today-dead", status="dead")  # outside the window
    insert_event(conn, "stripe", "tue-ok", received_at=tuesday)  # another status
    insert_event(conn, "github", "tue-gh", status="dead", received_at=tuesday)  # another source
    day = tuesday.date().isoformat()
    until = (tuesday.date() + timedelta(days=1)).isoformat()
    async with httpx.AsyncClient(base_url=base, headers=PAGE) as client:
        # as the form sends it: every field, the unused ones empty
        form = {"status": "dead", "source": "stripe", "type": "", "tenant": "", "since": day, "until": until}
        first = await client.get("/admin/events", params={**form, "limit": "2"})
        assert first.status_code == 200, first.text
        assert ids(first) == [failed[2], failed[1]]
        assert re.search(r'<option value="dead" selected>', first.text) and f'value="{day}"' in first.text
        link = next_url(first)
        assert link is not None and link.startswith("/admin/events?")
        assert "type=" not in link and "source=stripe" in link and f"cursor={failed[1]}" in link
        second = await client.get(link)
        assert second.status_code == 200 and ids(second) == [failed[0]] and next_url(second) is None
        everything = await client.get("/admin/events")
        assert len(ids(everything)) == 6 and ids(everything) == sorted(ids(everything), reverse=True)
        # the overview links here and to every dead letter, and every page names both
        overview = await client.get("/admin")
        assert 'href="/admin/events"' in overview.text and 'href="/admin/dead-letters"' in overview.text
        assert re.search(r'All <span class="n" data-status="dead">5</span> dead letters', overview.text)
        for page in (overview, first, await client.get("/admin/dead-letters")):
            assert re.search(r'<nav class="pages">.*href="/admin/events".*href="/admin/dead-letters"', page.text, re.S)
    async with httpx.AsyncClient(base_url=base) as client:  # signed out: the login page, as the others
        r = await client.get("/admin/events", headers={"accept": "text/html"})
        assert r.status_code == 303 and r.headers["location"] == "/admin/login"
        assert (await login(client)).status_code == 303
        assert ids(await client.get("/admin/events", params={"source": "github"})) == [ids(everything)[0]]


async def test_values_are_escaped_and_redacted_values_masked(base: str, conn: psycopg.Connection) -> None:  # noqa: F811
    """A tenant or type is text, never markup; an error repeating a ``redact`` path's value reads
    ``[redacted]`` on the list and in ``/admin/api/events`` (the API's list showed it as stored)."""
    evil = "<script>alert(1)</script>"
    insert_event(conn, "github", "evil", tenant=evil, event_type=evil)
    leaky = story(conn)  # a stripe dead letter whose last_error repeats its customer_email
    async with httpx.AsyncClient(base_url=base, headers=PAGE) as client:
        page = await client.get("/admin/events")
        assert page.status_code == 200 and leaky in ids(page)
        assert "<script>alert" not in page.text and "&lt;script&gt;alert(1)&lt;/script&gt;" in page.text
        echoed = await client.get("/admin/events", params={"tenant": evil})
        assert echoed.status_code == 200 and "<script>alert" not in echoed.text and "&lt;script&gt;" in echoed.text
        assert EMAIL not in page.text and "refused [redacted]" in page.text
        api = await client.get("/admin/api/events", headers={"accept": "application/json"})
        shown = {e["id"]: e for e in api.json()["events"]}
        assert EMAIL not in api.text and shown[leaky]["last_error"] == "slack#1: refused [redacted]"
        dead = await client.get("/admin/dead-letters")
        assert dead.status_code == 200 and EMAIL not in dead.text and "refused [redacted]" in dead.text
    stored = conn.execute("SELECT last_error FROM hookline.events WHERE id = %s", (leaky,)).fetchone()
    assert stored == (f"slack#1: refused {EMAIL}",), "masking is for display only"


async def test_a_bad_filter_is_the_page_with_the_apis_message(base: str) -> None:  # noqa: F811
    async with httpx.AsyncClient(base_url=base, headers=PAGE) as client:
        for params, says in (
            ({"status": "bogus"}, "status: one of queued"),
            ({"since": "last tuesday"}, "since: an ISO-8601 time"),
            ({"cursor": "x"}, "cursor: the next_cursor of the previous page"),
            ({"limit": "0"}, "limit: an integer from 1 to 500"),
            ({"sincee": "2026-01-01"}, "unknown parameter(s) [&#39;sincee&#39;]"),
        ):
            r = await client.get("/admin/events", params=params)
            assert r.status_code == 400 and r.headers["content-type"].startswith("text/html"), (params, r.text)
            assert says in r.text and 'role="alert"' in r.text and 'id="filters"' in r.text, (params, r.text)
        kept = await client.get("/admin/events", params={"status": "bogus", "source": "stripe"})
        assert 'name="source" list="sources" value="stripe"' in kept.text  # the fields as typed
        dead = await client.get("/admin/dead-letters", params={"cursor": "<b>"})
        assert dead.status_code == 400 and "cursor: the next_cursor" in dead.text and "<b>" not in dead.text


async def test_every_dead_letter_is_listed_with_its_buttons(base: str, conn: psycopg.Connection) -> None:  # noqa: F811
    dead = [insert_event(conn, "stripe", f"dl-{n}", status="dead") for n in range(3)]
    conn.execute("UPDATE hookline.events SET body = NULL, payload = NULL WHERE id = %s", (dead[0],))
    async with httpx.AsyncClient(base_url=base, headers=PAGE) as client:
        first = await client.get("/admin/dead-letters", params={"limit": "2"})
        assert first.status_code == 200 and ids(first) == [dead[2], dead[1]]
        assert "3 dead letter(s)" in first.text
        for event_id in ids(first):
            assert re.search(rf'<button type="button" class="replay" data-id="{event_id}">Replay', first.text)
            assert f'<button type="button" class="dismiss" data-id="{event_id}">Dismiss' in first.text
        link = next_url(first)
        assert link == f"/admin/dead-letters?limit=2&cursor={dead[1]}"
        second = await client.get(link)
        assert ids(second) == [dead[0]] and next_url(second) is None
        assert re.search(rf'<button type="button" class="replay" data-id="{dead[0]}" disabled', second.text)
        # the buttons post where the overview's do
        done = await client.post(
            f"/admin/events/{dead[2]}/dismiss",
            content="",
            headers={"content-type": "application/x-www-form-urlencoded", "accept": "application/json"},
        )
        assert done.status_code == 200 and done.json()["dismissed_now"] is True
        after = await client.get("/admin/dead-letters")
        assert ids(after) == [dead[1], dead[0]] and "2 dead letter(s)" in after.text
