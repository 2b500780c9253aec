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
import pytest

from app.signatures import sign
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


def log_in(driver: Any, base: str) -> None:
    from selenium.webdriver.common.by import By

    driver.get(f"{base}/admin")
    wait_for(driver, "the login form", lambda d: d.current_url.endswith("/admin/login"))
    driver.find_element(By.ID, "token").send_keys(TOKEN)
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
