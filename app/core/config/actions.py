"""``[[pipelines.NAME.actions]]``: what happens with a validated answer."""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import Field, field_validator

from app.core.config._base import TARGET, Strict, check_env_name


class HttpAction(Strict):
    type: Literal["http"]
    name: str | None = None
    url_env: str
    secret_env: str | None = None
    timeout_seconds: float | None = Field(default=None, gt=0)
    headers: dict[str, str] = Field(default_factory=dict)

    @field_validator("url_env", "secret_env")
    @classmethod
    def _env_names(cls, v: str | None) -> str | None:
        return None if v is None else check_env_name(v)


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


Action = Annotated[HttpAction | LogAction | PythonAction, Field(discriminator="type")]
