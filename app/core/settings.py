"""Process settings: one pydantic-settings object, built once at start and passed down.

Nothing else in hookline reads ``os.environ`` for configuration; the secrets named in
``hookline.toml`` (``secrets_env``, ``url_env``, …) are resolved from :attr:`Settings.environ`.
"""

from __future__ import annotations

import os
import re
from collections.abc import Mapping
from pathlib import Path
from typing import Any, Literal, get_args

from pydantic import AliasChoices, Field, SecretStr, ValidationError, field_validator
from pydantic.fields import FieldInfo
from pydantic_settings import BaseSettings, SettingsConfigDict

from app.core.config._base import MAX_BODY_BYTES


class Settings(BaseSettings):
    """Every environment variable hookline reads. The README's table is tested against this class."""

    # hide_input_in_errors: a ValidationError printed whole (a traceback) never shows a value given,
    # DATABASE_URL's password included; settings_problems() quotes those that are not secrets.
    model_config = SettingsConfigDict(
        env_prefix="HOOKLINE_", extra="ignore", populate_by_name=True, hide_input_in_errors=True
    )

    database_url: SecretStr | None = Field(
        default=None,
        validation_alias=AliasChoices("DATABASE_URL"),
        description="libpq URI of the Postgres to use. Unset: `hookline dev` starts an embedded one.",
    )
    port: int = Field(
        default=8000, ge=0, le=65535, validation_alias=AliasChoices("PORT"), description="HTTP port of `hookline web`."
    )
    anthropic_api_key: SecretStr | None = Field(
        default=None,
        validation_alias=AliasChoices("ANTHROPIC_API_KEY"),
        description="Claude API key. Unset: pipelines run in dry-run mode (request stored, no action).",
    )
    anthropic_base_url: str | None = Field(
        default=None,
        validation_alias=AliasChoices("ANTHROPIC_BASE_URL"),
        description="Messages API base URL (a proxy or a test double).",
    )
    config: Path = Field(
        default=Path("hookline.toml"),
        validation_alias=AliasChoices("HOOKLINE_CONFIG"),
        description="Path of the TOML file with sources and pipelines.",
    )
    host: str = Field(default="0.0.0.0", description="Interface `hookline web` binds.")  # noqa: S104
    home: Path = Field(default=Path(".hookline"), description="Folder for the embedded Postgres and local state.")
    max_body_bytes: int = Field(
        default=5 * 1024 * 1024,
        ge=1,
        le=MAX_BODY_BYTES,
        description="Default request body cap in bytes (per source: max_body_bytes).",
    )
    log_level: Literal["DEBUG", "INFO", "WARNING", "ERROR"] = Field(default="INFO", description="Log level.")
    log_format: Literal["text", "json"] = Field(default="text", description="Log line format.")
    public_url: str | None = Field(
        default=None,
        description="Public base URL senders use (e.g. https://hooks.example.com); "
        "URL-bound signatures (Twilio, Square, HubSpot) are checked against it.",
    )
    web_processes: int = Field(
        default=1,
        ge=1,
        description="Processes `hookline web` runs on its one port (`--processes`; uvicorn's supervisor restarts "
        "one that dies). Each has its own pool, batches and memory of stored keys; /metrics adds up their "
        "counters. Every process adds `HOOKLINE_DB_POOL_MAX` + 1 connections to the budget.",
    )
    db_pool_min: int = Field(
        default=2,
        ge=0,
        description="Minimum connections of the web process pool (held to the maximum when that is lower).",
    )
    db_pool_max: int = Field(default=10, ge=1, description="Maximum connections of the web process pool.")
    db_timeout: float = Field(
        default=5.0, gt=0, description="Seconds to wait for a connection or a statement on the ingest path."
    )
    duplicate_cache_size: int = Field(
        default=20_000,
        ge=0,
        description="Delivery keys each web process remembers as stored, to answer re-sends without a database "
        "round trip (about 300 bytes each; 0 turns it off).",
    )
    duplicate_cache_seconds: float = Field(
        default=600.0,
        gt=0,
        description="Seconds a remembered key answers re-sends; then Postgres is asked again.",
    )
    retry_after_seconds: int = Field(
        default=5, ge=0, description="Retry-After sent with 503 when Postgres is unreachable."
    )
    worker_concurrency: int = Field(default=10, ge=1, description="Jobs one worker process runs at once.")
    worker_claim_batch: int = Field(
        default=10,
        ge=1,
        description="Most events one job claims in one round trip when a backlog waits "
        "(within the free concurrency; 1 turns batch claiming off).",
    )
    worker_loop: Literal["auto", "uvloop", "asyncio"] = Field(
        default="auto",
        description="Event loop of `hookline worker`: `auto` (uvloop when installed, as uvicorn picks for the web), "
        "`uvloop` or `asyncio`.",
    )
    worker_poll_interval: float = Field(
        default=1.0, gt=0, description="Seconds between fallback polls (NOTIFY wakes workers sooner)."
    )
    shutdown_timeout: float = Field(
        # below the 30 s a PaaS (Heroku, Render) allows between SIGTERM and SIGKILL, so the hand-back happens
        default=20.0,
        ge=0,
        description="Seconds a worker waits for running jobs on SIGTERM before handing them back "
        "(and `hookline web` lets open requests finish); keep it below the platform's grace period.",
    )
    stalled_after: float = Field(
        default=60.0, gt=0, description="Seconds without a worker heartbeat before its jobs go to another worker."
    )
    # at most about 2,700 years: the prune subtracts it from now(), and Postgres holds no time before 4713 BC
    job_retention_hours: int = Field(
        default=24,
        ge=0,
        le=24_000_000,
        description="Finished procrastinate jobs are deleted after this many hours without activity "
        "(0: never deleted).",
    )
    payload_retention_days: int = Field(
        default=30,
        ge=0,
        le=1_000_000,
        description="Bodies and payloads of finished events are dropped after this many days "
        "(the row, and so deduplication, stays; 0: never dropped).",
    )
    llm_timeout: float = Field(default=60.0, gt=0, description="Seconds before a model call times out.")
    llm_max_retries: int = Field(
        default=0, ge=0, description="Retries inside the anthropic SDK (the queue retries too; keep low)."
    )
    llm_http_client: Literal["aiohttp", "httpx"] = Field(
        default="aiohttp",
        description="HTTP stack of the anthropic SDK: aiohttp (its aiohttp extra: about a quarter less CPU per call) "
        "or httpx (its default).",
    )
    outbound_timeout: float = Field(
        default=10.0,
        gt=0,
        description="Seconds before an http, slack or email action times out (per action: timeout_seconds).",
    )
    slack_api_url: str = Field(
        default="https://slack.com/api", description="Slack Web API base URL of slack actions with token_env."
    )
    admin_token: SecretStr | None = Field(
        default=None,
        description="Bearer token of the admin API and the dashboard login. Unset: every /admin path is 404.",
    )
    trust_forwarded_proto: bool = Field(
        default=False,
        description="Believe X-Forwarded-Proto from the proxy in front (PaaS router) when deciding that a "
        "request came over HTTPS (Secure session cookie, Origin check).",
    )
    metrics_token: SecretStr | None = Field(
        default=None,
        description="Bearer token GET /metrics requires when set; unset, /metrics is public and shows "
        "no tenant label and no signature-failure reason.",
    )
    worker_metrics_port: int | None = Field(
        default=None,
        ge=1,
        le=65535,
        description="Port on which each worker serves its own Prometheus metrics; unset: none.",
    )
    batch_poll_seconds: int = Field(
        default=30, ge=1, description='How often the worker submits and polls Message Batches (`mode = "batch_api"`).'
    )
    # --- hostile-input limits (issue 12) -------------------------------------------------------
    header_timeout: float = Field(
        default=10.0,
        gt=0,
        description="Seconds a client has to send a request's complete headers (from connect, or from the "
        "previous response on a kept-alive connection); then 408 and the connection is closed.",
    )
    body_timeout: float = Field(
        default=30.0, gt=0, description="Seconds a client has to send a request's complete body; then 408 and close."
    )
    keepalive_timeout: float = Field(
        default=5.0, gt=0, description="Seconds an idle kept-alive connection stays open between requests."
    )
    max_header_bytes: int = Field(
        default=32768, gt=0, description="Largest request line plus headers accepted, in bytes; larger gets 431."
    )
    max_headers: int = Field(default=100, gt=0, description="Most request headers accepted; more gets 431.")
    max_connections: int = Field(
        default=0,
        ge=0,
        description="Open connections one web process accepts; more are answered 503 and closed. "
        "0: the process's open-file limit minus 100.",
    )
    stored_headers: str = Field(
        default="content-type,user-agent,x-request-id",
        description="Comma-separated request headers stored in hookline.events.headers besides those the "
        "provider's metadata uses (credentials are always stored as [redacted]).",
    )
    stored_header_max_bytes: int = Field(
        default=1024, gt=0, description="Each stored header value is cut to this many bytes."
    )
    trusted_proxies: str | None = Field(
        default=None,
        description="Comma-separated addresses or CIDR ranges of proxies (e.g. the PaaS router) whose "
        "X-Forwarded-For is believed. Unset: the peer address is the client.",
    )
    outbound_allowed_hosts: str | None = Field(
        default=None,
        description="Comma-separated hosts (or host:port) the worker may send HTTP to; `*.example.com` "
        "matches subdomains. "
        "Unset: no limit beyond the configured targets (the model never chooses one).",
    )

    @field_validator("database_url")
    @classmethod
    def _postgres_url(cls, v: SecretStr | None) -> SecretStr | None:
        from app.core.db import DatabaseUrlError, check_database_url  # the one rule for a database URL

        try:
            if v is not None and v.get_secret_value():  # empty: as if unset (the embedded Postgres)
                check_database_url(v.get_secret_value())
        except DatabaseUrlError as e:  # names the rule broken, never the URL
            raise ValueError(str(e)) from None
        return v

    @field_validator("anthropic_api_key", "admin_token", "metrics_token", mode="before")
    @classmethod
    def _trimmed(cls, v: Any) -> Any:
        """A key or token read from a secrets file keeps its trailing newline, which no HTTP header can
        carry (every call failed as a connection error): trimmed, and empty is unset."""
        if isinstance(v, str):
            return v.strip() or None
        return v

    @field_validator("log_level", mode="before")
    @classmethod
    def _level_in_any_case(cls, v: Any) -> Any:
        return v.upper() if isinstance(v, str) else v

    @property
    def environ(self) -> Mapping[str, str]:
        """Where names in hookline.toml (secrets_env, url_env, …) are resolved."""
        return os.environ

    def dsn(self) -> str | None:
        return self.database_url.get_secret_value() if self.database_url else None


