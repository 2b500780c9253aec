"""The dashboard in a real browser: headless Chromium logs in, watches a signed webhook appear and die
live (no reload), replays the dead letter and watches it succeed, opens the event's timeline, and
leaves screenshots under ``.hookline/artifacts/``.

Everything is real: uvicorn serving hookline, the procrastinate worker, the anthropic SDK against the
fake Messages API, Postgres LISTEN/NOTIFY behind the server-sent events, a receiver for the action.
"""

from __future__ import annotations

import asyncio
import json
import time
from typing import Any

import httpx
import psycopg
import pytest

from app.signatures import sign
from tests.acceptance.test_admin_api import TOKEN as ADMIN_TOKEN
from tests.acceptance.test_admin_api import insert_event
from tests.acceptance.test_admin_dashboard import start
from tests.browser.conftest import ARTIFACTS
from tests.fakes.messages_api import FakeMessagesAPI, error, reply
from tests.harness import Receiver, config_from, make_settings, rows, web_server, worker_task

TOKEN = "browser-test-admin-token-42"
SECRET = "whsec_browser_test"
GOOD = {"subject": "Sorry about that", "body": "Your card was declined."}
WAIT = 20.0


@pytest.fixture(autouse=True)
def env(monkeypatch: pytest.MonkeyPatch, receiver: Receiver) -> None:
    monkeypatch.setenv("HL_STRIPE_SECRET", SECRET)
    monkeypatch.setenv("HL_CRM_URL", receiver.url)


def config() -> Any:
    return config_from(
        {
            "sources": {"stripe": {"provider": "stripe", "secrets_env": ["HL_STRIPE_SECRET"]}},
            "pipelines": {
                "recovery": {
                    "source": "stripe",
                    "events": ["invoice.payment_failed"],
                    "fields": ["type", "data.object.customer"],
                    "instructions": "Write to the customer.",
                    "output_schema": {
                        "type": "object",
                        "properties": {"subject": {"type": "string"}, "body": {"type": "string"}},
                        "required": ["subject", "body"],
                    },
                    "retry": {"max_attempts": 2, "backoff_seconds": 0.05, "jitter": False},
                    "actions": [{"type": "http", "url_env": "HL_CRM_URL"}],
                }
            },
        }
    )


def wait_for(driver: Any, what: str, check: Any, timeout: float = WAIT) -> Any:
    """Poll the page (the browser's state, not the server) until ``check(driver)`` is truthy."""
    deadline = time.monotonic() + timeout
    last: Exception | None = None
    while time.monotonic() < deadline:
        try:
            value = check(driver)
            if value:
                return value
        except Exception as e:  # the element is being replaced by the page's script: look again
            last = e
        time.sleep(0.1)
    driver.save_screenshot(str(ARTIFACTS / "dashboard-failure.png"))
    raise AssertionError(f"the page never showed {what} (last error: {last!r}); see dashboard-failure.png")


def text_of(driver: Any, css: str) -> str:
    from selenium.webdriver.common.by import By

    return str(driver.find_element(By.CSS_SELECTOR, css).text).strip()


def log_in(driver: Any, base: str, token: str = TOKEN) -> None:
    from selenium.webdriver.common.by import By

    driver.get(f"{base}/admin")
    wait_for(driver, "the login form", lambda d: d.current_url.endswith("/admin/login"))
    driver.find_element(By.ID, "token").send_keys(token)
    driver.find_element(By.ID, "sign-in").click()
    wait_for(driver, "the overview", lambda d: d.find_elements(By.ID, "events"))
    wait_for(driver, "the live stream connected", lambda d: text_of(d, "#live") == "live")
    driver.execute_script("window.__notReloaded = true;")


async def deliver(base: str) -> int:
    body = json.dumps(
        {"id": "evt_browser_1", "type": "invoice.payment_failed", "data": {"object": {"customer": "cus_1"}}}
    ).encode()
    headers = {**sign("stripe", secret=SECRET, body=body), "content-type": "application/json"}
    async with httpx.AsyncClient() as client:
        r = await client.post(f"{base}/webhooks/stripe", content=body, headers=headers)
    assert r.status_code == 200, r.text
    return int(r.json()["event_id"])


