"""Locators: where a piece of event metadata lives in a delivery.

Syntax (validated at config time by :func:`parse_locator`):

- ``header:<Name>``: a request header, case-insensitive; the first non-empty value.
- ``json:<dotted.path>``: a path into the parsed payload. Segments are object keys; a segment of
  digits indexes a list (``entry.0.id``, ``0.sg_event_id`` for a top-level array) and is used as
  a key on an object. A path ending on an object/array (non-scalar), ``null`` or ``""`` yields
  nothing, so the next locator is tried. Numbers become their decimal text, booleans are ignored.

A delivery id must be exact: a JSON number with a fraction or an exponent is a float once parsed, and
distinct ones can parse to the same float (``1e400`` and ``2e500`` are both inf; ``9007199254740993.0``
is ``9007199254740992.0``), which would make one delivery a duplicate of another. Resolved with
``exact=True`` (the delivery id), such a value raises :class:`InexactNumber`; integers stay exact.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any, Literal

from ._base import Headers

_HEADER_NAME = re.compile(r"^[!#$%&'*+.^_`|~0-9A-Za-z-]+$")  # RFC 9110 token
_SEGMENT = re.compile(r"^[^.\s]+$")


@dataclass(frozen=True)
class Locator:
    kind: Literal["header", "json"]
    path: tuple[str, ...]  # header: (name,); json: the segments

    def __str__(self) -> str:
        return f"{self.kind}:{'.'.join(self.path)}"

    def resolve(self, headers: Headers, payload: Any, exact: bool = False) -> str | None:
        if self.kind == "header":
            return headers.get(self.path[0])
        value = walk(payload, self.path)
        if exact and isinstance(value, float):
            raise InexactNumber(str(self))
        return scalar_text(value)


class InexactNumber(ValueError):
    """A value that must be exact (a delivery id) is a JSON number with a fraction or an exponent; the
    message is the locator that found it."""


def parse_locator(text: str) -> Locator:
    """Parse ``header:Name`` or ``json:a.b.0.c``; raise ``ValueError`` naming the problem."""
    if not isinstance(text, str):
        raise ValueError(f"a locator must be a string like 'json:id' or 'header:X-Id', not {text!r}")
    kind, colon, rest = text.strip().partition(":")
    if not colon:
        raise ValueError(f"locator {text!r} needs a 'header:' or 'json:' prefix")
    if kind == "header":
        name = rest.strip()
        if not _HEADER_NAME.match(name):
            raise ValueError(f"locator {text!r}: {name!r} is not a valid header name")
        return Locator("header", (name,))
    if kind == "json":
        segments = tuple(rest.strip().split("."))
        if not rest.strip() or not all(_SEGMENT.match(s) for s in segments):
            raise ValueError(
                f"locator {text!r}: a json path is dot-separated non-empty segments, e.g. 'data.object.id'"
            )
        return Locator("json", segments)
    raise ValueError(f"locator {text!r}: unknown kind {kind!r}; use 'header:' or 'json:'")


def parse_locators(value: str | Any) -> tuple[Locator, ...]:
    """A locator string or a sequence of them (from TOML) → parsed tuple; empty list allowed."""
    if isinstance(value, str):
        return (parse_locator(value),)
    if isinstance(value, list | tuple):
        return tuple(parse_locator(v) for v in value)
    raise ValueError(f"expected a locator string or a list of them, not {type(value).__name__}")


def walk(payload: Any, path: tuple[str, ...]) -> Any:
    current = payload
    for segment in path:
        if isinstance(current, dict):
            if segment not in current:
                return None
            current = current[segment]
        elif isinstance(current, list) and segment.isdigit():
            index = int(segment)
            if index >= len(current):
                return None
            current = current[index]
        else:
            return None
    return current


def scalar_text(value: Any) -> str | None:
    if isinstance(value, bool) or value is None:
        return None
    if isinstance(value, int):
        return str(value)
    if isinstance(value, float):
        return repr(value) if not value.is_integer() else str(int(value))
    if isinstance(value, str):
        return value.strip() or None
    return None


def first(locators: tuple[Locator, ...], headers: Headers, payload: Any, exact: bool = False) -> str | None:
    for locator in locators:
        found = locator.resolve(headers, payload, exact)
        if found is not None:
            return found
    return None
