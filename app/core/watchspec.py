"""One ``[[watch]]`` entry of hookline.toml: which row changes of a business table become events.

The model only: installing the triggers is ``hookline.watch()`` in SQL, driven by ``app.cli.watch``.
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

Operation = Literal["insert", "update", "delete"]
OPERATIONS: tuple[Operation, ...] = ("insert", "update", "delete")


def _names(v: Any) -> Any:
    """``"a, b"`` or ``["a", "b"]`` → ``("a", "b")``; blanks dropped."""
    if isinstance(v, str):
        v = v.split(",")
    if isinstance(v, list | tuple):
        return tuple(s.strip() if isinstance(s, str) else s for s in v if not (isinstance(s, str) and not s.strip()))
    return v


class WatchSpec(BaseModel):
    """One ``[[watch]]`` entry of hookline.toml (and what ``hookline watch`` builds from its flags)::

    [[watch]]
    table = "public.orders"          # required; resolved with the database's search_path
    on = ["update"]                  # insert, update, delete (default: all three)
    columns = ["status"]             # UPDATE events only when one of these changed
    when = "NEW.status = 'cancelled'"  # SQL expression on OLD/NEW (the trigger's WHEN clause)
    exclude_columns = ["card_token"] # left out of the payload's old/new
    max_value_bytes = 2048           # longer values are cut (strings) or nulled
    key_columns = ["id"]             # default: the primary key (required without one)
    """

    model_config = ConfigDict(extra="forbid", frozen=True)

    table: str = Field(min_length=1)
    on: tuple[Operation, ...] = OPERATIONS
    columns: tuple[str, ...] | None = None
    when: str | None = None
    exclude_columns: tuple[str, ...] = ()
    max_value_bytes: int | None = Field(default=None, gt=0)
    key_columns: tuple[str, ...] | None = None

    @field_validator("table")
    @classmethod
    def _table(cls, v: str) -> str:
        v = v.strip()
        if not v:
            raise ValueError("name a table")
        return v

    @field_validator("on", mode="before")
    @classmethod
    def _on(cls, v: Any) -> Any:
        v = _names(v)
        if isinstance(v, tuple):
            v = tuple(s.lower() if isinstance(s, str) else s for s in v)
            if not v:
                raise ValueError("name at least one of insert, update, delete")
        return v

    @field_validator("on")
    @classmethod
    def _on_order(cls, v: tuple[Operation, ...]) -> tuple[Operation, ...]:
        return tuple(op for op in OPERATIONS if op in v)

    @field_validator("columns", "key_columns", mode="before")
    @classmethod
    def _optional_names(cls, v: Any) -> Any:
        v = _names(v)
        return None if v == () else v

    @field_validator("exclude_columns", mode="before")
    @classmethod
    def _excluded(cls, v: Any) -> Any:
        return () if v is None else _names(v)

    @field_validator("when")
    @classmethod
    def _when(cls, v: str | None) -> str | None:
        if v is None or not v.strip():
            return None
        v = v.strip()
        if ";" in v or "--" in v or "/*" in v:
            raise ValueError("must be a single SQL expression (no ';' and no comments)")
        return v

    @model_validator(mode="after")
    def _columns_need_update(self) -> WatchSpec:
        if self.columns is not None and "update" not in self.on:
            raise ValueError("columns only filters UPDATE events; add update to 'on'")
        return self

    def params(self) -> dict[str, Any]:
        """Arguments of the ``watch`` named query (hookline.watch())."""
        return {
            "table": self.table,
            "operations": list(self.on),
            "columns": list(self.columns) if self.columns is not None else None,
            "condition": self.when,
            "key_columns": list(self.key_columns) if self.key_columns is not None else None,
            "exclude_columns": list(self.exclude_columns),
            "max_value_bytes": self.max_value_bytes,
        }
