"""``[pipelines.NAME]``: which events go to which prompt, and what happens with the answer."""

from __future__ import annotations

import random
from typing import Any, Literal

from pydantic import Field, field_validator, model_validator

from app.core import templates
from app.core.config._base import TARGET, Strict, check_locators
from app.core.config.actions import TEMPLATE_KEYS, Action
from app.core.config.outputs import api_schema_problem, schema_error
from app.core.config.respond import RESPOND_CONTENT_TYPES, check_respond

#: Names a ``when`` expression may read.
WHEN_NAMES = ("payload", "event")


#: The longest ``retry-after`` honoured (a day): a broken proxy's absurd value cannot park an event for years.
MAX_RETRY_AFTER_SECONDS = 86_400.0


class RetryPolicy(Strict):
    """``[pipelines.NAME.retry]``: attempts in all (first run included) and exponential backoff."""

    max_attempts: int = Field(default=5, ge=1, le=100)
    backoff_seconds: float = Field(default=2.0, ge=0)
    max_backoff_seconds: float = Field(default=300.0, ge=0)
    jitter: bool = True

    def delay(self, attempt: int, retry_after: float | None = None) -> float:
        """Seconds before the next run after ``attempt`` runs failed. ``retry_after`` (the API's
        ``retry-after``) is a floor that ``max_backoff_seconds`` does not cap: that caps our own backoff,
        never a retry sooner than the API asked (up to :data:`MAX_RETRY_AFTER_SECONDS`)."""
        base = min(self.max_backoff_seconds, self.backoff_seconds * (2 ** max(0, attempt - 1)))
        if self.jitter:
            base = base * (0.5 + random.random() / 2)
        if retry_after is not None:
            base = max(base, min(retry_after, MAX_RETRY_AFTER_SECONDS))
        return float(base)


class Concurrency(Strict):
    """``concurrency = { per_tenant, per_key }``: events of one tenant / one ordering key in flight."""

    per_tenant: int | None = Field(default=None, ge=1)
    per_key: int | None = Field(default=None, ge=1)


class Batch(Strict):
    """``batch = { max_events, max_wait_ms }``: micro-batching, several events in one prompt."""

    max_events: int = Field(default=20, ge=2, le=100)
    max_wait_ms: int = Field(default=2000, ge=0, le=600_000)


class LoopGuard(Strict):
    """``loop_guard = { max_events, window_seconds }``: per ordering key (else per tenant)."""

    max_events: int = Field(ge=1)
    window_seconds: float = Field(default=60.0, gt=0)


class Escalate(Strict):
    """``escalate = { model, when }``: re-ask ``model`` when the output's boolean field ``when`` is true."""

    model: str
    when: str


class Pipeline(Strict):
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
    max_tokens_cap: int = Field(default=8192, gt=0, le=64000)
    ordering_key: tuple[str, ...] | None = None
    timeout_seconds: float = Field(default=120.0, gt=0)
    retry: RetryPolicy = Field(default_factory=RetryPolicy)
    latest_wins: bool = False
    history: int = Field(default=0, ge=0, le=50)
    actions: tuple[Action, ...] = ()
    when: str | None = None

    @field_validator("when")
    @classmethod
    def _when(cls, v: str | None) -> str | None:
        if v is not None:
            templates.check_expression(v, WHEN_NAMES)
        return v

    priority: int = Field(default=0, ge=-1000, le=1000)
    concurrency: Concurrency | None = None
    batch: Batch | None = None
    mode: Literal["messages", "batch_api"] = "messages"
    loop_guard: LoopGuard | None = None
    escalate: Escalate | None = None
    #: Synchronous replies (see app/core/config/respond.py and the README's "Synchronous replies").
    respond: Literal["async", "sync"] = "async"
    respond_timeout_ms: int = Field(default=2500, ge=1, le=60000)
    respond_default: Any = None
    respond_body: Any = None
    respond_content_type: RESPOND_CONTENT_TYPES = "application/json"

    @field_validator("events", "fields", mode="before")
    @classmethod
    def _listify(cls, v: Any) -> Any:
        return [v] if isinstance(v, str) else v

    @field_validator("ordering_key", mode="before")
    @classmethod
    def _locators(cls, v: Any) -> Any:
        return check_locators(v)

    @field_validator("output_model")
    @classmethod
    def _model_path(cls, v: str | None) -> str | None:
        if v is not None and not TARGET.match(v):
            raise ValueError("output_model must look like 'package.module:ClassName'")
        return v

    @field_validator("output_schema")
    @classmethod
    def _schema(cls, v: dict[str, Any] | None) -> dict[str, Any] | None:
        if v is not None and v.get("type") != "object":
            raise ValueError("output_schema must be a JSON Schema whose type is 'object'")
        if v is not None and (problem := schema_error(v) or api_schema_problem(v)):
            raise ValueError(problem)
        return v

    @model_validator(mode="after")
    def _one_output(self) -> Pipeline:
        if (self.output_schema is None) == (self.output_model is None):
            raise ValueError("set exactly one of output_schema or output_model")
        names = [a.name for a in self.actions if a.name]
        dupes = {n for n in names if names.count(n) > 1}
        if dupes:
            raise ValueError(f"actions: duplicate action name(s) {sorted(dupes)}")
        if self.escalate is not None and self.output_schema is not None:
            prop = (self.output_schema.get("properties") or {}).get(self.escalate.when)
            if not isinstance(prop, dict) or prop.get("type") != "boolean":
                raise ValueError(f"escalate.when: {self.escalate.when!r} is not a boolean property of output_schema")
        if self.batch is not None and self.mode == "batch_api":
            raise ValueError("batch and mode = 'batch_api' do not combine; choose one")
        check_respond(self)
        self._check_fields_read()
        return self

    def _check_fields_read(self) -> None:
        """A template reading ``fields['x']`` where ``x`` is not one of the listed ``fields`` fails on every
        event (templates see only those): refused here, naming the template's key."""
        if not self.fields:  # templates see the whole payload
            return
        places = [
            (f"actions.{i}.{key}", getattr(action, key))
            for i, action in enumerate(self.actions)
            for key in TEMPLATE_KEYS[action.type]
        ]
        places += [(key, getattr(self, key)) for key in ("respond_body", "respond_default")]
        for where, value in places:
            unlisted = sorted(templates.fields_read(value) - set(self.fields))
            if unlisted:
                raise ValueError(
                    f"{where}: the template reads fields[{unlisted[0]!r}], which is not in this pipeline's fields "
                    f"{list(self.fields)}; a template sees only those (add it to fields, which the model sees too)"
                )

    @property
    def sync(self) -> bool:
        return self.respond == "sync"

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
