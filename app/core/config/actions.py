"""``[[pipelines.NAME.actions]]``: what happens with a validated answer.

Every text an action renders is a template of :mod:`app.core.templates`, compiled here so that an
error names its key (``pipelines.X.actions.0.text: template error: …``). Secrets are never in the
file: actions name environment variables (``*_env``, ``headers.X.env``).
"""

from __future__ import annotations

import re
from typing import Annotated, Any, Literal
from urllib.parse import urlsplit

from pydantic import Field, field_validator, model_validator

from app.core import templates
from app.core.config._base import TARGET, Strict, check_env_name
from app.core.config.followups import DiscordFollowupAction, SlackResponseAction

#: Names a template that picks an action's target (an http ``url``, an email's ``to``) may read: the
#: event and the payload fields, never the model's output (an injected payload must not steer it).
URL_NAMES = frozenset({"event", "fields"})
HEADER_NAME = re.compile(r"^[!#$%&'*+.^_`|~0-9A-Za-z-]+$")
#: ``schema.function``, lower-case identifiers (what Postgres stores for unquoted names).
FUNCTION = re.compile(r"^[a-z_][a-z0-9_$]{0,62}\.[a-z_][a-z0-9_$]{0,62}$")


def _template(v: str | None) -> str | None:
    if v is not None:
        templates.check(v)
    return v


class EnvHeader(Strict):
    """``{ env = "GITHUB_TOKEN", prefix = "Bearer " }``: a header value read from the environment."""

    env: str
    prefix: str = ""

    @field_validator("env")
    @classmethod
    def _env(cls, v: str) -> str:
        return check_env_name(v)


class HttpAction(Strict):
    """Signed JSON POST of the answer (``url_env``), or a call back to an API (``url`` template)."""

    type: Literal["http"]
    name: str | None = None
    url_env: str | None = None
    url: str | None = None
    method: Literal["GET", "POST", "PUT", "PATCH", "DELETE"] = "POST"
    secret_env: str | None = None
    timeout_seconds: float | None = Field(default=None, gt=0)
    headers: dict[str, str | EnvHeader] = Field(default_factory=dict)
    body: str | None = None

    @property
    def declares_json(self) -> bool:
        """Whether its body goes out as JSON: the default ``Content-Type``, or a configured one naming
        JSON (``application/merge-patch+json``); one read from the environment is taken to."""
        for name, value in self.headers.items():
            if name.lower() == "content-type":
                return isinstance(value, EnvHeader) or "json" in value.lower()
        return True

    @field_validator("url_env", "secret_env")
    @classmethod
    def _env_names(cls, v: str | None) -> str | None:
        return None if v is None else check_env_name(v)

    @field_validator("method", mode="before")
    @classmethod
    def _upper(cls, v: Any) -> Any:
        return v.upper() if isinstance(v, str) else v

    @field_validator("url")
    @classmethod
    def _url(cls, v: str | None) -> str | None:
        if v is None:
            return v
        templates.check(v, "url")
        bad = templates.names_used(v) - URL_NAMES
        if bad:
            raise ValueError(
                f"a url template may use only {sorted(URL_NAMES)} (never the model's output); it uses {sorted(bad)}"
            )
        fixed_origin(v)
        return v

    @field_validator("headers")
    @classmethod
    def _headers(cls, v: dict[str, str | EnvHeader]) -> dict[str, str | EnvHeader]:
        for key in v:
            if not HEADER_NAME.match(key):
                raise ValueError(f"{key!r} is not an HTTP header name")
        return v

    @field_validator("body")
    @classmethod
    def _body(cls, v: str | None) -> str | None:
        return _template(v)

    @model_validator(mode="after")
    def _one_url(self) -> HttpAction:
        if (self.url is None) == (self.url_env is None):
            raise ValueError("set exactly one of url (a template) or url_env")
        if self.body is not None and self.method in ("GET", "DELETE"):
            raise ValueError(f"body: a {self.method} request carries no body")
        return self


def fixed_origin(url_template: str) -> str:
    """``scheme://host[:port]`` of a URL template; the part before the first placeholder must fix it."""
    literal = re.split(r"\{[{%#]", url_template, maxsplit=1)[0]
    parts = urlsplit(literal)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise ValueError("url must start with http:// or https:// and a host written out (no placeholder)")
    if "{" in url_template and not (parts.path.startswith("/") or "?" in literal):
        raise ValueError("url: placeholders may appear only after the host and the '/' that ends it")
    if parts.username or parts.password:
        raise ValueError("url: no credentials in the URL (use headers = { X = { env = ... } })")
    return f"{parts.scheme}://{parts.netloc.lower()}"


