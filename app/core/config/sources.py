"""``[sources.NAME]``: who may send, and how their requests are verified and read."""

from __future__ import annotations

import difflib
import ipaddress
import re
from collections.abc import Mapping
from typing import Any, Literal

from pydantic import Field, field_validator, model_validator

from app.core.config._base import LOCATOR_KEYS, MAX_BODY_BYTES, Strict, check_env_name, check_locators
from app.core.config.limits import RateLimit
from app.core.config.outputs import schema_error
from app.signatures import PROVIDERS, HmacOptions


class Source(Strict):
    """``[sources.NAME]``: one sender endpoint, ``POST /webhooks/NAME``."""

    name: str = ""
    provider: str
    secrets_env: tuple[str, ...] = ()
    tolerance_seconds: int | None = Field(default=None, ge=0)
    max_body_bytes: int | None = Field(default=None, gt=0, le=MAX_BODY_BYTES)
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
    #: Payload fields (dotted paths, e.g. ``data.object.customer_email``) masked in the admin API and dashboard.
    redact: tuple[str, ...] = ()
    rate_limit: RateLimit | None = None
    # issue 12: who may send, and what a valid payload looks like
    allowed_ips: tuple[str, ...] | None = None
    schemas: dict[str, dict[str, Any]] | None = None
    on_invalid: Literal["reject", "store"] = "reject"

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
            check_env_name(name)
        return v

    @field_validator("verify_token_env", "signing_key_env")
    @classmethod
    def _env_name(cls, v: str | None) -> str | None:
        return None if v is None else check_env_name(v)

    @field_validator(*LOCATOR_KEYS, mode="before")
    @classmethod
    def _locators(cls, v: Any) -> Any:
        return check_locators(v)

    @field_validator("redact")
    @classmethod
    def _redact(cls, v: tuple[str, ...]) -> tuple[str, ...]:
        for path in v:
            if not path or any(not part for part in path.split(".")):
                raise ValueError(f"{path!r} is not a dotted payload path such as 'data.object.customer_email'")
        return v

    @field_validator("allowed_ips")
    @classmethod
    def _cidrs(cls, v: tuple[str, ...] | None) -> tuple[str, ...] | None:
        for item in v or ():
            try:
                ipaddress.ip_network(item.strip(), strict=False)
            except ValueError:
                raise ValueError(f"{item!r} is not an IP address or CIDR range") from None
        return v

    @field_validator("schemas")
    @classmethod
    def _schemas(cls, v: dict[str, dict[str, Any]] | None) -> dict[str, dict[str, Any]] | None:
        for event_type, schema in (v or {}).items():
            if problem := schema_error(schema):  # as the draft its $schema names, as ingest validates with
                raise ValueError(f"schemas.{event_type!r} is {problem}")
        return v

    def schema_for(self, event_type: str | None) -> dict[str, Any] | None:
        """The JSON Schema the payload of ``event_type`` must match (exact type first, then "*")."""
        if not self.schemas:
            return None
        if event_type is not None and event_type in self.schemas:
            return self.schemas[event_type]
        return self.schemas.get("*")

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
