"""Config of the actions that reach real systems, `when` routing and schedules (no database)."""

from __future__ import annotations

import copy
from datetime import UTC, datetime
from typing import Any

import httpx
import pytest

from app.cli.schedules import table
from app.core.config import Config, EmailAction, HttpAction, environment_problems, parse_config
from app.core.errors import ConfigError
from app.signatures import verify
from worker.actions import ActionContext, ActionDeps
from worker.actions.email import build_message, message_id
from worker.actions.http import build_headers
from worker.errors import PermanentError
from worker.routing import passes

BASE: dict[str, Any] = {
    "sources": {"gh": {"provider": "github", "secrets_env": ["GH_SECRET"]}},
    "pipelines": {"p": {"source": "gh", "instructions": "x", "output_schema": {"type": "object"}}},
}
OUT_SECRET = "whsec_cmVjZWl2ZXItdmVyaWZpZXMtaG9va2xpbmUtc2lncyE="


def config(actions: list[dict[str, Any]] | None = None, **extra: Any) -> Config:
    data = copy.deepcopy(BASE)
    if actions is not None:
        data["pipelines"]["p"]["actions"] = actions
    for key, value in extra.items():
        if key in ("when", "fields"):  # the pipeline's own keys
            data["pipelines"]["p"][key] = value
        else:
            data[key] = value
    return parse_config(data)


def error_of(**kw: Any) -> str:
    with pytest.raises(ConfigError) as e:
        config(**kw)
    return str(e.value)


CTX = ActionContext(
    event_id=7,
    source="gh",
    event_type="issues.opened",
    pipeline="p",
    action="http#0",
    idempotency_key="hookline-7-p-http#0",
    output={"comment": "Thanks!", "n": "1/" + "../" * 2 + "admin"},  # a traversal attempt
    payload={},
    fields={"repository.full_name": "octo/hello world", "issue.number": 42},
)


def test_template_errors_name_the_key() -> None:
    msg = error_of(actions=[{"type": "slack", "webhook_url_env": "W", "text": "{{ output.summary"}])
    assert msg.startswith("pipelines.p.actions.0.text: template error:")
    msg = error_of(
        actions=[{"type": "slack", "token_env": "T", "channel": "C1", "text": "x", "blocks": [{"a": "{% if %}"}]}]
    )
    assert msg.startswith("pipelines.p.actions.0.blocks: template error:")
    msg = error_of(
        actions=[
            {"type": "email", "smtp_url_env": "S", "from": "a@b.io", "to": "x@y.io", "subject": "s", "body": "{{ }"}
        ]
    )
    assert msg.startswith("pipelines.p.actions.0.body: template error:")


SLACK = {"type": "slack", "webhook_url_env": "W"}
MAIL = {"type": "email", "smtp_url_env": "S", "from": "a@b.io", "to": "x@y.io", "subject": "s", "body": "b"}


@pytest.mark.parametrize(
    ("action", "expected"),
    [
        ({**SLACK, "text": "{{ payload.issue.title }}"}, "pipelines.p.actions.0.text: template error: unknown name"),
        ({**SLACK, "text": "{{ ouput.summary }}"}, "unknown name(s) ['ouput']; a template reads only"),
        ({**SLACK, "text": "x", "blocks": [{"text": {"text": "{{ env }}"}}]}, "pipelines.p.actions.0.blocks: template"),
        ({**MAIL, "subject": "{{ issue.title }}"}, "pipelines.p.actions.0.subject: template error: unknown name"),
        ({"type": "http", "url_env": "U", "body": "{{ secrets }}"}, "pipelines.p.actions.0.body: template error"),
    ],
)
def test_a_name_no_template_sees_is_refused_at_load(action: dict[str, Any], expected: str) -> None:
    """A template sees output, event and fields only: any other name failed every render at run time."""
    assert expected in error_of(actions=[action])


