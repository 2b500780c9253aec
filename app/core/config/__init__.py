"""hookline.toml: sources (who may send what) and pipelines (what Claude does with it).

Loaded once per process into typed, frozen models. Errors name the exact key
(``sources.stripe.provider: unknown provider 'strpe' (did you mean 'stripe'?)``). Secrets never live in
the file: it names environment variables, resolved through the mapping the settings object provides.
"""

from __future__ import annotations

import tomllib
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from pydantic import Field, ValidationError, model_validator

from app.core import templates
from app.core.config._base import NAME, Strict, import_problem, resolve_target
from app.core.config._errors import NAMED_BY_KEY, did_you_mean, error_lines
from app.core.config.actions import (
    Action,
    EmailAction,
    EnvHeader,
    HttpAction,
    LogAction,
    PythonAction,
    SlackAction,
    SqlAction,
)
from app.core.config.followups import FOLLOWUP_TYPES
from app.core.config.limits import Breaker, ModelLimits, Prices, RateLimit, Tenant
from app.core.config.outputs import output_model_problem
from app.core.config.pipelines import Pipeline, RetryPolicy
from app.core.config.respond import check_sync_overlaps
from app.core.config.schedules import SCHEDULE_SOURCE, Schedule
from app.core.config.sources import Source
from app.core.errors import ConfigError
from app.core.smtpurl import smtp_url_problem
from app.core.watchspec import WatchSpec
from app.signatures import PROVIDERS

__all__ = [
    "SCHEDULE_SOURCE",
    "Action",
    "Breaker",
    "Config",
    "EmailAction",
    "EnvHeader",
    "HttpAction",
    "LogAction",
    "ModelLimits",
    "Pipeline",
    "Prices",
    "PythonAction",
    "RateLimit",
    "RetryPolicy",
    "Schedule",
    "SlackAction",
    "Source",
    "SqlAction",
    "Tenant",
    "environment_problems",
    "load_config",
    "parse_config",
    "resolve_target",
]


#: What a pipeline's ``source`` may name besides a ``[sources.NAME]``: ``[[watch]]`` tables, schedules.
BUILT_IN_SOURCES = ("db", SCHEDULE_SOURCE)
#: What :meth:`Config.model_limits` answers for a model without ``[models."MODEL"]``.
_NO_LIMITS = ModelLimits()


class Config(Strict):
    sources: dict[str, Source] = Field(default_factory=dict)
    pipelines: dict[str, Pipeline] = Field(default_factory=dict)
    schedules: dict[str, Schedule] = Field(default_factory=dict)
    watch: tuple[WatchSpec, ...] = ()
    tenants: dict[str, Tenant] = Field(default_factory=dict)
    models: dict[str, ModelLimits] = Field(default_factory=dict)
    alerts: tuple[Action, ...] = ()

    @model_validator(mode="before")
    @classmethod
    def _names(cls, data: Any) -> Any:
        if isinstance(data, dict):
            for section in NAMED_BY_KEY:
                items = data.get(section)
                if isinstance(items, dict):
                    for key, value in items.items():
                        if not NAME.match(key):
                            raise ValueError(f"{section}.{key}: names are letters, digits, '_', '-', '.' (max 64)")
                        if isinstance(value, dict):
                            if value.get("name", key) != key:  # a table's name is its key, nothing else
                                raise ValueError(f"{section}.{key}.name: unknown key (the table's name is its key)")
                            value["name"] = key
        return data

    @model_validator(mode="after")
    def _refs(self) -> Config:
        for name, p in self.pipelines.items():
            if p.source not in self.sources and p.source not in BUILT_IN_SOURCES:
                hint = did_you_mean(p.source, [*self.sources, *BUILT_IN_SOURCES])
                raise ValueError(f"pipelines.{name}.source: no [sources.{p.source}] is defined{hint}")
        if SCHEDULE_SOURCE in self.sources:
            raise ValueError(f"sources.{SCHEDULE_SOURCE}: the name is reserved for [schedules] firings")
        if "db" in self.sources:  # its webhooks would pass for row changes, their delivery ids collide
            raise ValueError(
                "sources.db: the name is reserved for the row events of watched tables ([[watch]], hookline.watch()); "
                "keep a column out of them with exclude_columns"
            )
        for name, sched in self.schedules.items():
            target = self.pipelines.get(sched.pipeline)
            if target is None:
                hint = did_you_mean(sched.pipeline, self.pipelines) if self.pipelines else ""
                raise ValueError(f"schedules.{name}.pipeline: no [pipelines.{sched.pipeline}] is defined{hint}")
            if target.source != SCHEDULE_SOURCE:
                raise ValueError(
                    f"schedules.{name}.pipeline: pipelines.{sched.pipeline} must have source = {SCHEDULE_SOURCE!r}"
                )
            for source in sched.filter.source:  # a digest of a source no event can have is always empty
                if source not in self.sources and source not in BUILT_IN_SOURCES:
                    hint = did_you_mean(source, [*self.sources, *BUILT_IN_SOURCES])
                    raise ValueError(f"schedules.{name}.filter.source: no [sources.{source}] is defined{hint}")
        for i, alert in enumerate(self.alerts):
            if alert.type in FOLLOWUP_TYPES:  # it needs the event's own request to answer
                raise ValueError(
                    f"alerts.{i}.type: {alert.type} answers the Slack or Discord request of an event, and an "
                    "alert has none; use slack (or http) to post an alert"
                )
        for name, m in self.models.items():
            if m.fallback == name:
                raise ValueError(f"models.{name}.fallback: a model cannot fall back to itself")
        check_sync_overlaps(self.pipelines)
        return self

    def tenant(self, name: str | None) -> Tenant:
        """The caps of one tenant: its own ``[tenants.NAME]`` keys over ``[tenants."*"]``."""
        defaults = self.tenants.get("*", Tenant())
        own = self.tenants.get(name or "") if name != "*" else None
        return own.merged_over(defaults) if own is not None else defaults

    def model_limits(self, model: str) -> ModelLimits:
        """``[models."MODEL"]``, else no limits (one shared instance: the model is frozen, and a model
        call asks for it four times)."""
        return self.models.get(model) or _NO_LIMITS

    def priority_for(self, source: str, event_type: str | None) -> int:
        """procrastinate job priority of an event: the highest of the pipelines it matches (0 if none)."""
        return max((p.priority for p in self.pipelines_for(source, event_type)), default=0)

    def pipelines_for(self, source: str, event_type: str | None) -> list[Pipeline]:
        if source == SCHEDULE_SOURCE:  # a firing goes to the pipeline its schedule names, only
            sched = self.schedules.get(event_type or "")
            return [self.pipelines[sched.pipeline]] if sched is not None else []
        return [p for p in self.pipelines.values() if p.matches(source, event_type)]

    def sync_pipeline_for(self, source: str, event_type: str | None) -> Pipeline | None:
        """The one ``respond = "sync"`` pipeline that answers this request, if any."""
        return next((p for p in self.pipelines.values() if p.sync and p.matches(source, event_type)), None)

    def ordering_locators(self, source: str) -> tuple[str, ...] | None:
        """The source's ordering key, else the first pipeline of that source that names one."""
        src = self.sources.get(source)
        if src is not None and src.ordering_key:
            return src.ordering_key
        for p in self.pipelines.values():
            if p.source == source and p.ordering_key:
                return p.ordering_key
        return None


