"""One template mechanism for every text that an action or a reply renders.

Templates are Jinja2 run in its :class:`~jinja2.sandbox.ImmutableSandboxedEnvironment` (no access to
Python internals, no mutation of the context), with ``StrictUndefined`` so that a misspelt name is an
error rather than an empty string. A template sees exactly three names:

* ``output`` — the pipeline's validated answer;
* ``event`` — ``id``, ``source``, ``type``, ``tenant``, ``occurred_at``;
* ``fields`` — the event's payload trimmed to the pipeline's ``fields`` (what the model saw); a payload
  that is not a JSON object is ``fields.payload`` (also ``fields.value``), :func:`app.core.payload.template_fields`.

It never sees secrets or the environment. :func:`check` compiles a template at config load, so a
syntax error, or a name other than these three, names its TOML key (:func:`fields_read` lets the
config refuse a ``fields['key']`` the pipeline does not list); :func:`render` raises
:class:`TemplateRenderError` at run time, which the worker treats as a permanent action failure (the
message is kept).

Structured values (a ``respond_body`` table, Discord ``embeds``) are rendered leaf by leaf with
:func:`render_value`: every string inside is a template, the structure stays as written, so a value
rendered into JSON can never break the JSON around it; a string that is one ``{{ … }}`` and nothing
else keeps its value's JSON type (``true``, ``3``, ``null``, ``["a"]``), any other renders to a string.
Slack ``blocks`` (:func:`render_slack_blocks`) are strings throughout, as Slack's block fields are.
``escape="slack"`` (Slack ``text`` and the ``text`` of ``blocks``' text objects) writes ``&``, ``<``
and ``>`` of every ``{{ … }}`` value as ``&amp;``, ``&lt;``, ``&gt;``, so a value can never mention
``@channel`` or disguise a link; the template's own markup stays. ``escape="xml"`` autoescapes for TwiML and
other XML replies, and drops from each value the code points XML 1.0 does not allow (control
characters other than tab, LF and CR; U+FFFE, U+FFFF; lone surrogates), so the reply stays
well-formed; ``escape="url"`` percent-encodes every ``{{ … }}`` value as one URL path segment
(``/`` ``?`` ``#`` ``@`` included), so a value can never change the host or the path around it; a
rendered URL whose path has a ``.`` or ``..`` segment (a value ``..`` would climb out of its place once
the client or the receiver resolves it) is a render error.

Expressions (a pipeline's ``when``) use the same sandbox: :func:`check_expression` at config load,
:func:`evaluate` at run time; a name outside the allowed ones is refused at config load.
"""

from __future__ import annotations

import functools
import json
import re
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any, Literal
from urllib.parse import quote, unquote, urlsplit

from jinja2 import StrictUndefined, Template, TemplateError, meta, nodes
from jinja2.sandbox import ImmutableSandboxedEnvironment
from markupsafe import Markup

Escape = Literal["none", "xml", "url", "slack"]

#: The names every template sees (:meth:`TemplateContext.names`); any other name is refused at load.
TEMPLATE_NAMES = frozenset({"output", "event", "fields"})

#: Longest text one render may produce; longer is an error, not a truncation.
MAX_RENDERED_CHARS = 1_000_000


#: What a filter raises for values it cannot take (``truncate(-1)`` asserts; ``wordwrap(0)`` is a
#: ValueError): the template's fault, failing its action at once like a Jinja error, never retried.
_VALUE_ERRORS = (TypeError, ValueError, ArithmeticError, LookupError, AttributeError, AssertionError)


class TemplateRenderError(Exception):
    """A template failed at render time (an undefined name, a sandbox refusal, a filter error)."""


def _segment(value: Any) -> str:
    """One ``{{ … }}`` value of a URL template: a single percent-encoded path segment."""
    return quote(str(value), safe="")


#: Code points that XML 1.0 does not allow anywhere in a document (its ``Char`` production).
_NOT_XML = re.compile("[\x00-\x08\x0b\x0c\x0e-\x1f\ud800-\udfff\ufffe\uffff]")


