"""JSON Schema helpers for the fake Messages API (stdlib only).

- `generate(schema)` builds a deterministic instance that is valid against `schema`
  (the subset that structured outputs / strict tools allow, plus the numeric and length
  constraints, including the ones `anthropic.transform_schema` moves into `description`
  as ``{minimum: 1, maximum: 5}``, because a real model usually honours those hints).
- `validate(instance, schema)` returns a list of error strings (empty = valid).
- `strict_schema_problems(schema)` lists what the structured-outputs grammar rejects.
"""

from __future__ import annotations

import ipaddress
import math
import operator
import re
import uuid
from collections.abc import Mapping
from typing import Any

__all__ = ["SUPPORTED_FORMATS", "generate", "strict_schema_problems", "validate"]

Schema = Mapping[str, Any]

SUPPORTED_FORMATS: frozenset[str] = frozenset(
    {"date-time", "time", "date", "duration", "email", "hostname", "uri", "ipv4", "ipv6", "uuid"}
)
_FORMAT_VALUES: dict[str, str] = {
    "date-time": "2026-01-02T03:04:05Z",
    "time": "03:04:05Z",
    "date": "2026-01-02",
    "duration": "PT1H30M",
    "email": "someone@example.com",
    "hostname": "example.com",
    "uri": "https://example.com/resource",
    "ipv4": "192.0.2.10",
    "ipv6": "2001:db8::10",
}
_FORMAT_RES: dict[str, re.Pattern[str]] = {
    "date-time": re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d(\.\d+)?(Z|[+-]\d\d:\d\d)$"),
    "time": re.compile(r"^\d\d:\d\d:\d\d(\.\d+)?(Z|[+-]\d\d:\d\d)?$"),
    "date": re.compile(r"^\d{4}-\d\d-\d\d$"),
    "duration": re.compile(r"^P(?!$)(\d+Y)?(\d+M)?(\d+W)?(\d+D)?(T(?=\d)(\d+H)?(\d+M)?(\d+(\.\d+)?S)?)?$"),
    "email": re.compile(r"^[^@\s]+@[^@\s]+\.[^@\s]+$"),
    "hostname": re.compile(r"^[A-Za-z0-9]([A-Za-z0-9-]*[A-Za-z0-9])?(\.[A-Za-z0-9]([A-Za-z0-9-]*[A-Za-z0-9])?)*$"),
    "uri": re.compile(r"^[A-Za-z][A-Za-z0-9+.-]*:\S+$"),
    "ipv4": re.compile(r"^((25[0-5]|2[0-4]\d|1?\d?\d)\.){3}(25[0-5]|2[0-4]\d|1?\d?\d)$"),
    "uuid": re.compile(r"^[0-9a-fA-F]{8}-([0-9a-fA-F]{4}-){3}[0-9a-fA-F]{12}$"),
}
# keywords the structured-outputs grammar does not support (transform_schema moves them to description)
_UNSUPPORTED_KEYWORDS = (
    "minimum", "maximum", "exclusiveMinimum", "exclusiveMaximum", "multipleOf",
    "minLength", "maxLength", "maxItems", "minProperties", "maxProperties", "uniqueItems",
)  # fmt: skip
_HINT_RE = re.compile(r"\{([^{}]*)\}\s*$")
_MAX_DEPTH = 6


# ----------------------------------------------------------------------------------------- refs
def _resolve(schema: Schema, root: Schema) -> Schema:
    seen = 0
    while "$ref" in schema:
        ref = str(schema["$ref"])
        if not ref.startswith("#"):
            raise ValueError(f"only local $ref is supported, got {ref!r}")
        node: Any = root
        for part in [p for p in ref[1:].split("/") if p]:
            node = node[part.replace("~1", "/").replace("~0", "~")]
        schema = node
        seen += 1
        if seen > 50:
            raise ValueError(f"$ref loop at {ref!r}")
    return schema


def _hints(schema: Schema) -> dict[str, Any]:
    """Constraints spelled out in the schema, plus those hidden in `description` by transform_schema."""
    out: dict[str, Any] = {}
    desc = schema.get("description")
    if isinstance(desc, str) and (m := _HINT_RE.search(desc)):
        for part in m.group(1).split(", "):
            key, sep, raw = part.partition(": ")
            if not sep:
                continue
            value: Any = raw
            for conv in (int, float):
                try:
                    value = conv(raw)
                    break
                except ValueError:
                    continue
            out[key.strip()] = value
    out.update({k: v for k, v in schema.items() if k in _UNSUPPORTED_KEYWORDS or k in ("minItems", "format")})
    return out


