"""`hookline events show` and `hookline tail` mask a source's ``redact`` values where the event's story
repeats them (an error, a model answer, an action's result), as the admin API does
(tests/acceptance/test_admin_redaction.py writes the same story)."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path

import psycopg
import pytest

from app.cli.main import main
from app.cli.tail import follow
from tests.acceptance.test_admin_api import admin_config
from tests.acceptance.test_admin_redaction import CARD, EMAIL, story

TOML = """
[sources.stripe]
provider = "stripe"
secrets_env = ["HL_STRIPE_SECRET"]
redact = ["data.object.customer_email", "data.items.card"]
"""


@pytest.mark.parametrize("as_json", [False, True])
def test_events_show_masks_what_the_story_repeats(
    db_url: str,
    conn: psycopg.Connection,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
    as_json: bool,
) -> None:
    event_id = story(conn)
    (tmp_path / "hookline.toml").write_text(TOML, encoding="utf-8")
    monkeypatch.setenv("HOOKLINE_CONFIG", str(tmp_path / "hookline.toml"))
    monkeypatch.setenv("DATABASE_URL", db_url)
    capsys.readouterr()
    assert main(["events", "show", str(event_id), *(["--json"] if as_json else [])]) == 0
    out = capsys.readouterr().out
    assert EMAIL not in out and CARD not in out, out
    if as_json:
        shown = json.loads(out)
        assert shown["event"]["last_error"] == "slack#1: refused [redacted]"
        assert shown["calls"][0]["output"]["body"] == "Dear [redacted], card [redacted] was declined."
        assert shown["actions"][0]["result"]["to"] == ["[redacted]"]
    else:
        assert "last error: slack#1: refused [redacted]" in out, out


async def test_tail_masks_what_a_finished_story_repeats(db_url: str, conn: psycopg.Connection) -> None:
    lines: list[str] = []
    json_lines: list[str] = []
    stop = asyncio.Event()
    config = admin_config()
    tails = [
        asyncio.create_task(follow(db_url, lines.append, config=config, stop=stop)),
        asyncio.create_task(follow(db_url, json_lines.append, config=config, stop=stop, as_json=True)),
    ]
    await asyncio.sleep(1.0)  # LISTEN is up
    event_id = story(conn)
    conn.execute("UPDATE hookline.events SET status = 'processing' WHERE id = %s", (event_id,))
    conn.execute("UPDATE hookline.events SET status = 'dead' WHERE id = %s", (event_id,))
    for _ in range(200):
        if any("→ dead" in line for line in lines) and any('"event": {' in line for line in json_lines):
            break
        await asyncio.sleep(0.05)
    stop.set()
    await asyncio.gather(*tails)
    dead = [line for line in lines if "→ dead" in line]
    assert dead and dead[0].endswith("→ dead (slack#1: refused [redacted])"), lines
    docs = [json.loads(line) for line in json_lines if '"event": {' in line]
    assert docs, json_lines
    assert docs[0]["calls"][0]["output"]["body"] == "Dear [redacted], card [redacted] was declined."
    assert docs[0]["actions"][0]["result"]["to"] == ["[redacted]"]
    assert not any(EMAIL in line or CARD in line for line in lines + json_lines)