class LogAction(Strict):
    type: Literal["log"]
    name: str | None = None
    level: Literal["debug", "info", "warning", "error"] = "info"


class PythonAction(Strict):
    type: Literal["python"]
    name: str | None = None
    target: str

    @field_validator("target")
    @classmethod
    def _target(cls, v: str) -> str:
        if not TARGET.match(v):
            raise ValueError("target must look like 'package.module:function'")
        return v


class SlackAction(Strict):
    """A message through an incoming webhook (``webhook_url_env``) or ``chat.postMessage``."""

    type: Literal["slack"]
    name: str | None = None
    webhook_url_env: str | None = None
    token_env: str | None = None
    channel: str | None = None
    text: str
    blocks: list[dict[str, Any]] | None = None
    timeout_seconds: float | None = Field(default=None, gt=0)

    @field_validator("webhook_url_env", "token_env")
    @classmethod
    def _env_names(cls, v: str | None) -> str | None:
        return None if v is None else check_env_name(v)

    @field_validator("text")
    @classmethod
    def _text(cls, v: str) -> str:
        templates.check(v)
        return v

    @field_validator("blocks")
    @classmethod
    def _blocks(cls, v: list[dict[str, Any]] | None) -> list[dict[str, Any]] | None:
        templates.check_value(v)
        return v

    @model_validator(mode="after")
    def _one_way(self) -> SlackAction:
        if (self.webhook_url_env is None) == (self.token_env is None):
            raise ValueError("set exactly one of webhook_url_env (incoming webhook) or token_env (chat.postMessage)")
        if self.token_env is not None and not self.channel:
            raise ValueError("channel: chat.postMessage (token_env) needs a channel")
        if self.webhook_url_env is not None and self.channel:
            raise ValueError("channel: an incoming webhook posts to its own channel; remove channel")
        return self


class EmailAction(Strict):
    """One message over SMTP (``smtp_url_env``: ``smtp://``, ``smtp+starttls://`` or ``smtps://``)."""

    type: Literal["email"]
    name: str | None = None
    smtp_url_env: str
    from_: str = Field(alias="from")
    to: str | list[str]
    subject: str
    body: str
    timeout_seconds: float | None = Field(default=None, gt=0)

    @field_validator("smtp_url_env")
    @classmethod
    def _env_name(cls, v: str) -> str:
        return check_env_name(v)

    @field_validator("from_")
    @classmethod
    def _from(cls, v: str) -> str:
        if "@" not in v or any(c in v for c in "\r\n{}"):
            raise ValueError("from must be an email address written out (no template)")
        return v

    @field_validator("to")
    @classmethod
    def _to(cls, v: str | list[str]) -> str | list[str]:
        items = [v] if isinstance(v, str) else v
        if not items:
            raise ValueError("to: at least one address")
        for item in items:
            templates.check(item)
            bad = templates.names_used(item) - URL_NAMES
            if bad:
                raise ValueError(
                    f"a to template may use only {sorted(URL_NAMES)} (never the model's output: the answer "
                    f"never picks a recipient); it uses {sorted(bad)}"
                )
        return v

    @field_validator("subject", "body")
    @classmethod
    def _texts(cls, v: str) -> str:
        templates.check(v)
        return v


class SqlAction(Strict):
    """``function = "crm.apply_lead_score"``: called as ``(event_id bigint, output jsonb)`` in the
    transaction that records the action run as succeeded (exactly once)."""

    type: Literal["sql"]
    name: str | None = None
    function: str
    timeout_seconds: float | None = Field(default=None, gt=0)

    @field_validator("function")
    @classmethod
    def _function(cls, v: str) -> str:
        if not FUNCTION.match(v):
            raise ValueError("function must be a schema-qualified lower-case name, like 'crm.apply_lead_score'")
        return v


Action = Annotated[
    HttpAction
    | LogAction
    | PythonAction
    | SlackAction
    | EmailAction
    | SqlAction
    | SlackResponseAction
    | DiscordFollowupAction,
    Field(discriminator="type"),
]

#: The keys of each action type whose strings are templates (every string inside ``blocks``, ``embeds``).
TEMPLATE_KEYS: dict[str, tuple[str, ...]] = {
    "http": ("url", "body"),
    "log": (),
    "python": (),
    "slack": ("text", "blocks"),
    "email": ("to", "subject", "body"),
    "sql": (),
    "slack_response": ("text", "blocks"),
    "discord_followup": ("content", "embeds"),
}