@pytest.mark.parametrize(
    ("action", "where"),
    [
        ({**SLACK, "text": "#{{ fields['issue.numbr'] }}"}, "actions.0.text"),
        ({**MAIL, "to": "{{ fields['issue.user.email'] | default('x@y.io') }}"}, "actions.0.to"),
        ({**SLACK, "text": "x", "blocks": [{"text": {"text": "{{ fields.issue }}"}}]}, "actions.0.blocks"),
        ({"type": "http", "url": "https://api.example.com/{{ fields['repo'] }}"}, "actions.0.url"),
    ],
)
def test_a_template_reading_a_field_the_pipeline_does_not_list_is_refused_at_load(
    action: dict[str, Any], where: str
) -> None:
    """With ``fields`` listed, a template sees only those keys: any other failed (or defaulted) on every event."""
    msg = error_of(actions=[action], fields=["issue.number", "issue.title"])
    assert msg.startswith(f"pipelines.p: {where}: the template reads fields["), msg
    assert "which is not in this pipeline's fields ['issue.number', 'issue.title']" in msg


def test_templates_reading_listed_fields_or_the_whole_payload_load() -> None:
    listed = [
        {**SLACK, "text": "#{{ fields['issue.number'] }} {{ fields.get('other') }} {{ fields | length }}"},
        {**SLACK, "text": "{% for k, v in fields.items() %}{{ k }}{% endfor %}{% set fields = {} %}{{ fields.x }}"},
    ]
    assert config(actions=listed, fields=["issue.number"])
    assert config(actions=[{**SLACK, "text": "{{ fields.issue.user.login }}"}])  # no fields: the whole payload


def test_a_sync_reply_reading_a_field_the_pipeline_does_not_list_is_refused_at_load() -> None:
    data = copy.deepcopy(BASE)
    data["pipelines"]["p"].update(respond="sync", fields=["text"], respond_body={"reply": "{{ fields['txt'] }}"})
    with pytest.raises(ConfigError, match=r"pipelines\.p: respond_body: the template reads fields\['txt'\]"):
        parse_config(data)


def test_action_shapes_are_checked() -> None:
    assert "exactly one of webhook_url_env" in error_of(actions=[{"type": "slack", "text": "x"}])
    assert "channel" in error_of(actions=[{"type": "slack", "token_env": "T", "text": "x"}])
    assert "schema-qualified" in error_of(actions=[{"type": "sql", "function": "apply_lead_score"}])
    assert "schema-qualified" in error_of(actions=[{"type": "sql", "function": "crm.x; DROP TABLE y"}])
    assert "exactly one of url" in error_of(actions=[{"type": "http"}])
    assert "pipelines.p.actions.0.headers.Authorization.env: required key is missing" in error_of(
        actions=[{"type": "http", "url_env": "U", "headers": {"Authorization": {"prefix": "Bearer "}}}]
    )


@pytest.mark.parametrize(
    ("where", "action", "path"),
    [
        ("actions", {"type": "slack_response", "text": 1}, "pipelines.p.actions.0.text:"),
        ("actions", {"type": "discord_followup", "content": 1}, "pipelines.p.actions.0.content:"),
        ("alerts", {"type": "slack", "webhook_url_env": "W", "text": 1}, "alerts.0.text:"),
        ("alerts", {"type": "http", "url_env": "U", "method": "FOO"}, "alerts.0.method:"),
    ],
)
def test_error_paths_carry_no_union_tag(where: str, action: dict[str, Any], path: str) -> None:
    msg = error_of(actions=[action]) if where == "actions" else error_of(alerts=[action])
    assert msg.startswith(path), msg


def test_url_template_may_not_read_the_output_nor_place_the_host() -> None:
    msg = error_of(actions=[{"type": "http", "url": "https://api.github.com/x/{{ output.n }}"}])
    assert msg.startswith("pipelines.p.actions.0.url: a url template may use only") and "output" in msg
    msg = error_of(actions=[{"type": "http", "url": "https://{{ fields.host }}/x"}])
    assert "host written out" in msg
    msg = error_of(actions=[{"type": "http", "url": "https://api.github.com{{ fields.x }}"}])
    assert "only after the host" in msg


def test_url_values_are_single_encoded_path_segments() -> None:
    from worker.actions.base import render

    url = 'https://api.github.com/repos/{{ fields["repository.full_name"] }}/issues/{{ fields["issue.number"] }}'
    config([{"type": "http", "url": url}])
    assert render(url, CTX, what="t", escape="url") == "https://api.github.com/repos/octo%2Fhello%20world/issues/42"


