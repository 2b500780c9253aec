"""What of an event's payload a pipeline sees: its ``fields``, long strings clipped for the model.

Shared by the worker (the model's prompt, the actions' templates) and the web process (``fields`` in a
synchronous reply's template), so both see exactly the same values. Templates see strings whole
(``clip_strings=False``): the clip keeps a huge field from blowing the model's context and bill, and an
e-mail quoting a customer's message should quote all of it (``| truncate(n)`` cuts where a template
means to).
"""

from __future__ import annotations

from typing import Any

#: A string value longer than this is cut, so one huge field cannot blow the context or the bill.
MAX_STRING = 4000
_MISSING = object()


def dig(payload: Any, path: str) -> Any:
    """Dotted path into JSON (``data.object.customer``, ``entry.0.id``); a missing step gives _MISSING."""
    cur = payload
    for part in path.split("."):
        if isinstance(cur, dict) and part in cur:
            cur = cur[part]
        elif isinstance(cur, list) and part.lstrip("-").isdigit() and -len(cur) <= int(part) < len(cur):
            cur = cur[int(part)]
        else:
            return _MISSING
    return cur


#: Containers nested deeper than this reach the model as a placeholder: a 500-level document from a
#: watched table (or any writer) can neither overflow the stack nor fill the prompt.
MAX_DEPTH = 32


def _clip(value: Any, depth: int = 0, strings: bool = True) -> Any:
    if strings and isinstance(value, str) and len(value) > MAX_STRING:
        return value[:MAX_STRING] + f"… [{len(value) - MAX_STRING} more characters cut]"
    if isinstance(value, dict | list) and depth >= MAX_DEPTH:
        return f"[nested deeper than {MAX_DEPTH} levels, cut]"
    if isinstance(value, dict):
        return {k: _clip(v, depth + 1, strings) for k, v in value.items()}
    if isinstance(value, list):
        return [_clip(v, depth + 1, strings) for v in value]
    return value


def trim(payload: Any, fields: tuple[str, ...], *, clip_strings: bool = True) -> Any:
    """Only the fields the pipeline lists (all of it when it lists none), nesting past MAX_DEPTH cut,
    and, with ``clip_strings`` (the model's prompt), strings longer than MAX_STRING clipped."""
    if not fields:
        return _clip(payload, 0, clip_strings)
    out: dict[str, Any] = {}
    for path in fields:
        value = dig(payload, path)
        if value is not _MISSING:
            out[path] = _clip(value, 0, clip_strings)
    return out


def template_fields(payload: Any, fields: tuple[str, ...]) -> dict[str, Any]:
    """What templates (an action's, a synchronous reply's) see as ``fields``: the payload trimmed to
    ``fields``, strings whole. A payload that is not a JSON object (an array, a string, a number: the
    pipeline lists no ``fields``) is ``fields.payload``, and ``fields.value`` too, the name sync replies
    gave it while actions said ``payload``."""
    trimmed = trim(payload, fields, clip_strings=False)
    return trimmed if isinstance(trimmed, dict) else {"payload": trimmed, "value": trimmed}