# ------------------------------------------------------------------------------------- generate
def generate(schema: Schema, *, root: Schema | None = None, name: str = "value", depth: int = 0) -> Any:
    """A deterministic instance valid against `schema`."""
    root = schema if root is None else root
    schema = _resolve(schema, root)
    if "const" in schema:
        return schema["const"]
    if isinstance(schema.get("enum"), list) and schema["enum"]:
        return schema["enum"][0]
    for key in ("anyOf", "oneOf"):
        if isinstance(schema.get(key), list) and schema[key]:
            variants = [_resolve(v, root) for v in schema[key]]
            non_null = [v for v in variants if v.get("type") != "null"]
            pick = non_null[0] if non_null and depth < _MAX_DEPTH else variants[-1]
            return generate(pick, root=root, name=name, depth=depth + 1)
    if isinstance(schema.get("allOf"), list) and schema["allOf"]:
        merged: dict[str, Any] = {k: v for k, v in schema.items() if k != "allOf"}
        for sub in schema["allOf"]:
            sub = _resolve(sub, root)
            for k, v in sub.items():
                if k == "properties":
                    merged["properties"] = {**merged.get("properties", {}), **v}
                elif k == "required":
                    merged["required"] = [*merged.get("required", []), *v]
                else:
                    merged.setdefault(k, v)
        return generate(merged, root=root, name=name, depth=depth + 1)
    type_ = schema.get("type")
    if isinstance(type_, list):
        non_null_types = [t for t in type_ if t != "null"]
        type_ = non_null_types[0] if non_null_types else "null"
    if type_ is None:
        type_ = "object" if "properties" in schema else "array" if "items" in schema else "string"
    hints = _hints(schema)
    if type_ == "object":
        props: Mapping[str, Any] = schema.get("properties") or {}
        required = set(schema.get("required") or [])
        return {
            key: generate(sub, root=root, name=key, depth=depth + 1)
            for key, sub in props.items()
            if depth < _MAX_DEPTH or key in required
        }
    if type_ == "array":
        lo = int(hints.get("minItems", 0))
        hi = int(hints.get("maxItems", max(lo, 1)))
        count = max(lo, min(1 if depth < _MAX_DEPTH else 0, hi))
        items: Schema = schema["items"] if isinstance(schema.get("items"), Mapping) else {"type": "string"}
        return [generate(items, root=root, name=name, depth=depth + 1) for _ in range(count)]
    if type_ == "string":
        return _gen_string(name, hints)
    if type_ == "integer":
        return int(_gen_number(hints, integer=True))
    if type_ == "number":
        return _gen_number(hints, integer=False)
    if type_ == "boolean":
        return True
    if type_ == "null":
        return None
    raise ValueError(f"unsupported schema type {type_!r}")


def _gen_string(name: str, hints: Mapping[str, Any]) -> str:
    fmt = hints.get("format")
    if fmt == "uuid":
        return str(uuid.uuid5(uuid.NAMESPACE_URL, f"hookline-fake/{name}"))
    if isinstance(fmt, str) and fmt in _FORMAT_VALUES:
        return _FORMAT_VALUES[fmt]
    text = f"example {name}".replace("_", " ")
    lo, hi = int(hints.get("minLength", 0)), hints.get("maxLength")
    if len(text) < lo:
        text = (text + " " + "x" * lo)[:lo]
    if hi is not None and len(text) > int(hi):
        text = text[: int(hi)]
    return text


def _gen_number(hints: Mapping[str, Any], *, integer: bool) -> float:
    tiny = 1.0 if integer else 1e-6
    lo = max(float(hints.get("minimum", -math.inf)), float(hints.get("exclusiveMinimum", -math.inf)) + tiny)
    hi = min(float(hints.get("maximum", math.inf)), float(hints.get("exclusiveMaximum", math.inf)) - tiny)
    if integer:
        lo, hi = (math.ceil(lo) if lo > -math.inf else lo), (math.floor(hi) if hi < math.inf else hi)
    value = min(max(1.0 if integer else 1.5, lo), hi)
    multiple = hints.get("multipleOf")
    if multiple:
        m = float(multiple)
        value = math.ceil(value / m) * m
        if value > hi:
            value = math.floor(hi / m) * m
    return float(round(value)) if integer else value


# ------------------------------------------------------------------------------------- validate
def _type_ok(instance: Any, type_: str) -> bool:
    match type_:
        case "object":
            return isinstance(instance, dict)
        case "array":
            return isinstance(instance, list)
        case "string":
            return isinstance(instance, str)
        case "integer":
            if isinstance(instance, bool):
                return False
            return isinstance(instance, int) or (isinstance(instance, float) and instance.is_integer())
        case "number":
            return isinstance(instance, int | float) and not isinstance(instance, bool)
        case "boolean":
            return isinstance(instance, bool)
        case "null":
            return instance is None
    return False


