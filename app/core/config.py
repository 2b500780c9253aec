"""hookline.toml: sources (who may send what) and pipelines (what Claude does with it).

Loaded once per process into typed, frozen models. Errors name the exact key
(``sources.stripe.provider: unknown provider 'strpe' (did you mean 'stripe'?)``). Secrets never live in
the file: it names environment variables, resolved through the mapping the settings object provides.
"""

from __future__ import annotations

import difflib
import importlib
import random
import re
import tomllib
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Annotated, Any, Literal

import jsonschema
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from app.core.errors import ConfigError
from app.core.watchspec import WatchSpec
from app.signatures import PROVIDERS, HmacOptions, parse_locator

_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$")
_ENV = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")
_LOCATOR_KEYS = ("delivery_id", "event_type", "occurred_at", "tenant", "ordering_key")


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


def _check_env_name(v: str) -> str:
    if not _ENV.match(v):
        raise ValueError(f"{v!r} is not an environment variable name")
    return v


def _check_locators(v: str | list[str] | None) -> tuple[str, ...] | None:
    if v is None:
        return None
    items = [v] if isinstance(v, str) else list(v)
    for item in items:
        parse_locator(item)
    return tuple(items)


class Source(_Strict):
    """``[sources.NAME]``: one sender endpoint, ``POST /webhooks/NAME``."""

    name: str = ""
    provider: str
    secrets_env: tuple[str, ...] = ()
    tolerance_seconds: int | None = Field(default=None, ge=0)
    max_body_bytes: int | None = Field(default=None, gt=0)
    public_url: str | None = None
    delivery_id: tuple[str, ...] | None = None
    event_type: tuple[str, ...] | None = None
    occurred_at: tuple[str, ...] | None = None
    tenant: tuple[str, ...] | None = None
    ordering_key: tuple[str, ...] | None = None
    content_hash_ids: bool = False
    verify_token_env: str | None = None
    signing_key_env: str | None = None
    hmac: dict[str, Any] | None = None

    @field_validator("provider")
    @classmethod
    def _provider(cls, v: str) -> str:
        if v not in PROVIDERS:
            close = difflib.get_close_matches(v, list(PROVIDERS), n=1)
            hint = f" (did you mean {close[0]!r}?)" if close else f"; one of: {', '.join(sorted(PROVIDERS))}"
            raise ValueError(f"unknown provider {v!r}{hint}")
        return v

    @field_validator("secrets_env", mode="before")
    @classmethod
    def _secrets_env(cls, v: Any) -> Any:
        return [v] if isinstance(v, str) else v

    @field_validator("secrets_env")
    @classmethod
    def _secrets_env_names(cls, v: tuple[str, ...]) -> tuple[str, ...]:
        for name in v:
            _check_env_name(name)
        return v

    @field_validator("verify_token_env", "signing_key_env")
    @classmethod
    def _env_name(cls, v: str | None) -> str | None:
        return None if v is None else _check_env_name(v)

    @field_validator(*_LOCATOR_KEYS, mode="before")
    @classmethod
    def _locators(cls, v: Any) -> Any:
        return _check_locators(v)

    @field_validator("public_url")
    @classmethod
    def _url(cls, v: str | None) -> str | None:
        if v is not None and not re.match(r"^https?://", v):
            raise ValueError("must be an absolute http(s) URL")
        return v

    @model_validator(mode="after")
    def _provider_options(self) -> Source:
        if self.provider == "hmac":
            if self.hmac is None:
                raise ValueError("provider 'hmac' needs an [sources.NAME.hmac] table (header, algorithm, …)")
            try:
                HmacOptions.from_mapping(self.hmac)
            except ValueError as e:
                raise ValueError(f"hmac: {e}") from None
        elif self.hmac is not None:
            raise ValueError("the hmac table is only for provider = 'hmac'")
        if not self.secrets_env:
            raise ValueError("secrets_env: name at least one environment variable holding the signing secret")
        return self

    def overrides(self) -> dict[str, tuple[str, ...]]:
        """Per-source locator overrides for app.signatures.extract_meta."""
        return {
            k: v for k in ("delivery_id", "event_type", "occurred_at", "tenant") if (v := getattr(self, k)) is not None
        }

    def secrets(self, environ: Mapping[str, str]) -> list[str]:
        """The configured secrets that are set (rotation: any may match), in file order."""
        return [environ[n] for n in self.secrets_env if environ.get(n)]

    def hmac_options(self) -> HmacOptions | None:
        return HmacOptions.from_mapping(self.hmac) if self.hmac is not None else None


