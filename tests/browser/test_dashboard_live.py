"""The dashboard's live stream across its ends: a reconnect catches up on what changed while no stream
listened, a session ended elsewhere says so (not "reconnecting…" for good), and a dead letter that
arrives live shows its error, masked as the overview masks it.

Streams last 1 s here (``MAX_STREAM_SECONDS``) where a test needs them to end; a gate in front of
``/admin/stream`` holds the browser's reconnect, so the changes made meanwhile reach no stream.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Any

import psycopg
import pytest

from app.web.admin import dashboard, stream
from app.web.state import AppState
from tests.acceptance.test_admin_api import TOKEN, insert_event
from tests.acceptance.test_admin_dashboard import start
from tests.browser.test_dashboard import log_in, text_of, wait_for

EMAIL = "ann.secret@example.com"  # under stripe's redact paths in admin_config()


class Gate:
    """Lets new dashboard streams begin while open; while closed it holds them (``held`` says one is)."""

    def __init__(self) -> None:
        self.open = asyncio.Event()
        self.open.set()
        self.held = asyncio.Event()
        self.state: AppState | None = None

    async def updates(self, state: AppState) -> AsyncIterator[bytes]:
        self.state = state
        if not self.open.is_set():
            self.held.set()
        await self.open.wait()
        async for chunk in stream.updates(state):
            yield chunk


@pytest.fixture
def gate(monkeypatch: pytest.MonkeyPatch) -> Gate:
    gate = Gate()
    monkeypatch.setattr(dashboard, "updates", gate.updates)
    monkeypatch.setattr(stream, "MAX_STREAM_SECONDS", 1.0)  # the browser comes back 2 s after each end
    return gate


def severe(driver: Any) -> list[dict[str, Any]]:
    return [e for e in driver.get_log("browser") if e["level"] == "SEVERE"]


async def test_a_reconnect_re_reads_what_changed_while_no_stream_listened(
    chrome: Any, db_url: str, conn: psycopg.Connection, monkeypatch: pytest.MonkeyPatch, gate: Gate
) -> None:
    """A stream ends (after 300 s, or a deploy); changes made before the browser's next one listens
    reached no stream. Once it says hello, the overview re-reads its lists and counts (no reload)."""
    from selenium.webdriver.common.by import By

    replayed = insert_event(conn, "stripe", "gap-0", status="dead")
    dead_count = '#counts .n[data-status="dead"]'
    async with await start(db_url, monkeypatch) as base:
        await asyncio.to_thread(log_in, chrome, base, TOKEN)
        gate.open.clear()
        async with asyncio.timeout(30):  # a guard, not a measure: the stream ends after 1 s
            await gate.held.wait()  # the page's stream ended and its next one waits: nothing listens
        assert gate.state is not None
        async with gate.state.listener.subscribe() as notices:  # the test's own, to know they went by
            conn.execute("SELECT hookline.replay(%s::bigint)", (replayed,))  # no worker: it stays queued
            new = insert_event(conn, "stripe", "gap-1", status="dead")
            async with asyncio.timeout(30):  # a guard: the web process has had both notices, for no stream
                while (n := await notices.get()).op != "insert" or n.data.get("max_id") != new:
                    pass
        gate.open.set()

        def catches_up(d: Any) -> list[dict[str, Any]]:
            row = f'#events tr[data-id="{replayed}"] .status'
            wait_for(d, "the replayed event queued", lambda d: text_of(d, row) == "queued")
            wait_for(d, "the new dead letter", lambda d: d.find_elements(By.CSS_SELECTOR, f'#dead tr[data-id="{new}"]'))
            assert text_of(d, f'#events tr[data-id="{new}"] .status') == "dead"
            assert not d.find_elements(By.CSS_SELECTOR, f'#dead tr[data-id="{replayed}"]')
            assert text_of(d, dead_count) == "1"
            assert text_of(d, f'#dead tr[data-id="{new}"] .error-text') == "boom"
            assert d.execute_script("return window.__notReloaded === true;"), "the page was reloaded"
            return severe(d)

        errors = await asyncio.to_thread(catches_up, chrome)
        chrome.quit()  # close the live stream before the server stops
    assert errors == []


async def test_a_session_ended_elsewhere_says_so_and_links_the_login(
    chrome: Any, db_url: str, monkeypatch: pytest.MonkeyPatch, gate: Gate
) -> None:
    """Signed out in another tab: the next stream is a 401 and the browser stops trying. The page says
    the session ended and links the login page, instead of "reconnecting…" for good."""
    from selenium.webdriver.common.by import By

    async with await start(db_url, monkeypatch) as base:
        await asyncio.to_thread(log_in, chrome, base, TOKEN)

        def signs_out_elsewhere(d: Any) -> str:
            first = d.current_window_handle
            d.switch_to.new_window("tab")
            d.get(f"{base}/admin")
            d.find_element(By.CSS_SELECTOR, "form.logout button").click()
            wait_for(d, "the login page", lambda d: d.current_url.endswith("/admin/login"))
            d.close()
            d.switch_to.window(first)
            wait_for(d, "the session ended", lambda d: text_of(d, "#live").startswith("session ended"))
            return str(d.find_element(By.CSS_SELECTOR, "#live a").get_attribute("href"))

        link = await asyncio.to_thread(signs_out_elsewhere, chrome)
        chrome.quit()
    assert link == f"{base}/admin/login"


async def test_a_dead_letter_arriving_live_shows_its_masked_error(
    chrome: Any, db_url: str, conn: psycopg.Connection, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The live message carries no error: the row's error cell is read from the overview itself, where
    the source's redact paths mask it. It was empty until the next reload."""
    async with await start(db_url, monkeypatch) as base:
        await asyncio.to_thread(log_in, chrome, base, TOKEN)
        payload = {"data": {"object": {"customer_email": EMAIL}}}
        event = insert_event(conn, "stripe", "live-dead", status="processing", payload=payload)
        conn.execute(
            "UPDATE hookline.events SET status = 'dead', finished_at = now(), last_error = %s WHERE id = %s",
            (f"mail to {EMAIL} bounced", event),
        )

        def shows_it(d: Any) -> tuple[str, list[dict[str, Any]]]:
            cell = f'#dead tr[data-id="{event}"] .error-text'
            wait_for(d, "the masked error", lambda d: text_of(d, cell) == "mail to [redacted] bounced")
            assert d.execute_script("return window.__notReloaded === true;"), "the page was reloaded"
            return str(d.page_source), severe(d)

        source, errors = await asyncio.to_thread(shows_it, chrome)
        chrome.quit()
    assert EMAIL not in source and errors == []
