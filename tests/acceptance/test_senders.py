"""Every provider over HTTP: `hookline send` → ingest → accepted; handshakes answered, never stored."""

from __future__ import annotations

import asyncio
import json
import os
import sys
import time
from typing import Any

import httpx
import pytest

from app.cli.send import send
from app.core.config import Config
from app.signatures import PROVIDERS, generate_keypair, sign, sign_request
from tests.harness import ROOT, config_from, make_settings, rows, web_server

PUBLIC = "https://hooks.example.com"
HMAC_OPTIONS = {
    "header": "X-Acme-Signature",
    "algorithm": "sha512",
    "encoding": "base64",
    "prefix": "sha512=",
    "signed": "{timestamp}.{body}",
    "timestamp_header": "X-Acme-Timestamp",
}


def all_providers_config(monkeypatch: pytest.MonkeyPatch) -> Config:
    sources: dict[str, Any] = {}
    for name, spec in PROVIDERS.items():
        env = f"HL_{name.upper()}"
        private, public = generate_keypair(name) if spec.public_key else (f"secret-{name}-0123456789",) * 2
        if name == "standard_webhooks":
            private = public = "whsec_" + "c2VjcmV0LWZvci1zdGFuZGFyZC13ZWJob29rcw=="
        monkeypatch.setenv(env, public)
        source: dict[str, Any] = {"provider": name, "secrets_env": [env]}
        if spec.public_key:
            monkeypatch.setenv(env + "_PRIVATE", private)
            source["signing_key_env"] = env + "_PRIVATE"
        if name == "hmac":
            source["hmac"] = HMAC_OPTIONS
        if name == "paddle_billing":
            source["tolerance_seconds"] = 60
        sources[name] = source
    return config_from({"sources": sources})


@pytest.mark.parametrize("provider", sorted(PROVIDERS))
async def test_send_round_trip_for_every_provider(provider: str, db_url: str, monkeypatch: pytest.MonkeyPatch) -> None:
    config = all_providers_config(monkeypatch)
    settings = make_settings(db_url, public_url=PUBLIC)
    async with web_server(settings, config) as base:  # every provider, hmac too, posts its shipped sample
        sent = await asyncio.to_thread(send, config, provider, environ=os.environ, base_url=base, public_url=PUBLIC)
        again = await asyncio.to_thread(
            send,
            config,
            provider,
            environ=os.environ,
            base_url=base,
            public_url=PUBLIC,
            delivery_id=sent.delivery_id,
        )
    assert sent.status == 200, sent.body
    body = json.loads(sent.body)
    assert body["status"] == "accepted"
    assert json.loads(again.body) == {"status": "duplicate", "event_id": body["event_id"]}
    ((source, delivery_id, event_type),) = rows(db_url, "SELECT source, delivery_id, event_type FROM hookline.events")
    assert source == provider and delivery_id
    assert event_type, f"{provider}: no event type extracted from its sample"
    if provider == "hmac":  # the generic provider's own sample, read with the default locators
        assert event_type == "order.created"


async def test_send_with_a_type_posts_the_sample_of_that_type(db_url: str, monkeypatch: pytest.MonkeyPatch) -> None:
    """`hookline send github --type pull_request.opened` posted the provider's default sample (an issue)
    under the pull_request type, so the sample hookline.toml's pr-summary pipeline saw no pull_request at
    all. The type's own sample goes when one ships (`samples/github/pull_request.opened.json`), else the
    default one, as before."""
    config = all_providers_config(monkeypatch)
    settings = make_settings(db_url)
    async with web_server(settings, config) as base:
        for provider, event_type in [("github", "pull_request.opened"), ("stripe", "charge.refunded")]:
            sent = await asyncio.to_thread(
                send, config, provider, environ=os.environ, base_url=base, public_url=None, event_type=event_type
            )
            assert sent.status == 200, sent.body
    stored = rows(
        db_url,
        "SELECT source, event_type, payload ? 'pull_request', payload #>> '{data,object,object}'"
        " FROM hookline.events ORDER BY id",
    )
    assert stored == [  # no charge.refunded sample ships: the default one (an invoice), typed as asked
        ("github", "pull_request.opened", True, None),
        ("stripe", "charge.refunded", False, "invoice"),
    ]