class HttpAction(_Strict):
    type: Literal["http"]
    name: str | None = None
    url_env: str
    secret_env: str | None = None
    timeout_seconds: float | None = Field(default=None, gt=0)
    headers: dict[str, str] = Field(default_factory=dict)

    @field_validator("url_env", "secret_env")
    @classmethod
    def _env_names(cls, v: str | None) -> str | None:
        return None if v is None else _check_env_name(v)


class LogAction(_Strict):
    type: Literal["log"]
    name: str | None = None
    level: Literal["debug", "info", "warning", "error"] = "info"


class PythonAction(_Strict):
    type: Literal["python"]
    name: str | None = None
    target: str

    @field_validator("target")
    @classmethod
    def _target(cls, v: str) -> str:
        if not re.match(r"^[A-Za-z_][\w.]*:[A-Za-z_]\w*$", v):
            raise ValueError("target must look like 'package.module:function'")
        return v


Action = Annotated[HttpAction | LogAction | PythonAction, Field(discriminator="type")]


class RetryPolicy(_Strict):
    """``[pipelines.NAME.retry]``: attempts in all (first run included) and exponential backoff."""

    max_attempts: int = Field(default=5, ge=1, le=100)
    backoff_seconds: float = Field(default=2.0, ge=0)
    max_backoff_seconds: float = Field(default=300.0, ge=0)
    jitter: bool = True

    def delay(self, attempt: int, retry_after: float | None = None) -> float:
        """Seconds before the next run after ``attempt`` runs failed; ``retry_after`` is a floor."""
        base = min(self.max_backoff_seconds, self.backoff_seconds * (2 ** max(0, attempt - 1)))
        if self.jitter:
            base = base * (0.5 + random.random() / 2)
        if retry_after is not None:
            base = max(base, min(retry_after, self.max_backoff_seconds))
        return float(base)


class Pipeline(_Strict):
    """``[pipelines.NAME]``: which events go to which prompt, and what happens with the answer."""

    name: str = ""
    source: str
    events: tuple[str, ...] = ("*",)
    fields: tuple[str, ...] = ()
    model: str = "claude-haiku-5-5"
    instructions: str
    system: str | None = None
    output_schema: dict[str, Any] | None = None
    output_model: str | None = None
    max_tokens: int = Field(default=1024, gt=0, le=64000)
    ordering_key: tuple[str, ...] | None = None
    timeout_seconds: float = Field(default=120.0, gt=0)
    retry: RetryPolicy = Field(default_factory=RetryPolicy)
    latest_wins: bool = False
    history: int = Field(default=0, ge=0, le=50)
    actions: tuple[Action, ...] = ()

    @field_validator("events", "fields", mode="before")
    @classmethod
    def _listify(cls, v: Any) -> Any:
        return [v] if isinstance(v, str) else v

    @field_validator("ordering_key", mode="before")
    @classmethod
    def _locators(cls, v: Any) -> Any:
        return _check_locators(v)

    @field_validator("output_model")
    @classmethod
    def _model_path(cls, v: str | None) -> str | None:
        if v is not None and not re.match(r"^[A-Za-z_][\w.]*:[A-Za-z_]\w*$", v):
            raise ValueError("output_model must look like 'package.module:ClassName'")
        return v

    @field_validator("output_schema")
    @classmethod
    def _schema(cls, v: dict[str, Any] | None) -> dict[str, Any] | None:
        if v is not None and v.get("type") != "object":
            raise ValueError("output_schema must be a JSON Schema whose type is 'object'")
        if v is not None:
            try:
                jsonschema.Draft202012Validator.check_schema(v)
            except jsonschema.SchemaError as e:
                where = "/".join(str(p) for p in e.absolute_path) or "(root)"
                raise ValueError(f"not a valid JSON Schema at {where}: {e.message}") from None
        return v

    @model_validator(mode="after")
    def _one_output(self) -> Pipeline:
        if (self.output_schema is None) == (self.output_model is None):
            raise ValueError("set exactly one of output_schema or output_model")
        names = [a.name for a in self.actions if a.name]
        dupes = {n for n in names if names.count(n) > 1}
        if dupes:
            raise ValueError(f"actions: duplicate action name(s) {sorted(dupes)}")
        return self

    def matches(self, source: str, event_type: str | None) -> bool:
        if source != self.source:
            return False
        return any(p == "*" or (event_type is not None and _glob(p, event_type)) for p in self.events)

    def action_key(self, index: int) -> str:
        action = self.actions[index]
        return action.name or f"{action.type}#{index}"


