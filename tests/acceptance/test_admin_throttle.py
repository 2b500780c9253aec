"""Wrong tokens are throttled per client address: the admin API's and the dashboard's bearer, the login
form, and /metrics with HOOKLINE_METRICS_TOKEN. Ten wrong ones, then 429 with Retry-After for any token
from that address (right ones too); other addresses, and the right token before the limit, go on as
before. Addresses come from X-Forwarded-For, believed from 127.0.0.1 (HOOKLINE_TRUSTED_PROXIES)."""

from __future__ import annotations

import httpx
import pytest

from app.web.throttle import LIMIT, WINDOW_SECONDS
from tests.acceptance.test_admin_api import TOKEN, admin_config
from tests.acceptance.test_admin_dashboard import login, start
from tests.harness import make_settings, web_server

ATTACKER = {"x-forwarded-for": "198.51.100.7"}
OTHER = {"x-forwarded-for": "203.0.113.9"}


def bearer(token: str, **more: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}", **more}


def assert_throttled(r: httpx.Response) -> None:
    assert r.status_code == 429, r.text
    assert 1 <= int(r.headers["retry-after"]) <= WINDOW_SECONDS
    assert "too many failed token attempts" in r.text.lower() and TOKEN not in r.text


async def test_wrong_admin_bearers_from_one_address_are_throttled(db_url: str, monkeypatch: pytest.MonkeyPatch) -> None:
    server = await start(db_url, monkeypatch, trusted_proxies="127.0.0.1")
    async with server as base, httpx.AsyncClient(base_url=base) as client:
        for _ in range(3 * LIMIT):  # the right token is never counted, never slowed
            assert (await client.get("/admin/api/stats", headers=bearer(TOKEN, **ATTACKER))).status_code == 200
        session = await login(client, **ATTACKER)  # a browser session from the same address, made early
        assert session.status_code == 303
        client.cookies.clear()
        for i in range(LIMIT):
            wrong = await client.get("/admin/api/events", headers=bearer(f"guess-{i}", **ATTACKER))
            assert wrong.status_code == 401, (i, wrong.text)  # the answer to a wrong token is unchanged
            assert wrong.json() == {"error": "unauthorized", "detail": "the admin token is not valid"}
        over = await client.get("/admin/api/events", headers=bearer("guess-x", **ATTACKER))
        assert_throttled(over)
        assert over.json()["error"] == "rate_limited"
        assert_throttled(await client.get("/admin/api/events", headers=bearer(TOKEN, **ATTACKER)))
        # the dashboard's bearer is the same door
        assert_throttled(await client.get("/admin", headers=bearer(TOKEN, **ATTACKER)))
        # no token presented is no attempt: the same 401 as ever
        bare = await client.get("/admin/api/events", headers=ATTACKER)
        assert bare.status_code == 401 and "send Authorization" in bare.json()["detail"]
        # another address is not held back
        assert (await client.get("/admin/api/events", headers=bearer(TOKEN, **OTHER))).status_code == 200
        # the session cookie signed in before is no guess: it still works from the throttled address
        cookie = {"cookie": f"hookline_session={session.cookies['hookline_session']}"}
        assert (await client.get("/admin", headers={**ATTACKER, **cookie})).status_code == 200
        # the machine itself (the TCP peer 127.0.0.1, no forwarded hop) is never counted
        for i in range(LIMIT + 2):
            assert (await client.get("/admin/api/events", headers=bearer(f"local-{i}"))).status_code == 401
        assert (await client.get("/admin/api/events", headers=bearer(TOKEN))).status_code == 200


async def test_wrong_tokens_on_the_login_form_are_throttled(db_url: str, monkeypatch: pytest.MonkeyPatch) -> None:
    server = await start(db_url, monkeypatch, trusted_proxies="127.0.0.1")
    async with server as base, httpx.AsyncClient(base_url=base) as client:
        for i in range(LIMIT):
            wrong = await login(client, f"guess-{i}", **ATTACKER)
            assert wrong.status_code == 401 and "That is not the admin token." in wrong.text, i
        right = await login(client, TOKEN, **ATTACKER)
        assert_throttled(right)
        assert right.headers["content-type"].startswith("text/html") and "hookline_session" not in str(
            right.headers.get_list("set-cookie")
        )
        assert (await login(client, TOKEN, **OTHER)).status_code == 303


async def test_wrong_metrics_tokens_are_throttled(db_url: str) -> None:
    settings = make_settings(db_url, metrics_token="metrics-token-0123456789", trusted_proxies="127.0.0.1")
    async with web_server(settings, admin_config()) as base, httpx.AsyncClient(base_url=base) as client:
        for i in range(LIMIT):
            wrong = await client.get("/metrics", headers=bearer(f"guess-{i}", **ATTACKER))
            assert wrong.status_code == 401 and wrong.json()["error"] == "unauthorized", i
        over = await client.get("/metrics", headers=bearer("metrics-token-0123456789", **ATTACKER))
        assert over.status_code == 429 and "too many failed token attempts" in over.json()["detail"]
        assert 1 <= int(over.headers["retry-after"]) <= WINDOW_SECONDS
        assert (await client.get("/metrics", headers=bearer("metrics-token-0123456789", **OTHER))).status_code == 200
