"""A payload number beyond a float's range (a watched row's numeric of 1e400 + 0.5) is shown: Python read
it as inf, which JSON cannot hold, and Starlette's JSONResponse refused it (the event's API answer was a
500). It reads as its text (app.core.jsonvalues), exact."""

from __future__ import annotations

import httpx
import psycopg

from tests.acceptance.test_admin_api import admin, insert_event  # noqa: F401  (admin: a fixture)
from tests.acceptance.test_watch_pipeline import BEYOND_FLOAT


async def test_an_event_holding_a_number_beyond_a_floats_range_is_shown(
    admin: httpx.AsyncClient,  # noqa: F811
    conn: psycopg.Connection,
) -> None:
    event_id = insert_event(conn, "github", "evt_beyond")
    conn.execute(
        "UPDATE hookline.events SET payload = %s::jsonb WHERE id = %s",
        (f'{{"amount": {BEYOND_FLOAT}, "tiny": 1.5e-400, "n": 3.25}}', event_id),
    )
    r = await admin.get(f"/admin/api/events/{event_id}")
    assert r.status_code == 200, r.text
    assert r.json()["event"]["payload"] == {"amount": BEYOND_FLOAT, "tiny": 0.0, "n": 3.25}
    page = await admin.get(f"/admin/events/{event_id}", headers={"accept": "text/html"})
    assert page.status_code == 200 and BEYOND_FLOAT in page.text