#: Shortest admin or metrics token taken without a warning (characters, after trimming).
MIN_TOKEN_LENGTH = 16
#: A command that prints a good one (`python3`, as the README says: Debian and macOS have no `python`).
RANDOM_STRING_COMMAND = 'python3 -c "import secrets; print(secrets.token_urlsafe(32))"'


def weak_tokens(settings: Settings) -> list[str]:
    """One warning per bearer token that is set but shorter than ``MIN_TOKEN_LENGTH``: named, never shown
    (nor its length). ``hookline check`` prints them; the web process logs them once at start. Not a
    refusal: a short token still works."""
    tokens = {"HOOKLINE_ADMIN_TOKEN": settings.admin_token, "HOOKLINE_METRICS_TOKEN": settings.metrics_token}
    return [
        f"{name} is shorter than {MIN_TOKEN_LENGTH} characters, so it can be guessed; "
        f"use a long random one: {RANDOM_STRING_COMMAND}"
        for name, token in tokens.items()
        if token is not None and len(token.get_secret_value()) < MIN_TOKEN_LENGTH
    ]


#: Names whose value is never echoed back in an error (DATABASE_URL carries a password).
_SECRET_NAME = re.compile(r"^DATABASE_URL$|_KEY$|_TOKEN$|_SECRET$|PASSWORD")


