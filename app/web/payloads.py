"""What ingest says about a payload it refuses: where a body is not JSON, and its first JSON Schema
violation (a source's ``schemas``). Each answer names the place, never the value."""

from __future__ import annotations

import json
import sys
from collections.abc import Iterator
from typing import Any

import jsonschema

from app.core.config import Source


def json_error(e: ValueError, body: bytes) -> str:
    """What the JSON parser refused in ``body``, and where; never the value itself."""
    if isinstance(e, UnicodeDecodeError):  # its offset is ``start``, into what followed a BOM
        return f"UnicodeDecodeError at byte {e.start + len(body) - len(e.object)}: not UTF-8, UTF-16 or UTF-32"
    if isinstance(e, json.JSONDecodeError):  # a character offset of the decoded text: say line and column
        return f"JSONDecodeError at line {e.lineno} column {e.colno}: {e.msg}"
    if str(e).startswith("Exceeds the limit"):  # int(): Python's cap on the digits of an integer
        return f"a number has more than {sys.get_int_max_str_digits()} digits"
    return str(e)  # _no_constants: "NaN is not JSON"


_MULTIPLE_OF = jsonschema.Draft202012Validator.VALIDATORS["multipleOf"]


def _multiple_of(validator: Any, multiple: Any, instance: Any, schema: Any) -> Iterator[jsonschema.ValidationError]:
    """jsonschema's ``multipleOf``, with a number it cannot divide (``1e999`` parses to inf; an integer
    of hundreds of digits overflows a float divisor) reported as a violation at its path, not raised."""
    try:
        yield from _MULTIPLE_OF(validator, multiple, instance, schema)
    except (OverflowError, ValueError, TypeError):
        yield jsonschema.ValidationError(f"number is too large to check against multipleOf {multiple}")


#: Draft 2020-12 (as the config checks schemas) with that one keyword replaced.
_Validator: type[jsonschema.protocols.Validator] = jsonschema.validators.extend(  # type: ignore[no-untyped-call]
    jsonschema.Draft202012Validator, {"multipleOf": _multiple_of}
)


def schema_violation(src: Source, event_type: str | None, payload: Any) -> str | None:
    """The first JSON Schema error of ``payload`` (path and message, capped), or None."""
    schema = src.schema_for(event_type)
    if schema is None:
        return None
    try:
        error = jsonschema.exceptions.best_match(_Validator(schema).iter_errors(payload))
    except RecursionError:
        return "payload is nested too deeply to validate"
    except (OverflowError, ValueError, TypeError) as e:  # another keyword a number breaks: still the sender's
        return f"payload cannot be checked against the schema ({e.__class__.__name__})"
    if error is None:
        return None
    where = "/".join(str(p) for p in error.absolute_path) or "(root)"
    return f"{where}: {error.message}"[:500]


__all__ = ["json_error", "schema_violation"]