def _xml_chars(value: Any) -> Any:
    """One ``{{ … }}`` value of an XML template, without the code points XML 1.0 does not allow
    (autoescaping then escapes ``&``, ``<``…); a value marked safe stays safe."""
    if isinstance(value, Markup):
        return Markup(_NOT_XML.sub("", str(value)))  # noqa: S704 - marked safe already; only code points dropped
    return _NOT_XML.sub("", value if isinstance(value, str) else str(value))


def _slack_chars(value: Any) -> Any:
    """One ``{{ … }}`` value of a Slack text: ``&``, ``<`` and ``>`` as the entities Slack decodes, so a
    value shows as written and can never be markup (``<!channel>``, ``<https://evil|shown>``, ``<@U1>``);
    a value marked safe (``| safe``) is markup on purpose and stays as it is."""
    if isinstance(value, Markup):
        return str(value)
    text = value if isinstance(value, str) else str(value)
    return text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")


def _env(autoescape: bool, finalize: Callable[[Any], Any] | None = None) -> ImmutableSandboxedEnvironment:
    env = ImmutableSandboxedEnvironment(
        undefined=StrictUndefined,
        autoescape=autoescape,
        keep_trailing_newline=True,
        auto_reload=False,
        finalize=finalize,
    )
    env.globals.clear()  # no range/lipsum/dict/cycler...: templates format data, they do not compute
    return env


_ENVS: dict[Escape, ImmutableSandboxedEnvironment] = {
    "none": _env(False),
    "xml": _env(True, _xml_chars),
    "url": _env(False, _segment),
    "slack": _env(False, _slack_chars),
}


@functools.lru_cache(maxsize=1024)
def _compile(source: str, escape: Escape) -> Template:
    return _ENVS[escape].from_string(source)


def check(source: str, escape: Escape = "none") -> None:
    """Compile ``source`` (for config validation); raises ``ValueError`` with Jinja's message, or when it
    reads a name a template never sees (``payload``, a misspelt ``ouput``), which would fail every render."""
    try:
        _compile(source, escape)
    except TemplateError as e:
        raise ValueError(f"template error: {e.message or e.__class__.__name__}") from None
    unknown = names_used(source) - TEMPLATE_NAMES
    if unknown:
        raise ValueError(
            f"template error: unknown name(s) {sorted(unknown)}; a template reads only {sorted(TEMPLATE_NAMES)}"
        )


def check_value(value: Any, escape: Escape = "none") -> None:
    """:func:`check` every string inside a nested structure of dicts and lists."""
    if isinstance(value, str):
        check(value, escape)
    elif isinstance(value, Mapping):
        for v in value.values():
            check_value(v, escape)
    elif isinstance(value, list | tuple):
        for v in value:
            check_value(v, escape)


def names_used(source: str) -> set[str]:
    """The top-level names a template reads (``output``, ``event``, ``fields``…); ValueError if invalid."""
    env = _ENVS["none"]
    try:
        return set(meta.find_undeclared_variables(env.parse(source)))
    except TemplateError as e:
        raise ValueError(f"template error: {e.message or e.__class__.__name__}") from None


def unquoted_in_json_strings(source: str) -> int:
    """How many ``{{ … }}`` of a template meant to render JSON sit between a string's quotes without
    ``| tojson``: ``{"text": "{{ output.reply }}"}`` breaks the JSON on every value holding a quote, a
    backslash or a newline (a model's answer often does). ``{"text": {{ output.reply | tojson }}}`` is
    the safe form. Heuristic: reads the template's literal text in order, counting unescaped quotes."""
    try:
        tree = _ENVS["none"].parse(source)
    except TemplateError:
        return 0
    inside, count = False, 0
    for output in tree.find_all(nodes.Output):
        for node in output.nodes:
            if isinstance(node, nodes.TemplateData):
                escaped = False
                for ch in node.data:
                    if escaped:
                        escaped = False
                    elif ch == "\\":
                        escaped = True
                    elif ch == '"':
                        inside = not inside
            elif inside and not _filtered_by(node, "tojson"):
                count += 1
    return count


def _filtered_by(node: nodes.Node, name: str) -> bool:
    return any(f.name == name for f in node.find_all(nodes.Filter)) or (
        isinstance(node, nodes.Filter) and node.name == name
    )