def _env_field(loc: str) -> tuple[str, FieldInfo | None]:
    """The environment variable and the field behind an error location: pydantic reports a field
    under its name, or under the alias (``PORT``, ``DATABASE_URL``) it was read from."""
    prefix = str(Settings.model_config.get("env_prefix", ""))
    for name, info in Settings.model_fields.items():
        alias = info.validation_alias
        choices = [c for c in alias.choices if isinstance(c, str)] if isinstance(alias, AliasChoices) else []
        if loc == name or loc in choices:
            return (choices[0] if choices else f"{prefix}{name}".upper()), info
    return loc, None


def settings_problems(error: ValidationError) -> list[str]:
    """One line per bad environment variable, ``NAME: what it should be``; the value given is quoted
    only when the name does not suggest a secret."""
    lines: list[str] = []
    for err in error.errors():
        name, info = _env_field(str(err["loc"][0]) if err["loc"] else "")
        choices = get_args(info.annotation) if info is not None and err["type"] == "literal_error" else ()
        msg = f"one of {', '.join(map(str, choices))}" if choices else err["msg"]
        msg = msg.removeprefix("Value error, ").removeprefix("Input should be ")
        value = os.environ.get(name, err.get("input"))  # as given, not as a before-validator changed it
        if isinstance(value, str) and not _SECRET_NAME.search(name.upper()):
            msg = f"{msg} (got {value if len(value) <= 60 else value[:57] + '...'!r})"
        lines.append(f"{name}: {msg}")
    return lines