def validate(instance: Any, schema: Schema, *, root: Schema | None = None, path: str = "$") -> list[str]:
    """Errors of `instance` against `schema` (JSON Schema subset); [] when valid."""
    root = schema if root is None else root
    schema = _resolve(schema, root)
    errors: list[str] = []
    if "const" in schema and instance != schema["const"]:
        errors.append(f"{path}: expected const {schema['const']!r}")
    if "enum" in schema and instance not in schema["enum"]:
        errors.append(f"{path}: {instance!r} not in enum {schema['enum']!r}")
    for key in ("anyOf", "oneOf"):
        if key in schema:
            ok = sum(not validate(instance, sub, root=root, path=path) for sub in schema[key])
            if ok == 0 or (key == "oneOf" and ok > 1):
                errors.append(f"{path}: matches {ok} of {key} variants")
    for sub in schema.get("allOf", []):
        errors += validate(instance, sub, root=root, path=path)
    type_ = schema.get("type")
    if type_ is not None:
        types = type_ if isinstance(type_, list) else [type_]
        if not any(_type_ok(instance, t) for t in types):
            return [*errors, f"{path}: expected type {type_}, got {type(instance).__name__}"]
    if isinstance(instance, dict):
        props: Mapping[str, Any] = schema.get("properties") or {}
        errors += [f"{path}: missing required {k!r}" for k in schema.get("required", []) if k not in instance]
        extra = schema.get("additionalProperties", True)
        for key, value in instance.items():
            if key in props:
                errors += validate(value, props[key], root=root, path=f"{path}.{key}")
            elif extra is False:
                errors.append(f"{path}: additional property {key!r} not allowed")
            elif isinstance(extra, Mapping):
                errors += validate(value, extra, root=root, path=f"{path}.{key}")
    elif isinstance(instance, list):
        if len(instance) < schema.get("minItems", 0):
            errors.append(f"{path}: fewer than {schema['minItems']} items")
        if "maxItems" in schema and len(instance) > schema["maxItems"]:
            errors.append(f"{path}: more than {schema['maxItems']} items")
        if isinstance(schema.get("items"), Mapping):
            for i, item in enumerate(instance):
                errors += validate(item, schema["items"], root=root, path=f"{path}[{i}]")
    elif isinstance(instance, str):
        errors += _validate_string(instance, schema, path)
    elif isinstance(instance, int | float) and not isinstance(instance, bool):
        for key, bad in (
            ("minimum", operator.lt),
            ("maximum", operator.gt),
            ("exclusiveMinimum", operator.le),
            ("exclusiveMaximum", operator.ge),
        ):
            if key in schema and bad(instance, schema[key]):
                errors.append(f"{path}: {instance} violates {key} {schema[key]}")
    return errors


def _validate_string(instance: str, schema: Schema, path: str) -> list[str]:
    errors: list[str] = []
    if len(instance) < schema.get("minLength", 0):
        errors.append(f"{path}: shorter than {schema['minLength']}")
    if "maxLength" in schema and len(instance) > schema["maxLength"]:
        errors.append(f"{path}: longer than {schema['maxLength']}")
    if "pattern" in schema and not re.search(schema["pattern"], instance):
        errors.append(f"{path}: does not match pattern {schema['pattern']!r}")
    fmt = schema.get("format")
    if fmt == "ipv6":
        try:
            ipaddress.IPv6Address(instance)
        except ValueError:
            errors.append(f"{path}: not a valid ipv6")
    elif isinstance(fmt, str) and fmt in _FORMAT_RES and not _FORMAT_RES[fmt].match(instance):
        errors.append(f"{path}: {instance!r} is not a valid {fmt}")
    return errors


# ------------------------------------------------------------------------------- strict grammar
def strict_schema_problems(schema: Any, *, root: Any = None, path: str = "schema") -> list[str]:
    """What the structured-outputs grammar rejects: objects without additionalProperties:false,
    numeric/length constraints, minItems > 1, unsupported string formats, remote $refs."""
    root = schema if root is None else root
    problems: list[str] = []
    if not isinstance(schema, Mapping):
        return [f"{path}: schema must be an object"]
    ref = schema.get("$ref")
    if isinstance(ref, str) and not ref.startswith("#"):
        problems.append(f"{path}: external $ref {ref!r} is not supported")
    for key in _UNSUPPORTED_KEYWORDS:
        if key in schema:
            problems.append(f"{path}: '{key}' is not supported")
    if schema.get("minItems", 0) not in (0, 1):
        problems.append(f"{path}: 'minItems' values other than 0 or 1 are not supported")
    fmt = schema.get("format")
    if fmt is not None and fmt not in SUPPORTED_FORMATS:
        problems.append(f"{path}: string format {fmt!r} is not supported")
    is_object = schema.get("type") == "object" or (isinstance(schema.get("type"), list) and "object" in schema["type"])
    if is_object and schema.get("additionalProperties") is not False:
        problems.append(f"{path}: For 'object' type, 'additionalProperties' must be explicitly set to false")
    for key in ("properties", "$defs", "definitions"):
        for name, sub in (schema.get(key) or {}).items():
            problems += strict_schema_problems(sub, root=root, path=f"{path}.{key}.{name}")
    for key in ("anyOf", "oneOf", "allOf"):
        for i, sub in enumerate(schema.get(key) or []):
            problems += strict_schema_problems(sub, root=root, path=f"{path}.{key}[{i}]")
    if isinstance(schema.get("items"), Mapping):
        problems += strict_schema_problems(schema["items"], root=root, path=f"{path}.items")
    return problems