async def test_cli_send_and_check(db_url: str, monkeypatch: pytest.MonkeyPatch, tmp_path: Any) -> None:
    config = all_providers_config(monkeypatch)
    toml = tmp_path / "hookline.toml"
    hmac_table = "".join(f'{key} = "{value}"\n' for key, value in HMAC_OPTIONS.items())
    toml.write_text(
        '[sources.github]\nprovider = "github"\nsecrets_env = ["HL_GITHUB"]\n'
        f'[sources.hmac]\nprovider = "hmac"\nsecrets_env = ["HL_HMAC"]\n[sources.hmac.hmac]\n{hmac_table}'
    )
    settings = make_settings(db_url)
    env = {**os.environ, "HOOKLINE_CONFIG": str(toml)}
    async with web_server(settings, config) as base:
        proc = await asyncio.create_subprocess_exec(
            sys.executable,
            "-m",
            "app.cli",
            "send",
            "github",
            "--type",
            "pull_request.opened",
            "--file",
            str(ROOT / "app/signatures/samples/github/pull_request.opened.json"),
            "--url",
            base,
            env=env,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE,
        )
        out, err = await proc.communicate()
        generic = await asyncio.create_subprocess_exec(  # no --file: the hmac provider's shipped sample
            sys.executable,
            "-m",
            "app.cli",
            "send",
            "hmac",
            "--url",
            base,
            env=env,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE,
        )
        generic_out, generic_err = await generic.communicate()
    assert proc.returncode == 0, err.decode()
    assert "→ 200" in out.decode() and '"accepted"' in out.decode()
    assert generic.returncode == 0, generic_err.decode()
    assert "→ 200" in generic_out.decode() and '"accepted"' in generic_out.decode()
    assert sorted(rows(db_url, "SELECT source, event_type FROM hookline.events")) == [
        ("github", "pull_request.opened"),
        ("hmac", "order.created"),
    ]

    check = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "app.cli",
        "check",
        env=env,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    out, _ = await check.communicate()
    assert check.returncode == 0 and "2 source(s)" in out.decode()
    toml.write_text('[sources.github]\nprovider = "githib"\nsecrets_env = ["HL_GITHUB"]\n')
    bad = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "app.cli",
        "check",
        env=env,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    _, err = await bad.communicate()
    assert bad.returncode == 2
    assert "sources.github.provider: unknown provider 'githib' (did you mean 'github'?)" in err.decode()


async def test_handshakes_are_answered_and_never_stored(db_url: str, monkeypatch: pytest.MonkeyPatch) -> None:
    config = all_providers_config(monkeypatch)
    monkeypatch.setenv("HL_META_VERIFY", "verify-me")
    data = config.model_dump()
    data["sources"]["meta_whatsapp"]["verify_token_env"] = "HL_META_VERIFY"
    for src in data["sources"].values():
        src.pop("name", None)
        for key in [k for k, v in src.items() if v is None]:
            src.pop(key)
    config = config_from(data)
    settings = make_settings(db_url, public_url=PUBLIC)
    env = os.environ
    async with web_server(settings, config) as base, httpx.AsyncClient() as client:

        async def post(provider: str, payload: Any, **kw: Any) -> httpx.Response:
            body = json.dumps(payload).encode()
            var = f"HL_{provider.upper()}" + ("_PRIVATE" if PROVIDERS[provider].public_key else "")
            secret = env[var]
            signed = sign_request(provider, secret=secret, body=body, url=f"{PUBLIC}/webhooks/{provider}", **kw)
            return await client.post(f"{base}/webhooks/{provider}", content=signed.body, headers=signed.headers)

        slack = await post("slack", {"token": "t", "challenge": "chal-123", "type": "url_verification"})
        assert slack.status_code == 200 and "chal-123" in slack.text

        ping = await post("discord_interactions", {"id": "1", "type": 1, "application_id": "a"})
        assert ping.status_code == 200 and ping.json() == {"type": 1}
        probe = await client.post(
            f"{base}/webhooks/discord_interactions",
            content=b'{"type":1}',
            headers={"X-Signature-Ed25519": "00" * 64, "X-Signature-Timestamp": str(int(time.time()))},
        )
        assert probe.status_code == 401

        zoom = await post(
            "zoom",
            {
                "event": "endpoint.url_validation",
                "payload": {"plainToken": "plain-1"},
                "event_ts": int(time.time() * 1000),
            },
        )
        assert zoom.status_code == 200 and zoom.json()["plainToken"] == "plain-1" and zoom.json()["encryptedToken"]

        twitch_body = json.dumps({"challenge": "twitch-chal", "subscription": {"type": "channel.follow"}}).encode()
        headers = sign(
            "twitch_eventsub",
            secret=env["HL_TWITCH_EVENTSUB"],
            body=twitch_body,
            delivery_id="m1",
            event_type="channel.follow",
        ) | {"Twitch-Eventsub-Message-Type": "webhook_callback_verification"}
        twitch = await client.post(f"{base}/webhooks/twitch_eventsub", content=twitch_body, headers=headers)
        assert twitch.status_code == 200 and twitch.text == "twitch-chal"

        meta = await client.get(
            f"{base}/webhooks/meta_whatsapp",
            params={"hub.mode": "subscribe", "hub.verify_token": "verify-me", "hub.challenge": "42"},
        )
        assert meta.status_code == 200 and meta.text == "42"
        meta_bad = await client.get(
            f"{base}/webhooks/meta_whatsapp",
            params={"hub.mode": "subscribe", "hub.verify_token": "nope", "hub.challenge": "42"},
        )
        assert meta_bad.status_code == 403 and meta_bad.json()["error"] == "forbidden"
        not_meta = await client.get(f"{base}/webhooks/slack")
        assert not_meta.status_code == 405

        metrics = (await client.get(f"{base}/metrics")).text
    assert rows(db_url, "SELECT count(*) FROM hookline.events") == [(0,)]
    assert 'hookline_handshakes_total{source="slack"} 1.0' in metrics
    # public /metrics (no HOOKLINE_METRICS_TOKEN): failures are counted, the reason is not shown
    assert 'hookline_signature_failures_total{provider="discord_interactions"' in metrics and 'reason="' not in metrics