@pytest.mark.parametrize(
    ("template", "values"),
    [
        ("https://api.example.com/tenants/{{ fields.t }}/users/{{ fields.u }}/notify", {"t": "..", "u": ".."}),
        ("https://api.example.com/tenants/{{ fields.t }}/notify", {"t": "."}),
        ("https://api.example.com/tenants/{{ fields.t }}{{ fields.u }}/notify", {"t": ".", "u": "."}),
        ("https://api.example.com/tenants/{{ fields.t }}/notify?x=1", {"t": ".."}),
    ],
)
def test_a_url_value_cannot_climb_out_of_its_segment(template: str, values: dict[str, str]) -> None:
    """``..`` is one encoded segment, but clients and servers resolve it: /tenants/../notify is /notify."""
    import dataclasses

    from worker.actions.base import render

    config([{"type": "http", "url": template}])
    with pytest.raises(PermanentError, match=r"'\.' or '\.\.' segment"):
        render(template, dataclasses.replace(CTX, fields=values), what="t", escape="url")
    fine = {key: "..." for key in values}  # three dots are a name, not a dot segment
    assert "/..." in render(template, dataclasses.replace(CTX, fields=fine), what="t", escape="url")


def test_http_headers_are_set_once_each() -> None:
    """The duplicate Content-Type (ours, then the signature's) is gone: RFC 9110 allows one."""
    action = HttpAction.model_validate(
        {
            "type": "http",
            "url_env": "U",
            "secret_env": "OUT",
            "headers": {"Authorization": {"env": "GITHUB_TOKEN", "prefix": "Bearer "}, "X-Plain": "1"},
        }
    )
    deps = ActionDeps(http=httpx.AsyncClient(), environ={"GITHUB_TOKEN": "ghp_x", "OUT": OUT_SECRET}, timeout=1)
    body = b'{"a":1}'
    headers = build_headers(action, CTX, deps, body)
    names = [k.lower() for k, _ in headers.raw]
    assert len(names) == len(set(names)), names
    assert headers["content-type"] == "application/json"
    assert headers["authorization"] == "Bearer ghp_x"
    assert headers["webhook-id"] == headers["idempotency-key"] == CTX.idempotency_key
    verify("standard_webhooks", secrets=[OUT_SECRET], headers=dict(headers), body=body)
    with pytest.raises(PermanentError, match="GITHUB_TOKEN is not set") as e:
        build_headers(action, CTX, ActionDeps(http=deps.http, environ={}, timeout=1), body)
    assert "ghp_x" not in str(e.value)
    # the signing secret unset: the action fails (permanently) rather than send the request unsigned
    with pytest.raises(PermanentError, match="secret_env: environment variable OUT is not set"):
        build_headers(action, CTX, ActionDeps(http=deps.http, environ={"GITHUB_TOKEN": "ghp_x"}, timeout=1), body)
    problems = environment_problems(
        config(
            [{"type": "http", "url_env": "U", "secret_env": "OUT"}],
            alerts=[{"type": "slack", "webhook_url_env": "A", "text": "x"}],
        ),
        {"GH_SECRET": "s", "U": "https://example.com/"},
    )
    assert problems == ["pipelines.p.actions.0.secret_env: OUT is not set", "alerts.0.webhook_url_env: A is not set"]


def test_email_message_id_comes_from_the_idempotency_key() -> None:
    action = EmailAction.model_validate(
        {
            "type": "email",
            "smtp_url_env": "S",
            "from": "Hookline <ops@example.com>",
            "to": "{{ fields.to }}",
            "subject": "Re: {{ event.type }}",
            "body": "{{ output.comment }}",
        }
    )
    ctx = ActionContext(**{**CTX.__dict__, "output": {"comment": "hi"}, "fields": {"to": "ada@example.com"}})
    msg, to = build_message(action, ctx)
    again, _ = build_message(action, ctx)
    assert to == ["ada@example.com"]
    assert msg["Message-ID"] == again["Message-ID"] == message_id(CTX.idempotency_key, "ops@example.com")
    assert msg["Message-ID"].endswith("@example.com>")
    bad = ActionContext(**{**CTX.__dict__, "fields": {"to": "not an address\r\nBcc: x@y.io"}})
    with pytest.raises(PermanentError, match="not one email address"):
        build_message(action, bad)
    # one template, several recipients: refused, not sent to the first one only
    for several in ("ada@example.com, eve@example.net", '"Ada" <ada@example.com>, <eve@example.net>'):
        ctx_several = ActionContext(**{**CTX.__dict__, "fields": {"to": several}})
        with pytest.raises(PermanentError, match="not one email address"):
            build_message(action, ctx_several)
    quoted = ActionContext(**{**CTX.__dict__, "fields": {"to": '"Lovelace, Ada" <ada@example.com>'}})
    assert build_message(action, quoted)[1] == ["ada@example.com"]


