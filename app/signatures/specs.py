"""Static facts about each provider: tolerance, key kind, URL binding and where metadata lives.

Locators (see :mod:`app.signatures.locators`): ``header:Name`` or ``json:dotted.path`` (numeric
segments index lists, ``json:0.id`` is the first element of a top-level array). The first locator
that yields a non-empty scalar wins. A few providers add a rule on top (``meta.py``): GitHub,
GitLab, Linear and Sentry join the event with the payload's ``action`` (``issues.opened``), Slack
uses ``event.type`` for ``event_callback``; Meta, Calendly and Zoom build a delivery id from
several fields because the sender has no per-delivery id.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from types import MappingProxyType


@dataclass(frozen=True)
class ProviderSpec:
    name: str
    default_tolerance: int | None  # seconds; None when the scheme signs no timestamp
    public_key: bool  # secrets are public keys
    url_bound: bool  # verify needs url=
    delivery_id: tuple[str, ...]
    event_type: tuple[str, ...]
    occurred_at: tuple[str, ...]
    tenant: tuple[str, ...]
    sample: str | None  # relative path under app/signatures/samples


def _spec(
    name: str,
    tolerance: int | None,
    delivery_id: tuple[str, ...],
    event_type: tuple[str, ...],
    occurred_at: tuple[str, ...] = (),
    tenant: tuple[str, ...] = (),
    *,
    public_key: bool = False,
    url_bound: bool = False,
    sample: str | None = "",
) -> ProviderSpec:
    return ProviderSpec(
        name=name,
        default_tolerance=tolerance,
        public_key=public_key,
        url_bound=url_bound,
        delivery_id=delivery_id,
        event_type=event_type,
        occurred_at=occurred_at,
        tenant=tenant,
        sample=f"{name}.json" if sample == "" else sample,
    )


_ALL = [
    _spec(
        "standard_webhooks",
        300,
        ("header:webhook-id", "header:svix-id"),
        ("json:type",),
        ("json:timestamp", "json:created_at", "header:webhook-timestamp", "header:svix-timestamp"),
    ),
    _spec(
        "stripe",
        300,
        ("json:id",),
        ("json:type",),
        ("json:created",),
        ("json:account",),
        sample="stripe/invoice.payment_failed.json",
    ),
    _spec(
        "github",
        None,
        ("header:X-GitHub-Delivery",),
        ("header:X-GitHub-Event",),
        (),
        ("json:installation.id", "json:organization.login", "json:repository.owner.login"),
        sample="github/issues.opened.json",
    ),
    _spec(
        "shopify",
        None,
        ("header:X-Shopify-Webhook-Id", "header:Shopify-Webhook-Id"),
        ("header:X-Shopify-Topic", "header:Shopify-Topic"),
        ("header:X-Shopify-Triggered-At", "header:Shopify-Triggered-At"),
        ("header:X-Shopify-Shop-Domain", "header:Shopify-Shop-Domain"),
        sample="shopify/fulfillments.create.json",
    ),
    _spec(
        "slack",
        300,
        ("json:event_id",),
        ("json:event.type", "json:type"),
        ("json:event_time",),
        ("json:team_id", "json:team.id", "json:enterprise_id"),
        sample="slack/event_callback.message.json",
    ),
    _spec(
        "twilio",
        None,
        ("header:I-Twilio-Idempotency-Token",),
        ("json:EventType", "json:MessageStatus", "json:CallStatus", "json:SmsStatus"),
        (),
        ("json:AccountSid",),
        url_bound=True,
    ),
    _spec(
        "linear",
        60,
        ("header:Linear-Delivery",),
        ("json:type", "header:Linear-Event"),
        ("json:createdAt", "json:webhookTimestamp"),
        ("json:organizationId",),
    ),
    _spec(
        "zendesk",
        300,
        ("header:X-Zendesk-Webhook-Invocation-Id", "json:id"),
        ("json:type",),
        ("json:time", "header:X-Zendesk-Webhook-Signature-Timestamp"),
        ("json:account_id",),
    ),
    _spec("intercom", None, ("json:id",), ("json:topic",), ("json:created_at",), ("json:app_id",)),
    _spec(
        "hubspot_v3",
        300,
        ("json:0.eventId",),
        ("json:0.subscriptionType",),
        ("json:0.occurredAt",),
        ("json:0.portalId",),
        url_bound=True,
    ),
    _spec(
        "meta_whatsapp",
        None,
        ("json:entry.0.changes.0.value.messages.0.id",),
        ("json:entry.0.changes.0.field",),
        (
            "json:entry.0.changes.0.value.messages.0.timestamp",
            "json:entry.0.changes.0.value.statuses.0.timestamp",
            "json:entry.0.time",
        ),
        ("json:entry.0.id",),
    ),
    _spec(
        "discord_interactions",
        300,
        ("json:id", "json:event.id"),
        ("json:event.type", "json:type"),
        ("json:event.timestamp",),
        ("json:guild_id", "json:application_id"),
        public_key=True,
    ),
    _spec(
        "gitlab",
        None,
        ("header:Idempotency-Key", "header:X-Gitlab-Event-UUID"),
        ("json:object_kind", "json:event_name", "header:X-Gitlab-Event"),
        ("json:object_attributes.updated_at",),
        ("json:project.path_with_namespace",),
    ),
    _spec(
        "paddle_billing",
        5,
        ("json:event_id", "json:notification_id"),
        ("json:event_type",),
        ("json:occurred_at",),
        (),
        sample="paddle/customer.created.json",
    ),
    _spec(
        "square",
        None,
        ("json:event_id",),
        ("json:type",),
        ("json:created_at",),
        ("json:merchant_id",),
        url_bound=True,
    ),
    _spec(
        "pagerduty_v3",
        None,
        ("json:event.id", "header:X-Webhook-Id"),
        ("json:event.event_type",),
        ("json:event.occurred_at",),
        ("header:X-Webhook-Subscription",),
        sample="pagerduty/incident.priority_updated.json",
    ),
    _spec(
        "sentry",
        None,
        ("header:Request-ID",),
        ("header:Sentry-Hook-Resource",),
        ("header:Sentry-Hook-Timestamp",),
        ("json:installation.uuid",),
    ),
    _spec(
        "mailgun",
        900,
        ("json:event-data.id", "json:signature.token"),
        ("json:event-data.event",),
        ("json:event-data.timestamp", "json:signature.timestamp"),
        (),
    ),
    _spec(
        "sendgrid_event_webhook",
        300,
        ("json:0.sg_event_id",),
        ("json:0.event",),
        ("json:0.timestamp",),
        (),
        public_key=True,
        sample="sendgrid/event_webhook.batch.json",
    ),
    _spec(
        "calendly",
        180,
        ("json:payload.uri",),
        ("json:event",),
        ("json:created_at",),
        ("json:payload.scheduled_event.event_memberships.0.user",),
    ),
    _spec(
        "typeform",
        None,
        ("json:event_id",),
        ("json:event_type",),
        ("json:form_response.submitted_at",),
        ("json:form_response.form_id",),
    ),
    _spec(
        "jira_cloud",
        None,
        ("header:X-Atlassian-Webhook-Identifier",),
        ("json:webhookEvent",),
        ("json:timestamp",),
        (),
    ),
    _spec(
        "twitch_eventsub",
        600,
        ("header:Twitch-Eventsub-Message-Id",),
        ("header:Twitch-Eventsub-Subscription-Type", "json:subscription.type"),
        ("header:Twitch-Eventsub-Message-Timestamp",),
        ("json:subscription.condition.broadcaster_user_id",),
    ),
    _spec(
        "zoom",
        300,
        ("header:x-zm-trackingid",),
        ("json:event",),
        ("json:event_ts",),
        ("json:payload.account_id",),
    ),
    _spec(
        "hmac",
        300,
        ("json:id", "json:event_id"),
        ("json:type", "json:event_type", "json:event"),
        ("json:created_at", "json:timestamp", "json:created"),
        (),
        sample=None,
    ),
]

PROVIDERS: Mapping[str, ProviderSpec] = MappingProxyType({s.name: s for s in _ALL})


def get_spec(provider: str) -> ProviderSpec:
    try:
        return PROVIDERS[provider]
    except KeyError:
        raise ValueError(f"unknown provider {provider!r}; known: {', '.join(sorted(PROVIDERS))}") from None
