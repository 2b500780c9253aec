"""A source's ``redact`` paths stay masked wherever the admin API and the dashboard show the event: not only
in its payload, but where the model or an action repeated a masked value (an email action's ``to`` read
from ``data.object.customer_email``, the README's own example; a model answer quoting it; an error text)."""

from __future__ import annotations

import json
import re

import httpx
import psycopg

from tests.acceptance.test_admin_api import TOKEN, admin, insert_event  # noqa: F401  (admin: a fixture)

EMAIL = "jane.doe@example.com"
CARD = "4242424242424242"


def story(conn: psycopg.Connection) -> int:
    payload = {
        "type": "invoice.payment_failed",
        "data": {"object": {"customer_email": EMAIL, "amount_due": 1200}, "items": [{"card": CARD, "sku": "x"}]},
    }
    event_id = insert_event(conn, "stripe", "evt_leak", payload=payload, status="dead")
    conn.execute("UPDATE hookline.events SET last_error = %s WHERE id = %s", (f"slack#1: refused {EMAIL}", event_id))
    conn.execute(
        "INSERT INTO hookline.llm_calls (event_id, pipeline, model, status, request, output, error) VALUES"
        " (%s, 'recovery', 'claude-haiku-5-5', 'invalid_output', '{}', %s, %s)",
        (event_id, json.dumps({"subject": "Hi", "body": f"Dear {EMAIL}, card {CARD} was declined."}),
         f"body: '{EMAIL}' is too long"),
    )  # fmt: skip
    conn.execute(
        "INSERT INTO hookline.action_runs (event_id, pipeline, action, action_type, status, idempotency_key,"
        " result, error, finished_at) VALUES (%s, 'recovery', 'email#0', 'email', 'succeeded', 'k', %s, NULL, now()),"
        " (%s, 'recovery', 'slack#1', 'slack', 'failed', 'k2', NULL, %s, now())",
        (event_id, json.dumps({"message_id": "<hookline.1@example.com>", "to": [EMAIL]}),
         event_id, f"slack#1: refused {EMAIL}"),
    )  # fmt: skip
    return event_id


async def test_values_of_redacted_paths_are_masked_in_answers_results_and_errors(
    admin: httpx.AsyncClient,  # noqa: F811
    conn: psycopg.Connection,
) -> None:
    event_id = story(conn)
    r = await admin.get(f"/admin/api/events/{event_id}")
    assert r.status_code == 200
    assert EMAIL not in r.text and CARD not in r.text, r.text
    body = r.json()
    assert body["actions"][0]["result"] == {"message_id": "<hookline.1@example.com>", "to": ["[redacted]"]}
    assert body["calls"][0]["output"]["body"] == "Dear [redacted], card [redacted] was declined."
    assert body["calls"][0]["output"]["subject"] == "Hi"
    assert body["event"]["last_error"] == "slack#1: refused [redacted]"
    assert body["calls"][0]["input_tokens"] is None  # numbers outside the texts are left alone
    page = await admin.get(f"/admin/events/{event_id}", headers={"accept": "text/html"})
    assert page.status_code == 200 and "Model calls" in page.text
    assert EMAIL not in page.text and CARD not in page.text
    assert re.search(r"refused \[redacted\]", page.text)
    stored = conn.execute("SELECT result->'to'->>0 FROM hookline.action_runs WHERE action = 'email#0'").fetchone()
    assert stored == (EMAIL,), "masking is for display only"


async def test_short_values_mask_only_whole_strings(admin: httpx.AsyncClient, conn: psycopg.Connection) -> None:  # noqa: F811
    """A redacted value of one or two characters masks a string equal to it, never every letter it contains."""
    event_id = insert_event(conn, "stripe", "evt_short", payload={"data": {"object": {"customer_email": "e"}}})
    conn.execute(
        "INSERT INTO hookline.action_runs (event_id, pipeline, action, action_type, status, idempotency_key,"
        " result, finished_at) VALUES (%s, 'p', 'python#0', 'python', 'succeeded', 'k', %s, now())",
        (event_id, json.dumps({"returned": ["e", "seen"]})),
    )
    body = (await admin.get(f"/admin/api/events/{event_id}")).json()
    assert body["actions"][0]["result"] == {"returned": ["[redacted]", "seen"]}


async def test_the_dead_letter_list_masks_them_too(admin: httpx.AsyncClient, conn: psycopg.Connection) -> None:  # noqa: F811
    """A model answer that fails its schema is described by jsonschema with the value itself
    (``'jane.doe@example.com' is not of type 'integer'``): the dead letters' errors keep it."""
    event_id = story(conn)
    other = insert_event(conn, "github", "gh-dead", status="dead", payload={"email": EMAIL})  # no redact: shown
    r = await admin.get("/admin/api/dead-letters")
    assert r.status_code == 200
    rows = {d["event_id"]: d for d in r.json()["dead_letters"]}
    assert rows[event_id]["error"] == "slack#1: refused [redacted]"
    assert rows[event_id]["invalid_output_error"] == "body: '[redacted]' is too long"
    assert rows[other]["error"] == "boom"
    page = await admin.get("/admin", headers={"accept": "text/html"})
    assert page.status_code == 200 and EMAIL not in page.text and "refused [redacted]" in page.text


async def test_the_event_list_masks_them_too(admin: httpx.AsyncClient, conn: psycopg.Connection) -> None:  # noqa: F811
    """``GET /admin/api/events`` carries each event's ``last_error`` and ``detail``: masked as the dead
    letters' errors are (the list returned them as stored)."""
    event_id = story(conn)
    conn.execute("UPDATE hookline.events SET detail = %s WHERE id = %s", (f"to {EMAIL}", event_id))
    other = insert_event(conn, "github", "gh-dead", status="dead", payload={"email": EMAIL})  # no redact: shown
    conn.execute("UPDATE hookline.events SET last_error = %s WHERE id = %s", (f"refused {EMAIL}", other))
    r = await admin.get("/admin/api/events")
    assert r.status_code == 200
    rows = {e["id"]: e for e in r.json()["events"]}
    assert rows[event_id]["last_error"] == "slack#1: refused [redacted]" and rows[event_id]["detail"] == "to [redacted]"
    assert rows[other]["last_error"] == f"refused {EMAIL}"


async def test_a_schedule_firings_errors_are_masked_in_the_lists(
    admin: httpx.AsyncClient,  # noqa: F811
    conn: psycopg.Connection,
) -> None:
    """A digest copies other sources' events into its examples, and an error of its pipeline can quote
    one of their redacted values: the lists mask it, as the event's own page does (the lists looked up
    the built-in ``schedule`` source among the configured ones, found none, and showed it)."""
    digest = {
        "schedule": "daily",
        "examples": [{"source": "stripe", "event_id": 1, "fields": {"data": {"object": {"customer_email": EMAIL}}}}],
    }
    firing = insert_event(conn, "schedule", "daily@2026-12-05T09:00:00Z", payload=digest, status="dead")
    error = f"subject: '{EMAIL}' is too long"
    conn.execute("UPDATE hookline.events SET last_error = %s WHERE id = %s", (error, firing))
    dead = {d["event_id"]: d for d in (await admin.get("/admin/api/dead-letters")).json()["dead_letters"]}
    assert dead[firing]["error"] == "subject: '[redacted]' is too long"
    events = {e["id"]: e for e in (await admin.get("/admin/api/events")).json()["events"]}
    assert events[firing]["last_error"] == "subject: '[redacted]' is too long"