def test_an_email_recipient_never_comes_from_the_model_s_answer() -> None:
    """The answer never picks an action's target (a prompt-injected payload must not steer a message
    to its own address): a to template may read the event and the payload fields only."""
    base = {"type": "email", "smtp_url_env": "S", "from": "ops@example.com", "subject": "s", "body": "{{ output.x }}"}
    for to in ("{{ output.to }}", ["ops@example.com", "{{ output['to'] }}"], "{% set t = output.to %}{{ t }}"):
        with pytest.raises(ValueError, match=r"a to template may use only \['event', 'fields'\].*it uses \['output'\]"):
            EmailAction.model_validate({**base, "to": to})
    for to in ("{{ fields.email }}", "{{ fields['customer.email'] }}", "finance@example.com", ["a@example.com"]):
        assert EmailAction.model_validate({**base, "to": to}).to == to


def test_when_is_checked_at_load_and_filters_at_run() -> None:
    assert "pipelines.p.when: expression error" in error_of(when="payload.amount >")
    assert "unknown name(s) ['output']" in error_of(when="output.x > 1")
    assert "unsafe" not in error_of(when="payload.__class__ and nope")  # an unknown name is refused first
    cfg = config(when="payload.data.object.amount_due > 10000 and event.type == 'invoice.payment_failed'")
    p = cfg.pipelines["p"]
    event = {"source": "gh", "event_type": "invoice.payment_failed", "tenant": None, "occurred_at": None}
    assert passes(p, {**event, "payload": {"data": {"object": {"amount_due": 20000}}}}) == (True, None)
    ok, why = passes(p, {**event, "payload": {"data": {"object": {"amount_due": 500}}}})
    assert not ok and why == "when is false"
    ok, why = passes(p, {**event, "payload": {"data": {}}})
    assert not ok and why is not None and "has no attribute 'object'" in why


SCHEDULED = {
    "pipelines": {
        **BASE["pipelines"],
        "digest": {"source": "schedule", "instructions": "Summarize.", "output_schema": {"type": "object"}},
    },
    "schedules": {
        "daily-digest": {
            "cron": "0 9 * * *",
            "pipeline": "digest",
            "window": "24h",
            "timezone": "Europe/Berlin",
            "filter": {"source": "gh", "status": ["dead", "succeeded"]},
        },
    },
}


def test_schedules_validate_and_route_to_their_pipeline() -> None:
    cfg = parse_config({**copy.deepcopy(BASE), **copy.deepcopy(SCHEDULED)})
    assert [p.name for p in cfg.pipelines_for("schedule", "daily-digest")] == ["digest"]
    assert cfg.pipelines_for("schedule", "other") == []
    bad = copy.deepcopy(SCHEDULED)
    bad["schedules"]["daily-digest"]["pipeline"] = "p"
    with pytest.raises(ConfigError, match=r"daily-digest\.pipeline: pipelines\.p must have source = 'schedule'"):
        parse_config({**copy.deepcopy(BASE), **bad})
    bad["schedules"]["daily-digest"].update(pipeline="digest", cron="61 * * * *", window="1y", timezone="Mars/Base")
    with pytest.raises(ConfigError) as e:
        parse_config({**copy.deepcopy(BASE), **bad})
    assert [line.split(":")[0] for line in str(e.value).splitlines()] == [
        "schedules.daily-digest.cron",
        "schedules.daily-digest.window",
        "schedules.daily-digest.timezone",
    ]


