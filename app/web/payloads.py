"""What ingest says about a payload it refuses: where a body is not JSON, and its first JSON Schema
violation (a source's ``schemas``). Each answer names the place, never the value.

jsonschema's own messages quote the value (``'4111111111111111' does not match '^tok_'``), and the
violation is both the 422's ``detail`` and, with ``on_invalid = "store"``, the stored event's
``detail`` that every dashboard user reads (a ``redact`` field included): so the message is built
here from the path, the failing keyword and the schema's own constant (:func:`describe`)."""

from __future__ import annotations

import functools
import json
import re
import sys
from collections.abc import Iterator
from typing import Any

import jsonschema
from jsonschema.protocols import Validator

from app.core.config import Source
from app.core.config.outputs import schema_validator


def json_error(e: ValueError, body: bytes) -> str:
    """What the JSON parser refused in ``body``, and where; never the value itself."""
    if isinstance(e, UnicodeDecodeError):  # its offset is ``start``, into what followed a BOM
        return f"UnicodeDecodeError at byte {e.start + len(body) - len(e.object)}: not UTF-8, UTF-16 or UTF-32"
    if isinstance(e, json.JSONDecodeError):  # a character offset of the decoded text: say line and column
        return f"JSONDecodeError at line {e.lineno} column {e.colno}: {e.msg}"
    if str(e).startswith("Exceeds the limit"):  # int(): Python's cap on the digits of an integer
        return f"a number has more than {sys.get_int_max_str_digits()} digits"
    return str(e)  # _no_constants: "NaN is not JSON"


_TOO_LARGE = "number is too large to check against multipleOf"
_MULTIPLE_OF = jsonschema.Draft202012Validator.VALIDATORS["multipleOf"]  # every draft's since 4 (3: divisibleBy)


def _multiple_of(validator: Any, multiple: Any, instance: Any, schema: Any) -> Iterator[jsonschema.ValidationError]:
    """jsonschema's ``multipleOf``, with a number it cannot divide (``1e999`` parses to inf; an integer
    of hundreds of digits overflows a float divisor) reported as a violation at its path, not raised."""
    try:
        yield from _MULTIPLE_OF(validator, multiple, instance, schema)
    except (OverflowError, ValueError, TypeError):
        yield jsonschema.ValidationError(f"{_TOO_LARGE} {multiple}")


@functools.cache
def _validator(draft: type[Validator]) -> type[Validator]:
    """``draft``'s validator with that one keyword replaced (the config checked the schema as that draft)."""
    if "multipleOf" not in draft.VALIDATORS:  # draft 3 (divisibleBy)
        return draft
    return jsonschema.validators.extend(draft, {"multipleOf": _multiple_of})  # type: ignore[no-untyped-call,no-any-return]


def schema_violation(src: Source, event_type: str | None, payload: Any) -> str | None:
    """The first JSON Schema error of ``payload`` (path and message, capped), or None."""
    schema = src.schema_for(event_type)
    if schema is None:
        return None
    try:
        validator = _validator(schema_validator(schema))(schema)  # the draft its $schema names
        error = jsonschema.exceptions.best_match(validator.iter_errors(payload))
    except RecursionError:
        return "payload is nested too deeply to validate"
    except (OverflowError, ValueError, TypeError) as e:  # another keyword a number breaks: still the sender's
        return f"payload cannot be checked against the schema ({e.__class__.__name__})"
    if error is None:
        return None
    return f"{where(error)}: {describe(error)}"[:500]


def _shown(constant: Any) -> str:
    """A constant of the schema (never of the payload), as jsonschema shows it, capped."""
    text = repr(constant)
    return text if len(text) <= 120 else text[:117] + "..."


#: Keywords whose argument is keyed (a property name, a pattern) or indexed before the subschema.
_KEYED = {"properties", "patternProperties", "dependentSchemas", "allOf", "anyOf", "oneOf", "prefixItems", "$defs"}
_KEYED |= {"unevaluatedProperties"}  # it descends with the property name in its schema path
_KEYED |= {"dependencies"}  # drafts before 2019-09: dependentRequired and dependentSchemas in one
#: Keywords that descend into one member of the instance (one step of its path), not named by the schema.
_ANY_MEMBER = {"patternProperties", "additionalProperties", "items", "prefixItems", "additionalItems"}


def _descent(error: jsonschema.ValidationError) -> tuple[list[str | None], bool]:
    """How the schema reached ``error``: for each step into the instance, the property name the schema
    declares for it (``properties``) or None (a key matched by ``patternProperties`` or
    ``additionalProperties``, an array index); and whether it went through ``propertyNames``."""
    path = list(error.absolute_schema_path)
    steps: list[str | None] = []
    names = False
    i = 0
    while i < len(path) - 1:  # the last element is the failing keyword itself
        keyword = path[i]
        if keyword == "propertyNames":
            names = True
        if keyword == "properties":
            steps.append(str(path[i + 1]))
        elif keyword in _ANY_MEMBER:
            steps.append(None)
        i += 2 if keyword in _KEYED else 1
    return steps, names