async def test_delivery_id_tenant_occurred_at_and_overrides(db_url: str, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HL_HMAC", "generic-secret")
    monkeypatch.setenv("HL_STRIPE", "whsec_meta_test")
    hmac_source = {"provider": "hmac", "secrets_env": ["HL_HMAC"], "hmac": {"header": "X-Sig"}}
    config = config_from(
        {
            "sources": {
                "strict": hmac_source,
                "hashed": {**hmac_source, "content_hash_ids": True},
                "custom": {
                    **hmac_source,
                    "delivery_id": "header:X-Request-Id",
                    "event_type": ["json:kind", "json:type"],
                    "tenant": "json:org.id",
                    "occurred_at": "json:at",
                },
                "stripe": {"provider": "stripe", "secrets_env": ["HL_STRIPE"]},
            }
        }
    )
    settings = make_settings(db_url)
    no_id = json.dumps({"type": "ping"}).encode()
    async with web_server(settings, config) as base, httpx.AsyncClient() as client:

        def h(body: bytes, **extra: str) -> dict[str, str]:
            return {**sign("hmac", secret="generic-secret", body=body, options={"header": "X-Sig"}), **extra}

        refused = await client.post(f"{base}/webhooks/strict", content=no_id, headers=h(no_id))
        hashed = await client.post(f"{base}/webhooks/hashed", content=no_id, headers=h(no_id))
        hashed_again = await client.post(f"{base}/webhooks/hashed", content=no_id, headers=h(no_id))
        custom_body = json.dumps({"kind": "order.paid", "org": {"id": 77}, "at": "2026-11-20T10:00:00Z"}).encode()
        custom = await client.post(
            f"{base}/webhooks/custom", content=custom_body, headers=h(custom_body, **{"X-Request-Id": "req-1"})
        )
        stripe_body = json.dumps(
            {
                "id": "evt_connect",
                "type": "charge.failed",
                "created": 1795000000,
                "account": "acct_123",
                "data": {"object": {}},
            }
        ).encode()
        stripe = await client.post(
            f"{base}/webhooks/stripe",
            content=stripe_body,
            headers=sign("stripe", secret="whsec_meta_test", body=stripe_body),
        )
    assert refused.status_code == 400 and "no delivery id" in refused.json()["detail"]
    assert hashed.json()["status"] == "accepted"
    assert hashed_again.json() == {"status": "duplicate", "event_id": hashed.json()["event_id"]}
    assert custom.status_code == 200 and stripe.status_code == 200
    stored = {
        r[0]: r[1:]
        for r in rows(
            db_url,
            "SELECT source, delivery_id, event_type, tenant, "
            "to_char(occurred_at AT TIME ZONE 'UTC', 'YYYY-MM-DD HH24:MI') "
            "FROM hookline.events",
        )
    }
    assert stored["hashed"][0].startswith("sha256:") and "strict" not in stored
    assert stored["custom"] == ("req-1", "order.paid", "77", "2026-11-20 10:00")
    assert stored["stripe"][:3] == ("evt_connect", "charge.failed", "acct_123")
    assert stored["stripe"][3] is not None
