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
    fields_read,
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


NATIVE = TemplateContext.of(
    output={"flag": True, "count": 3, "ratio": 0.5, "tags": ["a"], "none": None, "obj": {"k": [1, "<x>"]}, "s": "3"},
    event_id=7,
    source="discord",
    event_type="2",
    tenant=None,
    occurred_at=None,
    fields={"when": datetime(2026, 12, 1, 9, 0, tzinfo=UTC), "user": {"id": 5}},
)


def test_a_leaf_that_is_one_expression_keeps_the_type_of_its_value() -> None:
    """``"{{ output.flag }}"`` is JSON true, not the string "True": a JSON reply or a Discord embed needs
    booleans, integers and arrays where the receiver expects them."""
    body = {
        "ok": "{{ output.flag }}",
        "n": " {{ output.count }}\n",  # whitespace around the one expression is allowed
        "r": "{{- output.ratio -}}",
        "tags": "{{ output.tags }}",
        "none": "{{ output.none }}",
        "obj": ["{{ output.obj }}"],
        "user": "{{ fields.user }}",
        "sum": "{{ output.count + 1 }}",
        "defined": "{{ output.nope is defined }}",
    }
    assert render_value(body, NATIVE) == {
        "ok": True,
        "n": 3,
        "r": 0.5,
        "tags": ["a"],
        "none": None,
        "obj": [{"k": [1, "<x>"]}],
        "user": {"id": 5},
        "sum": 4,
        "defined": False,
    }


def test_a_leaf_with_other_text_or_a_string_value_stays_a_string() -> None:
    body = {
        "mixed": "n={{ output.count }}",
        "two": "{{ output.count }}{{ output.count }}",
        "block": "{% if output.flag %}{{ output.count }}{% endif %}",
        "s": "{{ output.s }}",  # a string value is never turned into a number
        "as_text": "{{ output.count | string }}",  # the way to ask for text
        "date": "{{ fields.when }}",  # not a JSON value: its text, as before
        "nan": '{{ "nan" | float }}',  # JSON has no NaN
        "padded": " {{ output.s }} ",
    }
    assert render_value(body, NATIVE) == {
        "mixed": "n=3",
        "two": "33",
        "block": "3",
        "s": "3",
        "as_text": "3",
        "date": "2026-12-01 09:00:00+00:00",
        "nan": "nan",
        "padded": " 3 ",
    }


def test_a_one_expression_leaf_still_fails_on_an_undefined_name() -> None:
    with pytest.raises(TemplateRenderError, match=r"has no attribute 'nope'"):
        render_value({"x": "{{ output.nope }}"}, NATIVE)


def test_native_values_under_an_escape_are_scalars_only() -> None:
    """An escape applies to text: a list or dict under ``escape="xml"`` renders as escaped text, as before,
    so no string of it skips the escaping; a number or a boolean has nothing to escape."""
    assert render_value(["{{ output.count }}", "{{ output.obj }}"], NATIVE, "xml") == [
        3,
        "{&#39;k&#39;: [1, &#39;&lt;x&gt;&#39;]}",
    ]


def test_slack_blocks_stay_strings() -> None:
    """Slack's block fields are strings (a number as a button's value is refused): unchanged."""
    blocks = [
        {"type": "section", "text": {"type": "mrkdwn", "text": "{{ output.count }}"}, "value": "{{ output.count }}"}
    ]
    assert render_slack_blocks(blocks, NATIVE) == [
        {"type": "section", "text": {"type": "mrkdwn", "text": "3"}, "value": "3"}
    ]


def test_fields_read_sees_a_one_expression_leaf() -> None:
    assert fields_read({"n": "{{ fields['issue.number'] }}", "t": ["{{ fields.title }}"]}) == {"issue.number", "title"}
