"""The one template mechanism: Jinja2's sandbox, strict names, leaf-by-leaf structures."""

from __future__ import annotations

import xml.dom.minidom
from datetime import UTC, datetime

import pytest

from app.core.templates import (
    TemplateContext,
    TemplateRenderError,
    check,
    check_value,
    render,
    render_slack_blocks,
    render_value,
)

CTX = TemplateContext.of(
    output={"answer": "42 <b>", "urgent": True},
    event_id=7,
    source="slack-commands",
    event_type="command",
    tenant="acme",
    occurred_at=datetime(2026, 12, 1, 9, 0, tzinfo=UTC),
    fields={"text": "hi"},
)


def test_renders_output_event_and_fields() -> None:
    text = render(
        "{{ output.answer }} #{{ event.id }} {{ event.source }} {{ fields.text }} {{ event.occurred_at }}", CTX
    )
    assert text == "42 <b> #7 slack-commands hi 2026-12-01T09:00:00+00:00"


def test_xml_escape_for_twiml() -> None:
    assert render("<Message>{{ output.answer }}</Message>", CTX, escape="xml") == "<Message>42 &lt;b&gt;</Message>"


def test_xml_escape_drops_code_points_xml_does_not_allow() -> None:
    """A sender's text with control characters (\\x0b, ESC), U+FFFE or a lone surrogate must not make the
    TwiML reply ill-formed; tab, LF and CR are allowed in XML and stay."""
    ctx = TemplateContext.of(
        output={"answer": "a\tb\nc\rd"},
        event_id=1,
        source="sms",
        event_type=None,
        tenant=None,
        occurred_at=None,
        fields={"Body": "hi\x0bthere\x1b \x00\ufffe\uffff\ud800 & <b>"},
    )
    text = render("<Response><Message>{{ fields.Body }}|{{ output.answer }}</Message></Response>", ctx, escape="xml")
    assert text == "<Response><Message>hithere  &amp; &lt;b&gt;|a\tb\nc\rd</Message></Response>"
    xml.dom.minidom.parseString(text)  # noqa: S318 - our own text: it must be well-formed
    assert render("{{ fields.Body }}", ctx) == "hi\x0bthere\x1b \x00\ufffe\uffff\ud800 & <b>"  # only XML drops them


def test_structures_render_leaf_by_leaf() -> None:
    body = {"response_type": "in_channel", "text": "{{ output.answer }}", "n": 3, "blocks": [{"t": "{{ event.type }}"}]}
    assert render_value(body, CTX) == {
        "response_type": "in_channel",
        "text": "42 <b>",
        "n": 3,
        "blocks": [{"t": "command"}],
    }


def test_undefined_name_is_a_render_error() -> None:
    with pytest.raises(TemplateRenderError, match=r"has no attribute 'nope'"):
        render("{{ output.nope }}", CTX)
    with pytest.raises(TemplateRenderError):
        render("{{ environ }}", CTX)


@pytest.mark.parametrize(
    ("source", "message"),
    [
        ("{{ output.label|truncate(-1) }}", "AssertionError: expected length >= 3"),  # a filter's assert
        ('{{ "x"|wordwrap(0) }}', "ValueError: invalid width 0"),
    ],
)
def test_a_filter_refusing_its_arguments_is_a_render_error(source: str, message: str) -> None:
    """A render error fails the action at once; anything else would be retried as a transient fault."""
    with pytest.raises(TemplateRenderError, match=message):
        render(source, CTX)


def test_sandbox_refuses_python_internals() -> None:
    with pytest.raises(TemplateRenderError):
        render("{{ output.__class__.__mro__ }}", CTX)
    with pytest.raises(TemplateRenderError):
        render("{{ output.update({'a': 1}) }}", CTX)  # immutable sandbox


def test_no_globals_reach_templates() -> None:
    with pytest.raises(TemplateRenderError):
        render("{{ range(3) | list }}", CTX)


def test_check_reports_syntax_errors() -> None:
    with pytest.raises(ValueError, match="template error"):
        check("{{ output.answer ")
    with pytest.raises(ValueError, match="template error"):
        check_value({"a": ["ok", "{% if %}"]})
    check_value({"a": ["{{ output.answer }}", 1, None]})


def test_slack_escaping_covers_values_not_the_templates_own_markup() -> None:
    ctx = TemplateContext.of(
        output={"s": "<!here> a & b", "u": "<@U1>"},
        event_id=1,
        source="s",
        event_type=None,
        tenant=None,
        occurred_at=None,
    )
    assert render("<https://x.test|{{ output.s }}>", ctx, "slack") == "<https://x.test|&lt;!here&gt; a &amp; b>"
    assert render("{{ output.u | safe }}", ctx, "slack") == "<@U1>"  # markup on purpose
    blocks = [{"type": "section", "text": {"type": "mrkdwn", "text": "{{ output.s }}"}, "url": "{{ output.s }}"}]
    assert render_slack_blocks(blocks, ctx) == [
        {"type": "section", "text": {"type": "mrkdwn", "text": "&lt;!here&gt; a &amp; b"}, "url": "<!here> a & b"}
    ]