def fields_read(value: Any) -> set[str]:
    """The keys the templates in ``value`` (a string, or every string of a structure) read of ``fields``
    by a written-out key: ``fields['issue.number']``, ``fields.issue`` (not ``fields.get(…)``, nor
    anything in a template that assigns the name ``fields`` itself). ValueError if one is invalid."""
    if isinstance(value, Mapping):
        return set().union(*(fields_read(v) for v in value.values()))
    if isinstance(value, list | tuple):
        return set().union(*(fields_read(v) for v in value))
    if not isinstance(value, str):
        return set()
    try:
        tree = _ENVS["none"].parse(value)
    except TemplateError as e:
        raise ValueError(f"template error: {e.message or e.__class__.__name__}") from None
    names = [n for n in tree.find_all(nodes.Name) if n.name == "fields"]
    if any(n.ctx != "load" for n in names):  # {% set fields = … %}, a loop variable: not the context's
        return set()
    keys: set[str] = set()
    for node in tree.find_all((nodes.Getitem, nodes.Getattr)):
        if not isinstance(node, nodes.Getitem | nodes.Getattr):
            continue
        if not (isinstance(node.node, nodes.Name) and node.node.name == "fields"):
            continue
        if isinstance(node, nodes.Getattr) and not hasattr(dict, node.attr):  # fields.items is the method
            keys.add(node.attr)
        elif isinstance(node, nodes.Getitem) and isinstance(node.arg, nodes.Const) and isinstance(node.arg.value, str):
            keys.add(node.arg.value)
    return keys


@functools.lru_cache(maxsize=1024)
def _compile_expression(source: str) -> Callable[..., Any]:
    return _ENVS["none"].compile_expression(source, undefined_to_none=False)


def check_expression(source: str, allowed: Iterable[str]) -> None:
    """Compile an expression (``payload.amount > 100 and event.type == "x"``); ValueError if it is
    invalid or reads a name outside ``allowed``."""
    if not source.strip():
        raise ValueError("expression is empty")
    try:
        _compile_expression(source)
        used = set(meta.find_undeclared_variables(_ENVS["none"].parse("{{ (" + source + ") }}")))
    except TemplateError as e:
        raise ValueError(f"expression error: {e.message or e.__class__.__name__}") from None
    unknown = used - set(allowed)
    if unknown:
        raise ValueError(f"expression error: unknown name(s) {sorted(unknown)}; use {sorted(allowed)}")


def evaluate(source: str, names: Mapping[str, Any]) -> Any:
    """Evaluate an expression in the sandbox; raises :class:`TemplateRenderError` (a missing key
    included: names are strict)."""
    try:
        return _compile_expression(source)(**names)
    except TemplateError as e:
        raise TemplateRenderError(f"expression error: {e.message or e.__class__.__name__}") from None
    except _VALUE_ERRORS as e:
        raise TemplateRenderError(f"expression error: {e.__class__.__name__}: {e}") from None


@dataclass(frozen=True)
class TemplateContext:
    """What a template sees. Build it from the event row, the trimmed fields and the output."""

    output: Any
    event: Mapping[str, Any]
    fields: Mapping[str, Any] = field(default_factory=dict)

    @classmethod
    def of(
        cls,
        *,
        output: Any,
        event_id: int,
        source: str,
        event_type: str | None,
        tenant: str | None,
        occurred_at: Any,
        fields: Mapping[str, Any] | None = None,
    ) -> TemplateContext:
        when = occurred_at.isoformat() if hasattr(occurred_at, "isoformat") else occurred_at
        event = {"id": event_id, "source": source, "type": event_type, "tenant": tenant, "occurred_at": when}
        return cls(output=output, event=event, fields=dict(fields or {}))

    def names(self) -> dict[str, Any]:
        return {"output": self.output, "event": dict(self.event), "fields": dict(self.fields)}


def render(source: str, ctx: TemplateContext, escape: Escape = "none") -> str:
    """Render one template; raises :class:`TemplateRenderError` with Jinja's message."""
    try:
        text = _compile(source, escape).render(ctx.names())
    except TemplateError as e:
        raise TemplateRenderError(f"template error: {e.message or e.__class__.__name__}") from None
    except _VALUE_ERRORS as e:
        raise TemplateRenderError(f"template error: {e.__class__.__name__}: {e}") from None
    if len(text) > MAX_RENDERED_CHARS:
        raise TemplateRenderError(f"template error: rendered text is longer than {MAX_RENDERED_CHARS} characters")
    if escape == "url":
        _refuse_dot_segments(text)
    return text