def where(error: jsonschema.ValidationError) -> str:
    """The place of ``error`` in the payload, ``/``-separated: array indexes and the property names the
    schema declares (``properties``) as they are, any other key (the payload's own: a map keyed by
    e-mail, card token or account id, under ``additionalProperties`` or ``patternProperties``) as ``*``."""
    parts = list(error.absolute_path)
    declared, _ = _descent(error)
    if len(declared) != len(parts):  # a descent this walk does not know: trust indexes only
        declared = [None] * len(parts)
    shown = [
        str(part) if isinstance(part, int) or (name is not None and part == name) else "*"
        for part, name in zip(parts, declared, strict=True)
    ]
    return "/".join(shown) or "(root)"


def _additional(instance: Any, schema: Any) -> list[str]:
    """The properties ``additionalProperties = false`` refuses (as jsonschema finds them)."""
    if not isinstance(instance, dict) or not isinstance(schema, dict):
        return []
    known, patterns = schema.get("properties", {}), "|".join(schema.get("patternProperties", {}))
    return sorted(str(k) for k in instance if k not in known and not (patterns and re.search(patterns, str(k))))


def describe(error: jsonschema.ValidationError) -> str:
    """What ``error`` found wrong, from its keyword and the schema's constant: never the payload's value
    (the path says where), nor a property name of the payload's own (``propertyNames``, the properties
    ``additionalProperties`` refuses): those are counted, not named."""
    keyword, constant, instance, schema = error.validator, error.validator_value, error.instance, error.schema
    text = _keyword_message(str(keyword) if keyword is not None else None, constant, instance, schema, error)
    if keyword is not None and _descent(error)[1]:
        return f"a property name {text}"
    return text


def _keyword_message(keyword: str | None, constant: Any, instance: Any, schema: Any, error: Any) -> str:
    bounds = {
        "minimum": "is less than the minimum of",
        "maximum": "is greater than the maximum of",
        "exclusiveMinimum": "is less than or equal to the exclusiveMinimum of",
        "exclusiveMaximum": "is greater than or equal to the exclusiveMaximum of",
        "minLength": "is shorter than the minLength of",
        "maxLength": "is longer than the maxLength of",
        "minItems": "has fewer items than the minItems of",
        "maxItems": "has more items than the maxItems of",
        "minProperties": "has fewer properties than the minProperties of",
        "maxProperties": "has more properties than the maxProperties of",
        "minContains": "has fewer items matching the contains schema than the minContains of",
        "maxContains": "has more items matching the contains schema than the maxContains of",
        "multipleOf": "is not a multiple of",
        "enum": "is not one of",
        "pattern": "does not match pattern",
    }
    if keyword in bounds:
        if keyword == "multipleOf" and str(error.message).startswith(_TOO_LARGE):
            return str(error.message)  # ours (_multiple_of): the schema's number only
        exclusive = {"minimum": ("exclusiveMinimum", "less"), "maximum": ("exclusiveMaximum", "greater")}.get(keyword)
        if exclusive and isinstance(schema, dict) and schema.get(exclusive[0]) is True:  # draft 4's boolean form
            return f"is {exclusive[1]} than or equal to the {keyword} of {_shown(constant)} ({exclusive[0]})"
        return f"{bounds[keyword]} {_shown(constant)}"
    if keyword == "type":
        types = constant if isinstance(constant, list) else [constant]
        return "is not of type " + ", ".join(_shown(t) for t in types)
    if keyword == "required":
        missing = [p for p in constant if isinstance(instance, dict) and p not in instance] or list(constant)
        return f"{_shown(missing[0])} is a required property"
    if keyword in ("dependentRequired", "dependencies") and isinstance(instance, dict):
        for prop, needs in constant.items():
            lacking = [n for n in needs if prop in instance and n not in instance] if isinstance(needs, list) else []
            if lacking:
                return f"{_shown(lacking[0])} is required when {_shown(prop)} is present ({keyword})"
    if keyword == "additionalProperties":
        extra = _additional(instance, schema)
        if not extra:
            return "has unexpected properties"
        return f"has {len(extra)} {'property' if len(extra) == 1 else 'properties'} the schema does not allow"
    if keyword == "items" and constant is False:
        prefix = len(schema.get("prefixItems", [])) if isinstance(schema, dict) else 0
        return f"has more than {prefix} item(s) (items is false after prefixItems)"
    if keyword == "additionalItems" and constant is False:  # drafts before 2020-12: items as a list
        listed = schema.get("items") if isinstance(schema, dict) else None
        return f"has more than {len(listed) if isinstance(listed, list) else 0} item(s) (additionalItems is false)"
    fixed = {
        None: "is not allowed here (the schema is false)",
        "const": f"is not the const {_shown(constant)}",
        "format": f"is not a valid {_shown(constant)} (format)",
        "uniqueItems": "has non-unique items (uniqueItems)",
        "contains": "does not contain an item matching the contains schema",
        "unevaluatedProperties": "has properties the schema does not allow (unevaluatedProperties)",
        "unevaluatedItems": "has items the schema does not allow (unevaluatedItems)",
        "anyOf": "is not valid under any of the anyOf schemas",
        "oneOf": "is not valid under exactly one of the oneOf schemas",
        "not": "must not be valid under the not schema",
    }
    return fixed.get(keyword, f"does not match the schema ({keyword})")


__all__ = ["describe", "json_error", "schema_violation", "where"]