def test_next_run_honours_the_time_zone_and_daylight_saving() -> None:
    cfg = parse_config({**copy.deepcopy(BASE), **copy.deepcopy(SCHEDULED)})
    s = cfg.schedules["daily-digest"]
    winter = s.next_run(datetime(2026, 12, 1, 12, 0, tzinfo=UTC))
    summer = s.next_run(datetime(2026, 7, 1, 12, 0, tzinfo=UTC))
    assert winter.astimezone(UTC) == datetime(2026, 12, 2, 8, 0, tzinfo=UTC)  # 09:00 CET
    assert summer.astimezone(UTC) == datetime(2026, 7, 2, 7, 0, tzinfo=UTC)  # 09:00 CEST
    assert s.delivery_id(winter) == "daily-digest@2026-12-02T08:00:00Z"
    lines = table(cfg, now=datetime(2026, 12, 1, 12, 0, tzinfo=UTC))
    assert lines[1].split()[:5] == ["daily-digest", "0", "9", "*", "*"]
    assert "2026-12-02 08:00:00Z (2026-12-02T09:00+01:00)" in lines[1]


@pytest.mark.parametrize(
    ("cron", "expected"),
    [
        # the night the clocks go back in Berlin (03:00 CEST → 02:00 CET): 02:30 happens twice
        ("30 2 * * *", ["2026-10-25T00:30:00Z", "2026-10-26T01:30:00Z"]),  # once a night, as cron does
        ("30 * * * *", ["2026-10-25T00:30:00Z", "2026-10-25T01:30:00Z", "2026-10-25T02:30:00Z"]),  # hourly: every hour
    ],
)
def test_a_local_time_that_happens_twice_fires_once(cron: str, expected: list[str]) -> None:
    """Through the worker's own periodic records (what procrastinate's deferrer reads) and through
    ``next_run`` (what ``hookline schedules`` prints)."""
    from procrastinate.periodic import PeriodicDeferrer

    from worker.main import build_app

    data = {**copy.deepcopy(BASE), **copy.deepcopy(SCHEDULED)}
    data["schedules"]["daily-digest"]["cron"] = cron
    cfg = parse_config(data)
    app = build_app("postgresql://nobody@127.0.0.1:1/none", pool_size=1, config=cfg)  # never connects
    (record,) = [r for r in app.periodic_registry.periodic_tasks.values() if r.periodic_id == "daily-digest"]
    since, until = datetime(2026, 10, 25, 0, 0, tzinfo=UTC), datetime(2026, 10, 26, 2, 0, tzinfo=UTC)
    ticks = PeriodicDeferrer(app.periodic_registry).get_timestamps(record, int(since.timestamp()), until.timestamp())
    fired = [datetime.fromtimestamp(t, UTC).strftime("%Y-%m-%dT%H:%M:%SZ") for t in ticks]
    assert fired[: len(expected)] == expected
    if cron.startswith("30 2"):
        assert fired == expected
        s = cfg.schedules["daily-digest"]
        assert s.next_run(datetime(2026, 10, 25, 0, 30, tzinfo=UTC)).astimezone(UTC) == datetime(
            2026, 10, 26, 1, 30, tzinfo=UTC
        )


def test_the_outbound_allowlist_reads_hosts_ports_and_ipv6_addresses() -> None:
    from worker.outbound import host_allowed, parse_allowlist

    allowed = parse_allowlist("crm.example.com, *.hooks.example.com, 10.0.0.5:8443, ::1, [fd00::5]:8443, [fd00::6]")
    assert allowed is not None

    def ok(url: str) -> bool:
        return host_allowed(httpx.URL(url), allowed)

    assert ok("https://crm.example.com/x") and ok("http://crm.example.com:8080/x")
    assert ok("https://a.hooks.example.com/x") and not ok("https://hooks.example.com/x")
    assert ok("https://10.0.0.5:8443/x") and not ok("https://10.0.0.5/x")
    assert ok("http://[::1]:9000/x")
    assert ok("https://[fd00::5]:8443/x") and not ok("https://[fd00::5]:9443/x")
    assert ok("https://[fd00::6]:1234/x")
    assert not ok("https://evil.example.net/x") and not ok("https://[fd00::7]:8443/x")


@pytest.mark.parametrize(
    "action", [{"type": "slack_response", "text": "x"}, {"type": "discord_followup", "content": "x"}]
)
def test_an_alert_cannot_be_a_follow_up(action: dict[str, Any]) -> None:
    """A follow-up answers the event's own Slack or Discord request, which an alert does not have: such
    an alert failed each time it fired ("does not run outside a transaction"); now it is refused at load."""
    msg = error_of(alerts=[action])
    assert msg.startswith(f"alerts.0.type: {action['type']} answers"), msg