def _refuse_dot_segments(url: str) -> None:
    """``.`` and ``..`` path segments (also percent-encoded, as ``%2E%2E``) are resolved away by HTTP
    clients and many servers: ``/tenants/../users`` is ``/users``. No URL template needs one."""
    try:
        path = urlsplit(url).path
    except ValueError as e:
        raise TemplateRenderError(f"template error: the rendered URL is not a URL ({e})") from None
    if any(unquote(segment) in (".", "..") for segment in path.split("/")):
        raise TemplateRenderError(
            "template error: the rendered URL's path has a '.' or '..' segment, which would change the path around it"
        )


def render_slack_blocks(value: Any, ctx: TemplateContext) -> Any:
    """Slack ``blocks``: the ``text`` of every text object (``mrkdwn`` or ``plain_text``) rendered with
    ``escape="slack"``; every other string (a button's ``url``, an ``image_url``, a ``value``) as it is."""
    if isinstance(value, Mapping):
        return {
            k: render(v, ctx, "slack") if k == "text" and isinstance(v, str) else render_slack_blocks(v, ctx)
            for k, v in value.items()
        }
    if isinstance(value, list | tuple):
        return [render_slack_blocks(v, ctx) for v in value]
    return render(value, ctx) if isinstance(value, str) else value


#: A template that is one ``{{ … }}`` and nothing else but whitespace (:func:`_whole_expression`).
_WHOLE = re.compile(r"\s*\{\{-?(.*?)-?\}\}\s*", re.S)


@functools.lru_cache(maxsize=1024)
def _whole_expression(source: str) -> str | None:
    """The expression of a template that is exactly one ``{{ … }}`` (whitespace around it allowed);
    None for any other template (text around or between expressions, a ``{% … %}``)."""
    found = _WHOLE.fullmatch(source)
    if found is None:
        return None
    try:
        body = _ENVS["none"].parse(source).body
        _compile_expression(found.group(1))
    except Exception:  # not one expression after all: rendered as a string
        return None
    if len(body) != 1 or not isinstance(body[0], nodes.Output):
        return None
    parts = [n for n in body[0].nodes if not (isinstance(n, nodes.TemplateData) and not n.data.strip())]
    return found.group(1) if len(parts) == 1 and not isinstance(parts[0], nodes.TemplateData) else None


def _native(source: str, ctx: TemplateContext, escape: Escape) -> tuple[bool, Any]:
    """``(True, value)`` when ``source`` is one ``{{ … }}`` whose value is JSON other than a string (a
    bool, a number, null, a list, an object), copied through JSON; ``(False, None)`` otherwise (a
    string, a date, an undefined name, an error: :func:`render` writes it or reports it, as before).
    Under an escape only a scalar is kept: a list's strings would skip the escaping."""
    expression = _whole_expression(source)
    if expression is None:
        return False, None
    try:
        value = _compile_expression(expression)(**ctx.names())
    except Exception:  # render reports it; compile_expression also fails on some constants ('nan'|float)
        return False, None
    if isinstance(value, str) or (escape != "none" and isinstance(value, list | tuple | Mapping)):
        return False, None
    try:
        text = json.dumps(value, allow_nan=False)
    except (TypeError, ValueError, RecursionError):
        return False, None
    if len(text) > MAX_RENDERED_CHARS:
        raise TemplateRenderError(f"template error: rendered text is longer than {MAX_RENDERED_CHARS} characters")
    return True, json.loads(text)


def render_value(value: Any, ctx: TemplateContext, escape: Escape = "none") -> Any:
    """Render every string inside a nested structure; other values pass through unchanged. A string that
    is one ``{{ … }}`` (whitespace around it allowed) keeps its value's JSON type: ``"{{ output.flag }}"``
    is ``True``, not ``"True"`` (:func:`_native`); any other string renders to a string."""
    if isinstance(value, str):
        native, result = _native(value, ctx, escape)
        return result if native else render(value, ctx, escape)
    if isinstance(value, Mapping):
        return {k: render_value(v, ctx, escape) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [render_value(v, ctx, escape) for v in value]
    return value
