"""extract_meta against the real published payloads, overrides and locators."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from typing import Any

import pytest

from app.signatures import PROVIDERS, EventMeta, MetaError, extract_meta, parse_locator, parse_timestamp
from app.signatures.meta import parse_overrides
from tests.datafiles import PAYLOADS, SAMPLES


def load(rel: str) -> Any:
    return json.loads((PAYLOADS / rel).read_bytes())


def sample(rel: str) -> Any:
    return json.loads((SAMPLES / rel).read_bytes())


def test_github_delivery_header_and_combined_event_type() -> None:
    headers = {"X-GitHub-Delivery": "72d3162e-cc78-11e3-81ab-4c9367dc0958", "X-GitHub-Event": "issues"}
    meta = extract_meta("github", headers=headers, payload=load("github/issues.opened.json"))
    assert meta.delivery_id == "72d3162e-cc78-11e3-81ab-4c9367dc0958"
    assert meta.event_type == "issues.opened"
    assert meta.tenant == "Codertocat"  # repository owner: no installation / organization in this example
    assert meta.occurred_at is None
    push = extract_meta("github", headers={"x-github-event": "push"}, payload=load("github/push.json"))
    assert push.event_type == "push"  # no action → the header alone
    assert push.delivery_id is None


def test_stripe_id_type_created_and_connect_account() -> None:
    meta = extract_meta("stripe", headers={}, payload=load("stripe/customer.created.json"))
    assert meta == EventMeta(
        delivery_id="evt_123",
        event_type="customer.created",
        occurred_at=datetime(2018, 8, 2, 10, 10, 20, tzinfo=UTC),
        tenant="acct_123",
    )
    failed = extract_meta("stripe", headers={}, payload=load("stripe/invoice.payment_failed.json"))
    assert (failed.delivery_id, failed.event_type, failed.tenant) == (
        "evt_00000000000000",
        "invoice.payment_failed",
        None,
    )
    assert failed.occurred_at == datetime.fromtimestamp(1326853478, UTC)


def test_slack_envelope() -> None:
    meta = extract_meta("slack", headers={}, payload=load("slack/event_callback.message.json"))
    assert (meta.delivery_id, meta.event_type, meta.tenant) == ("EvV1KA7U3A", "message", "T123")
    assert meta.occurred_at == datetime.fromtimestamp(1583636399, UTC)
    legacy = extract_meta("slack", headers={}, payload=load("slack/event_callback.reaction_added.json"))
    assert (legacy.delivery_id, legacy.event_type, legacy.tenant) == (None, "reaction_added", "T0JFD6M53")
    challenge = extract_meta("slack", headers={}, payload=load("slack/url_verification.json"))
    assert challenge.event_type == "url_verification"


def test_slack_event_type_rule_only_for_event_callback() -> None:
    payload = {"type": "block_actions", "event": {"type": "not-this"}, "team": {"id": "T9"}}
    meta = extract_meta("slack", headers={}, payload=payload)
    assert (meta.event_type, meta.tenant) == ("block_actions", "T9")


def test_paddle_notification() -> None:
    meta = extract_meta("paddle_billing", headers={}, payload=load("paddle/customer.created.json"))
    assert meta.delivery_id == "evt_01hs0tqfme2xwb2hvwv87p8y3w"
    assert meta.event_type == "customer.created"
    assert meta.occurred_at == datetime(2024, 3, 15, 10, 32, 38, 286848, tzinfo=UTC)


def test_pagerduty_event_and_header_fallback() -> None:
    payload = load("pagerduty/incident.priority_updated.json")
    meta = extract_meta("pagerduty_v3", headers={"X-Webhook-Id": "hdr"}, payload=payload)
    assert meta.delivery_id == "5ac64822-4adc-4fda-ade0-410becf0de4f"
    assert meta.event_type == "incident.priority_updated"
    assert meta.occurred_at == datetime(2020, 10, 2, 18, 45, 22, 169000, tzinfo=UTC)
    assert extract_meta("pagerduty_v3", headers={"X-Webhook-Id": "hdr"}, payload={}).delivery_id == "hdr"


def test_sendgrid_batch_array_uses_the_first_event() -> None:
    batch = load("sendgrid/event_webhook.batch.json")
    assert isinstance(batch, list) and len(batch) == 11
    meta = extract_meta("sendgrid_event_webhook", headers={}, payload=batch)
    assert (meta.delivery_id, meta.event_type) == ("sg_event_id", "processed")
    assert meta.occurred_at == datetime.fromtimestamp(1513299569, UTC)


def test_shopify_headers() -> None:
    headers = {
        "X-Shopify-Webhook-Id": "b54557e4-bdd9-4b37-8a5f-bf7d70bcd043",
        "X-Shopify-Topic": "fulfillments/create",
        "X-Shopify-Shop-Domain": "acme.myshopify.com",
        "X-Shopify-Triggered-At": "2024-05-14T09:21:07.123456789Z",
    }
    meta = extract_meta("shopify", headers=headers, payload=load("shopify/fulfillments.create.json"))
    assert meta.delivery_id == "b54557e4-bdd9-4b37-8a5f-bf7d70bcd043"
    assert (meta.event_type, meta.tenant) == ("fulfillments/create", "acme.myshopify.com")
    assert meta.occurred_at == datetime(2024, 5, 14, 9, 21, 7, 123456, tzinfo=UTC)
    events_api = extract_meta(
        "shopify", headers={"Shopify-Webhook-Id": "w2", "Shopify-Topic": "orders/create"}, payload={}
    )
    assert (events_api.delivery_id, events_api.event_type) == ("w2", "orders/create")


def test_standard_webhooks() -> None:
    headers = {"webhook-id": "msg_1", "webhook-timestamp": "1715678467"}
    meta = extract_meta("standard_webhooks", headers=headers, payload=sample("standard_webhooks.json"))
    assert (meta.delivery_id, meta.event_type) == ("msg_1", "user.created")
    assert meta.occurred_at == datetime(2024, 5, 14, 9, 21, 7, 512000, tzinfo=UTC)
    svix = extract_meta(
        "standard_webhooks",
        headers={"svix-id": "msg_2", "svix-timestamp": "1715678467"},
        payload={"type": "x"},
    )
    assert svix.delivery_id == "msg_2" and svix.occurred_at == datetime.fromtimestamp(1715678467, UTC)


@pytest.mark.parametrize(
    ("provider", "headers", "expected"),
    [
        (
            "gitlab",
            {"Idempotency-Key": "k1", "X-Gitlab-Event-UUID": "u1"},
            ("k1", "merge_request.open", "acme/checkout"),
        ),
        (
            "linear",
            {"Linear-Delivery": "ld1"},
            ("ld1", "Issue.create", "7c3a1f2e-9b4d-4e8a-b6c1-2d3e4f5a6b7c"),
        ),
        (
            "sentry",
            {"Request-ID": "r1", "Sentry-Hook-Resource": "issue"},
            ("r1", "issue.created", "7a485448-a9e2-4c85-8a3c-4f44175783c9"),
        ),
        (
            "intercom",
            {},
            ("notif_4e3504a3-ba3f-46dc-ab48-8e4d5bdfdf4e", "conversation.user.created", "xyz789ab"),
        ),
        ("hubspot_v3", {}, ("1892347231", "contact.creation", "62515")),
        ("square", {}, ("13b867cf-db3d-4b1c-90b6-2f32a9d78124", "payment.created", "6SSW7HV8K2ST5")),
        ("mailgun", {}, ("CPgfbmQMTCKtHW6uIWtuVe", "failed", None)),
        ("typeform", {}, ("01HXW3M5Q9ZK7T4J2B8N6C1D0F", "form_response", "lT4Z3j")),
        ("jira_cloud", {"X-Atlassian-Webhook-Identifier": "j1"}, ("j1", "jira:issue_created", None)),
        (
            "twitch_eventsub",
            {"Twitch-Eventsub-Message-Id": "t1", "Twitch-Eventsub-Subscription-Type": "channel.follow"},
            ("t1", "channel.follow", "1337"),
        ),
        ("discord_interactions", {}, ("1240212345678901234", "2", "1101234567890123456")),
        (
            "zendesk",
            {"X-Zendesk-Webhook-Invocation-Id": "z1"},
            ("z1", "zen:event-type:ticket.created", "10234567"),
        ),
        (
            "twilio",
            {"I-Twilio-Idempotency-Token": "tw1"},
            ("tw1", "received", "AC1f3b0e8c5d2a4b6c8d0e2f4a6b8c0d2e"),
        ),
        (
            "calendly",
            {},
            (
                "invitee.created:https://api.calendly.com/scheduled_events/GBGBDCAADAEDCRZ2/invitees/AAAAAAAAAAAAAAAA",
                "invitee.created",
                "https://api.calendly.com/users/GBGBDCAADAEDCRZ2",
            ),
        ),
        ("zoom", {}, ("meeting.ended:1715678467512:4444AAAiAAAAAiAiAiiAii==", "meeting.ended", "AAAAAABBBB")),
        ("zoom", {"x-zm-trackingid": "trk"}, ("trk", "meeting.ended", "AAAAAABBBB")),
        (
            "meta_whatsapp",
            {},
            ("wamid.HBgLMTY1MDM4Nzk0MzkVAgASGBQzQTRBNjU5OUFFRTAzODEwMTQ0RgA=", "messages", "102290129340398"),
        ),
    ],
)
def test_samples(provider: str, headers: dict[str, str], expected: tuple[str | None, ...]) -> None:
    spec = PROVIDERS[provider]
    assert spec.sample is not None
    meta = extract_meta(provider, headers=headers, payload=sample(spec.sample))
    assert (meta.delivery_id, meta.event_type, meta.tenant) == expected


def test_occurred_at_from_samples() -> None:
    zoom = extract_meta("zoom", headers={}, payload=sample("zoom.json"))
    assert zoom.occurred_at == datetime(2024, 5, 14, 9, 21, 7, 512000, tzinfo=UTC)  # ms by magnitude
    mailgun = extract_meta("mailgun", headers={}, payload=sample("mailgun.json"))
    assert mailgun.occurred_at == datetime(2024, 5, 14, 9, 21, 7, 512000, tzinfo=UTC)  # float seconds
    gitlab = extract_meta("gitlab", headers={}, payload=sample("gitlab.json"))
    assert gitlab.occurred_at is None  # "2024-05-14 09:21:07 UTC" is not ISO-8601: ignored, not an error


def test_whatsapp_status_updates_get_distinct_delivery_ids() -> None:
    def status(state: str) -> dict[str, Any]:
        value = {"statuses": [{"id": "wamid.X", "status": state, "timestamp": "1715678467"}]}
        return {"entry": [{"id": "waba", "changes": [{"field": "messages", "value": value}]}]}

    sent = extract_meta("meta_whatsapp", headers={}, payload=status("sent"))
    read = extract_meta("meta_whatsapp", headers={}, payload=status("read"))
    assert (sent.delivery_id, read.delivery_id) == ("wamid.X:sent", "wamid.X:read")
    assert sent.event_type == "statuses"
    assert sent.occurred_at == datetime.fromtimestamp(1715678467, UTC)


# --- overrides and locators ------------------------------------------------------------------------


def test_overrides_replace_one_key_and_its_rule() -> None:
    headers = {"X-GitHub-Delivery": "d1", "X-GitHub-Event": "issues", "X-Request-Id": "r9"}
    payload = load("github/issues.opened.json")
    meta = extract_meta(
        "github",
        headers=headers,
        payload=payload,
        overrides={
            "delivery_id": "header:x-request-id",
            "event_type": ["json:nope", "json:action"],
            "occurred_at": "json:issue.created_at",
            "tenant": [],
        },
    )
    assert meta.delivery_id == "r9"
    assert meta.event_type == "opened"  # the override wins; the GitHub join rule is not applied
    assert meta.occurred_at == datetime(2019, 5, 15, 15, 20, 18, tzinfo=UTC)
    assert meta.tenant is None


def test_numeric_indexes_and_non_scalars() -> None:
    payload = {"entry": [{"id": 7, "list": [1, 2]}], "flag": True, "empty": "", "obj": {"a": 1}}
    meta = extract_meta(
        "hmac",
        headers={},
        payload=payload,
        overrides={
            "delivery_id": [
                "json:obj",
                "json:entry.0.list",
                "json:flag",
                "json:empty",
                "json:entry.5.id",
                "json:entry.0.id",
            ]
        },
    )
    assert meta.delivery_id == "7"
    on_dict = extract_meta("hmac", headers={}, payload={"0": {"id": "zero"}}, overrides={"delivery_id": "json:0.id"})
    assert on_dict.delivery_id == "zero"


def test_a_float_delivery_id_is_refused_as_not_exact() -> None:
    for value in (float("inf"), 9007199254740992.0, 1.5, 7.0):
        with pytest.raises(MetaError, match=r"delivery id \(json:id\) .* not an exact value"):
            extract_meta("stripe", headers={}, payload={"id": value, "type": "x"})
    # only the delivery id: a float elsewhere keeps its decimal text
    meta = extract_meta("stripe", headers={}, payload={"id": 7, "type": 1.5})
    assert (meta.delivery_id, meta.event_type) == ("7", "1.5")


@pytest.mark.parametrize(
    "bad", ["id", "json:", "json:a..b", "json:a. b", "xml:a", "header:", "header:X Y", "header:a:b"]
)
def test_parse_locator_rejects(bad: str) -> None:
    with pytest.raises(ValueError):
        parse_locator(bad)


def test_parse_locator_accepts() -> None:
    loc = parse_locator(" json:entry.0.changes.0.value ")
    assert (loc.kind, loc.path, str(loc)) == (
        "json",
        ("entry", "0", "changes", "0", "value"),
        "json:entry.0.changes.0.value",
    )
    assert parse_locator("header:X-GitHub-Delivery").path == ("X-GitHub-Delivery",)


def test_bad_overrides_raise_meta_error_naming_the_key() -> None:
    with pytest.raises(MetaError, match="tenant"):
        extract_meta("stripe", headers={}, payload={}, overrides={"tenant": "jsn:account"})
    with pytest.raises(MetaError, match="colour"):
        parse_overrides({"colour": "json:x"})
    with pytest.raises(ValueError, match="unknown provider"):
        extract_meta("nope", headers={}, payload={})


def test_every_default_locator_parses() -> None:
    for spec in PROVIDERS.values():
        for key in ("delivery_id", "event_type", "occurred_at", "tenant"):
            for text in getattr(spec, key):
                parse_locator(text)
        assert spec.delivery_id, spec.name


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        (1715678467, datetime(2024, 5, 14, 9, 21, 7, tzinfo=UTC)),
        ("1715678467", datetime(2024, 5, 14, 9, 21, 7, tzinfo=UTC)),
        (1715678467512, datetime(2024, 5, 14, 9, 21, 7, 512000, tzinfo=UTC)),
        (1715678467512345, datetime(2024, 5, 14, 9, 21, 7, 512345, tzinfo=UTC)),
        ("1715678467.25", datetime(2024, 5, 14, 9, 21, 7, 250000, tzinfo=UTC)),
        ("2024-05-14T09:21:07Z", datetime(2024, 5, 14, 9, 21, 7, tzinfo=UTC)),
        ("2024-05-14T11:21:07+02:00", datetime(2024, 5, 14, 9, 21, 7, tzinfo=UTC)),
        ("2024-05-14T09:21:07.123456789Z", datetime(2024, 5, 14, 9, 21, 7, 123456, tzinfo=UTC)),
        ("2024-05-14T09:21:07", datetime(2024, 5, 14, 9, 21, 7, tzinfo=UTC)),
        ("yesterday", None),
        ("", None),
        (True, None),
        (-5, None),
        (10**30, None),
    ],
)
def test_parse_timestamp(value: Any, expected: datetime | None) -> None:
    parsed = parse_timestamp(value)
    assert parsed == expected
    if parsed is not None:
        assert parsed.tzinfo is not None and parsed.utcoffset() == UTC.utcoffset(None)


def test_headers_as_pairs_first_value_wins() -> None:
    pairs = [("X-GitHub-Delivery", ""), ("x-github-delivery", "second"), ("X-GitHub-Delivery", "third")]
    assert extract_meta("github", headers=pairs, payload={}).delivery_id == "second"


def test_non_object_payloads_do_not_crash() -> None:
    payloads: tuple[Any, ...] = (None, "text", 42, [], {"entry": "x"})
    for payload in payloads:
        for provider in PROVIDERS:
            extract_meta(provider, headers={}, payload=payload)