def _glob(pattern: str, value: str) -> bool:
    """``invoice.*`` matches ``invoice.paid``; exact otherwise."""
    if pattern.endswith(".*"):
        return value.startswith(pattern[:-1])
    return pattern == value


class Config(_Strict):
    sources: dict[str, Source] = Field(default_factory=dict)
    pipelines: dict[str, Pipeline] = Field(default_factory=dict)
    watch: tuple[WatchSpec, ...] = ()

    @model_validator(mode="before")
    @classmethod
    def _names(cls, data: Any) -> Any:
        if isinstance(data, dict):
            for section in ("sources", "pipelines"):
                items = data.get(section)
                if isinstance(items, dict):
                    for key, value in items.items():
                        if not _NAME.match(key):
                            raise ValueError(f"{section}.{key}: names are letters, digits, '_', '-', '.' (max 64)")
                        if isinstance(value, dict):
                            value.setdefault("name", key)
        return data

    @model_validator(mode="after")
    def _refs(self) -> Config:
        for name, p in self.pipelines.items():
            if p.source not in self.sources and p.source != "db":
                raise ValueError(f"pipelines.{name}.source: no [sources.{p.source}] is defined")
        return self

    def pipelines_for(self, source: str, event_type: str | None) -> list[Pipeline]:
        return [p for p in self.pipelines.values() if p.matches(source, event_type)]

    def ordering_locators(self, source: str) -> tuple[str, ...] | None:
        """The source's ordering key, else the first pipeline of that source that names one."""
        src = self.sources.get(source)
        if src is not None and src.ordering_key:
            return src.ordering_key
        for p in self.pipelines.values():
            if p.source == source and p.ordering_key:
                return p.ordering_key
        return None


def _loc(loc: Sequence[int | str]) -> str:
    return ".".join(str(part) for part in loc if part not in ("function-after", "function-before"))


def parse_config(data: Mapping[str, Any]) -> Config:
    try:
        return Config.model_validate(dict(data))
    except ValidationError as e:
        lines = []
        for err in e.errors():
            where = _loc(err["loc"])
            msg = err["msg"].removeprefix("Value error, ")
            if err["type"] == "extra_forbidden":
                msg = "unknown key"
            elif err["type"] == "missing":
                msg = "required key is missing"
            lines.append(f"{where}: {msg}" if where else msg)
        raise ConfigError("\n".join(lines)) from None


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
            if isinstance(action, HttpAction) and not environ.get(action.url_env):
                problems.append(f"pipelines.{name}.actions.{i}.url_env: {action.url_env} is not set")
            if isinstance(action, PythonAction):
                err = _import_problem(action.target)
                if err:
                    problems.append(f"pipelines.{name}.actions.{i}.target: {err}")
        if p.output_model:
            err = _import_problem(p.output_model)
            if err:
                problems.append(f"pipelines.{name}.output_model: {err}")
    return problems


def _import_problem(target: str) -> str | None:
    module, _, attr = target.partition(":")
    try:
        mod = importlib.import_module(module)
    except Exception as e:
        return f"cannot import {module!r}: {e.__class__.__name__}: {e}"
    if not hasattr(mod, attr):
        return f"{module!r} has no attribute {attr!r}"
    return None


def resolve_target(target: str) -> Any:
    module, _, attr = target.partition(":")
    return getattr(importlib.import_module(module), attr)
