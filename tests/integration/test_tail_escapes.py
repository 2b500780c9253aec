"""A sender's text never drives the operator's terminal: `hookline tail`, `hookline events show` and
`hookline status` print control characters and bidi overrides from a signed event as escapes."""

from __future__ import annotations

import asyncio
import json
import uuid
from typing import Any

import httpx
import psycopg
import pytest

from app.cli import observe
from app.cli.tail import follow
from app.signatures import sign_request
from tests.harness import config_from, make_settings, web_server

SECRET = "whsec_" + "aG9zdGlsZS1pbnB1dC10ZXN0LXNlY3JldC0xMjM0NQ=="
#: erases the line, forges a calm one, and writes the clipboard (OSC 52); then reverses the rest (RLO)
EVIL = "x\x1b[2K\revent 1 sw/invoice.paid \u2192 succeeded\x1b]52;c;cm0gLXJmIH4=\x07\u202etxt.exe"
RAW = ("\x1b", "\r", "\x07", "\u202e", "\x9b")


def _clean(text: str) -> bool:
    return not any(c in text for c in RAW)


async def test_sender_text_is_escaped_in_tail_events_show_and_status(
    db_url: str, conn: psycopg.Connection, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("HL_SW_SECRET", SECRET)
    source = {"provider": "standard_webhooks", "secrets_env": ["HL_SW_SECRET"], "tenant": "json:tenant"}
    config = config_from({"sources": {"sw": source}})
    lines: list[str] = []
    json_lines: list[str] = []
    stop = asyncio.Event()
    async with web_server(make_settings(db_url), config) as base, httpx.AsyncClient() as client:
        tail = asyncio.create_task(follow(db_url, lines.append, config=config, stop=stop))
        tail_json = asyncio.create_task(follow(db_url, json_lines.append, config=config, stop=stop, as_json=True))
        await asyncio.sleep(1.0)  # LISTEN is up
        body = json.dumps({"type": EVIL, "tenant": "t\x1b[8m\x9b"}).encode()
        req = sign_request("standard_webhooks", secret=SECRET, body=body, delivery_id="msg_" + uuid.uuid4().hex)
        r = await client.post(f"{base}/webhooks/sw", content=req.body, headers=dict(req.headers))
        assert r.status_code == 200, r.text
        event_id = r.json()["event_id"]
        conn.execute(  # as the worker records an action that failed on this payload
            "UPDATE hookline.events SET status = 'dead', finished_at = now(), last_error = %s WHERE id = %s",
            ("http 500: " + EVIL, event_id),
        )
        for _ in range(100):
            if len(lines) >= 2 and len(json_lines) >= 2:
                break
            await asyncio.sleep(0.05)
        stop.set()
        await asyncio.gather(tail, tail_json)
    assert len(lines) == 2, lines
    assert all(_clean(line) for line in lines), lines
    received, dead = sorted(lines, key=lambda line: not line.endswith("→ received"))  # notices may cross
    assert received.startswith(f"event {event_id} sw/x\\x1b[2K\\revent 1 sw/invoice.paid"), received
    assert "\\u202etxt.exe (tenant t\\x1b[8m\\x9b) → received" in received, received
    assert dead.endswith(
        "→ dead (http 500: x\\x1b[2K\\revent 1 sw/invoice.paid → succeeded\\x1b]52;c;cm0gLXJmIH4=\\x07\\u202etxt.exe)"
    )
    # --json stays JSON: the escapes are JSON's, and the values read back as they were
    assert all(_clean(line) for line in json_lines), json_lines
    docs: list[dict[str, Any]] = [json.loads(line) for line in json_lines]
    assert {d.get("event_type") or d["event"]["event_type"] for d in docs} == {EVIL}
    assert [d["event"]["last_error"] for d in docs if "event" in d] == ["http 500: " + EVIL]

    capsys.readouterr()
    await asyncio.to_thread(observe.show_event, db_url, event_id, config=config, as_json=False)
    shown = capsys.readouterr().out
    assert _clean(shown), shown
    assert "x\\x1b[2K\\revent 1" in shown and "tenant t\\x1b[8m\\x9b" in shown, shown
    assert "last error: http 500: x\\x1b[2K\\r" in shown, shown

    conn.execute(
        "INSERT INTO hookline.llm_calls (event_id, pipeline, model, status, request, input_tokens, output_tokens, "
        "cost_usd) VALUES (%s, 'p', 'claude-haiku-5-5', 'succeeded', '{}', 10, 2, 0.000002)",
        (event_id,),
    )
    await asyncio.to_thread(observe.status, db_url, as_json=False)
    status = capsys.readouterr().out
    assert _clean(status) and "t\\x1b[8m\\x9b" in status, status