def parse_config(data: Mapping[str, Any]) -> Config:
    try:
        return Config.model_validate(dict(data))
    except ValidationError as e:
        raise ConfigError("\n".join(error_lines(Config, e.errors()))) from None


def load_config(path: Path) -> Config:
    """Read and validate hookline.toml. A missing file is an empty config (no sources)."""
    if not path.exists():
        return Config()
    try:
        data = tomllib.loads(path.read_text(encoding="utf-8"))
    except tomllib.TOMLDecodeError as e:
        raise ConfigError(f"{path}: not valid TOML: {e}") from None
    return parse_config(data)


def environment_problems(config: Config, environ: Mapping[str, str], public_url: str | None = None) -> list[str]:
    """What `hookline check` reports about the environment the file names (never the values)."""
    problems: list[str] = []
    for name, src in config.sources.items():
        if not src.secrets(environ):
            problems.append(
                f"sources.{name}.secrets_env: none of {list(src.secrets_env)} is set; every request will get 401"
            )
        if PROVIDERS[src.provider].url_bound and not (src.public_url or public_url):
            problems.append(
                f"sources.{name}.public_url: provider {src.provider} signs the URL; "
                "set public_url (or HOOKLINE_PUBLIC_URL)"
            )
    for name, p in config.pipelines.items():
        for i, action in enumerate(p.actions):
            problems += _action_problems(f"pipelines.{name}.actions.{i}", action, environ)
        if p.output_model:
            err = import_problem(p.output_model) or output_model_problem(p.output_model)
            if err:
                problems.append(f"pipelines.{name}.output_model: {err}")
    for i, action in enumerate(config.alerts):
        problems += _action_problems(f"alerts.{i}", action, environ)
    return problems


def _action_problems(where: str, action: Action, environ: Mapping[str, str]) -> list[str]:
    """An action's unset variables, a bad SMTP URL, a ``python`` target that does not import."""
    problems: list[str] = []
    for key, env in _action_envs(action):
        if not environ.get(env):
            problems.append(f"{where}.{key}: {env} is not set")
        elif key == "smtp_url_env" and (bad := smtp_url_problem(environ[env], env)):
            problems.append(f"{where}.{key}: {bad}")
    if isinstance(action, PythonAction) and (err := import_problem(action.target)):
        problems.append(f"{where}.target: {err}")
    if isinstance(action, HttpAction) and (bad := _json_body_problem(action)):
        problems.append(f"{where}.body: {bad}")
    return problems


def _json_body_problem(action: HttpAction) -> str | None:
    """A body sent as JSON that puts values between a string's quotes without ``| tojson``."""
    n = templates.unquoted_in_json_strings(action.body) if action.body and action.declares_json else 0
    if not n:
        return None
    return (
        f"{n} value(s) put between a JSON string's quotes without | tojson: a value holding a quote or a "
        'newline breaks the JSON and fails the action; write {"text": {{ output.reply | tojson }}} (no quotes '
        "around it)"
    )


def _action_envs(action: Action) -> list[tuple[str, str]]:
    """``(key, environment variable)`` pairs an action needs at run time."""
    pairs: list[tuple[str, str]] = []
    if isinstance(action, HttpAction):
        if action.url_env:
            pairs.append(("url_env", action.url_env))
        if action.secret_env:
            pairs.append(("secret_env", action.secret_env))
        pairs += [(f"headers.{h}.env", v.env) for h, v in action.headers.items() if isinstance(v, EnvHeader)]
    elif isinstance(action, SlackAction):
        named = (("webhook_url_env", action.webhook_url_env), ("token_env", action.token_env))
        pairs += [(k, v) for k, v in named if v]
    elif isinstance(action, EmailAction):
        pairs.append(("smtp_url_env", action.smtp_url_env))
    return pairs