async def test_the_dashboard_live_in_a_browser(
    chrome: Any, db_url: str, fake: FakeMessagesAPI, receiver: Receiver
) -> None:
    from selenium.webdriver.common.by import By

    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    settings = make_settings(db_url, admin_token=TOKEN, anthropic_api_key="sk-test", anthropic_base_url=fake.base_url)
    fake.enqueue(error(400, "invalid_request_error", "max_tokens: too large"))  # permanent: straight to dead
    async with web_server(settings, config()) as base, worker_task(settings, config()):
        await asyncio.to_thread(log_in, chrome, base)

        event_id = await deliver(base)
        row = f'#events tr[data-id="{event_id}"]'
        dead_row = f'#dead tr[data-id="{event_id}"]'

        def sees_it_die(d: Any) -> None:
            wait_for(d, "the new event's row", lambda d: d.find_elements(By.CSS_SELECTOR, row))
            wait_for(d, "the event dead", lambda d: text_of(d, f"{row} .status") == "dead")
            wait_for(d, "the dead letter", lambda d: text_of(d, f"{dead_row} .status") == "dead")
            assert d.execute_script("return window.__notReloaded === true;"), "the page was reloaded"

        await asyncio.to_thread(sees_it_die, chrome)

        fake.set_default(reply(GOOD))

        def replays_it(d: Any) -> None:
            d.find_element(By.CSS_SELECTOR, f"{dead_row} button.replay").click()
            wait_for(d, "the replay succeeded", lambda d: text_of(d, f"{dead_row} .status") == "succeeded")
            wait_for(d, "the event row succeeded", lambda d: text_of(d, f"{row} .status") == "succeeded")
            counts = '#counts .n[data-status="{}"]'.format
            wait_for(d, "the counts", lambda d: [text_of(d, counts(s)) for s in ("succeeded", "dead")] == ["1", "0"])
            assert d.execute_script("return window.__notReloaded === true;"), "the page was reloaded"
            d.save_screenshot(str(ARTIFACTS / "dashboard-overview.png"))

        await asyncio.to_thread(replays_it, chrome)

        def opens_the_timeline(d: Any) -> list[str]:
            d.find_element(By.CSS_SELECTOR, f"{row} a").click()
            wait_for(d, "the event page", lambda d: text_of(d, "#status") == "succeeded")
            steps = [str(e.get_attribute("data-step")) for e in d.find_elements(By.CSS_SELECTOR, "#timeline tr.step")]
            d.save_screenshot(str(ARTIFACTS / "dashboard-event.png"))
            return steps

        steps = await asyncio.to_thread(opens_the_timeline, chrome)
        chrome.quit()  # close the live stream before the server stops

    assert steps[0] == "received" and steps[-1] == "finished"
    assert steps.count("model_call") == 2 and "action" in steps  # the failed call, then the replay's
    assert rows(db_url, "SELECT status, replays FROM hookline.events WHERE id = %s", event_id) == [("succeeded", 1)]
    assert len(receiver.received) == 1 and receiver.received[0].json()["output"] == GOOD
    assert (ARTIFACTS / "dashboard-overview.png").stat().st_size > 10_000
    assert (ARTIFACTS / "dashboard-event.png").stat().st_size > 10_000


async def test_dismiss_and_a_change_made_elsewhere_show_without_a_reload(
    chrome: Any, db_url: str, conn: psycopg.Connection, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The overview's Dismiss button takes the row out and the dead tile down, and the line under the list
    counts it (they stayed as they were until some other event changed status). A replay made elsewhere
    (psql here) updates the event page's summary too: the dismissal it cleared, the replays, the buttons
    (only the timeline, model calls and actions were re-read). No console errors on the way."""
    from selenium.webdriver.common.by import By

    dead = [insert_event(conn, "stripe", f"dismiss-{i}", status="dead") for i in range(2)]
    counts = '#counts .n[data-status="dead"]'
    async with await start(db_url, monkeypatch) as base:
        await asyncio.to_thread(log_in, chrome, base, ADMIN_TOKEN)

        def dismisses(d: Any) -> None:
            assert text_of(d, counts) == "2" and not d.find_element(By.ID, "dismissed-note").is_displayed()
            d.find_element(By.CSS_SELECTOR, f'#dead tr[data-id="{dead[0]}"] button.dismiss').click()
            wait_for(
                d, "the row gone", lambda d: not d.find_elements(By.CSS_SELECTOR, f'#dead tr[data-id="{dead[0]}"]')
            )
            wait_for(d, "the dead tile down", lambda d: text_of(d, counts) == "1")
            wait_for(d, "the dismissed line", lambda d: text_of(d, "#dismissed-note").startswith("1 dismissed"))
            wait_for(d, "the link's count down", lambda d: text_of(d, "#dead-more") == "All 1 dead letters")
            assert d.execute_script("return window.__notReloaded === true;"), "the page was reloaded"
            # the list of every dead letter: the same buttons, the same script
            d.find_element(By.CSS_SELECTOR, "#dead-more a").click()
            wait_for(d, "the dead letters page", lambda d: text_of(d, "#dead-count").startswith("1 dead letter"))
            d.find_element(By.CSS_SELECTOR, f'#dead tr[data-id="{dead[1]}"] button.dismiss').click()
            wait_for(d, "its row gone", lambda d: not d.find_elements(By.CSS_SELECTOR, "#dead tr[data-id]"))
            wait_for(d, "the count down", lambda d: text_of(d, "#dead-count").startswith("0 dead letter"))
            assert d.find_element(By.ID, "dead-empty").is_displayed()
            d.get(f"{base}/admin/events/{dead[0]}")
            wait_for(d, "the live stream connected", lambda d: text_of(d, "#live") == "live")
            assert "by dashboard" in text_of(d, "#dismissed")

        await asyncio.to_thread(dismisses, chrome)
        conn.execute("SELECT hookline.replay(%s::bigint)", (dead[0],))  # no worker: it stays queued

        def follows(d: Any) -> list[dict[str, Any]]:
            wait_for(d, "the replay", lambda d: text_of(d, "#status") == "queued")
            wait_for(d, "the dismissal cleared", lambda d: not d.find_elements(By.ID, "dismissed"))
            wait_for(d, "the replays counted", lambda d: "(replays: 1)" in text_of(d, "#summary dl"))
            assert d.find_element(By.CSS_SELECTOR, "#summary button.replay").get_attribute("disabled")
            assert not d.find_elements(By.CSS_SELECTOR, "form.dismiss")
            d.save_screenshot(str(ARTIFACTS / "dashboard-dismissed.png"))
            return [e for e in d.get_log("browser") if e["level"] == "SEVERE"]

        errors = await asyncio.to_thread(follows, chrome)
        chrome.quit()  # close the live stream before the server stops
    assert errors == []
