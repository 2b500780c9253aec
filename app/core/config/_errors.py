"""pydantic's validation errors of hookline.toml as one line each: the dotted key, then what is wrong.

An unknown key names the close match among the keys its table allows (``sources.stripe.secret_env:
unknown key (did you mean 'secrets_env'?)``), and an unknown action ``type`` is reported at the
``type`` key itself with the types there are, not as pydantic's "Input tag … does not match".
"""

from __future__ import annotations

import difflib
from collections.abc import Iterable, Sequence
from types import NoneType, UnionType
from typing import Annotated, Any, Union, get_args, get_origin

from pydantic import BaseModel
from pydantic_core import ErrorDetails

from app.core.config.actions import Action

#: The sections whose tables are named by their key: ``name`` is no key of theirs (Config refuses it).
NAMED_BY_KEY = ("sources", "pipelines", "schedules")
#: The lists whose items are an Action (``pipelines.NAME.actions.N``, ``alerts.N``).
_ACTION_LISTS = frozenset({"actions", "alerts"})
#: Steps pydantic puts in a location for a validator wrapping a type, not for a key.
_WRAPPERS = frozenset({"function-after", "function-before", "function-wrap", "function-plain"})


def did_you_mean(word: str, choices: Iterable[str]) -> str:
    """`` (did you mean 'x'?)`` for the close match among ``choices``, else ``; one of: a, b, …``.

    Closer than difflib's default (0.6), which offered ``priority`` for ``promt``."""
    options = sorted(set(choices))
    close = difflib.get_close_matches(word, options, n=1, cutoff=0.7)
    return f" (did you mean {close[0]!r}?)" if close else f"; one of: {', '.join(options)}"


def _is_model(tp: Any) -> bool:
    return isinstance(tp, type) and issubclass(tp, BaseModel)


def _tags(model: Any) -> tuple[str, ...]:
    """The ``type`` values a model of a tagged union answers to (none for any other model)."""
    field = model.model_fields.get("type") if _is_model(model) else None
    return get_args(field.annotation) if field is not None else ()


def _action_tags() -> tuple[str, ...]:
    """Every ``type`` of the :data:`Action` union, read from the union itself so a new one is never missed."""
    (union, *_meta) = get_args(Action)
    return tuple(tag for model in get_args(union) for tag in _tags(model))


#: Tags pydantic puts in an error's location for the tagged Action union.
ACTION_TYPES = _action_tags()


def _model_at(tp: Any, loc: Sequence[int | str]) -> type[BaseModel] | None:
    """The model of the table pydantic's location ``loc`` points at, following it through fields,
    dict values, list items and union branches (pydantic names a branch by its tag or class name)."""
    if get_origin(tp) is Annotated:
        tp = get_args(tp)[0]
    origin = get_origin(tp)
    if origin in (Union, UnionType):  # ``Concurrency | None`` has no step of its own in a location
        members = [m for m in get_args(tp) if m is not NoneType]
        for member in members:
            if loc and (loc[0] == getattr(member, "__name__", None) or loc[0] in _tags(member)):
                return _model_at(member, loc[1:])
        return next((found for m in members if (found := _model_at(m, loc)) is not None), None)
    if not loc:
        return tp if _is_model(tp) else None
    head, rest = loc[0], loc[1:]
    if head in _WRAPPERS:
        return _model_at(tp, rest)
    if _is_model(tp):
        fields = tp.model_fields.items()
        field = next((f for name, f in fields if head in (name, f.alias)), None)
        return _model_at(field.annotation, rest) if field is not None else None
    if origin is dict and isinstance(head, str):
        return _model_at(get_args(tp)[1], rest)
    if origin in (tuple, list) and isinstance(head, int):
        return _model_at(get_args(tp)[0], rest)
    return None


def _keys(root: type[BaseModel], table: Sequence[int | str]) -> list[str]:
    """The keys the table at ``table`` allows (as written in the file: ``from``, not ``from_``)."""
    model = _model_at(root, table)
    if model is None:
        return []
    keys = [f.alias or name for name, f in model.model_fields.items()]
    if len(table) == 2 and table[0] in NAMED_BY_KEY and "name" in keys:
        keys.remove("name")
    return keys


def _loc(loc: Sequence[int | str]) -> str:
    parts: list[str] = []
    for i, part in enumerate(loc):
        if part in _WRAPPERS:
            continue
        if part in ACTION_TYPES and i >= 2 and isinstance(loc[i - 1], int) and loc[i - 2] in _ACTION_LISTS:
            continue
        if part in ("str", "EnvHeader") and "headers" in loc[:i]:  # the branches of a header value
            continue
        parts.append(str(part))
    return ".".join(parts)


def _is_action(loc: Sequence[int | str]) -> bool:
    return len(loc) >= 2 and isinstance(loc[-1], int) and loc[-2] in _ACTION_LISTS


def error_lines(root: type[BaseModel], errors: Iterable[ErrorDetails]) -> list[str]:
    """One ``dotted.key: what is wrong`` line per error of ``root.model_validate``."""
    lines = []
    for err in errors:
        loc, kind = err["loc"], err["type"]
        msg = err["msg"].removeprefix("Value error, ")
        if kind == "extra_forbidden":
            keys = _keys(root, loc[:-1])
            msg = "unknown key" + (did_you_mean(str(loc[-1]), keys) if keys else "")
        elif kind == "missing":
            msg = "required key is missing"
        elif kind == "union_tag_invalid" and _is_action(loc):
            loc, tag = (*loc, "type"), str(err.get("ctx", {}).get("tag"))
            msg = f"unknown action type {tag!r}{did_you_mean(tag, ACTION_TYPES)}"
        elif kind == "union_tag_not_found" and _is_action(loc):
            loc = (*loc, "type")
            msg = f"required key is missing; one of: {', '.join(sorted(ACTION_TYPES))}"
        where = _loc(loc)
        lines.append(f"{where}: {msg}" if where else msg)
    return lines
