"""A pipeline's output contract, checked for what the Messages API's structured outputs take.

Not every valid JSON Schema can be sent: the worker turns the schema into the API's strict form
(``anthropic.transform_schema``, which app/ does not import) when it builds the first request, and
that refuses a subschema with no ``type`` (``{}``, ``{ description = "…" }``, ``{ not = … }``), a
``type`` that is a list (``["string", "null"]``) or a subschema that is not a table (``true``). Found
only then, it failed every event of the pipeline. :func:`api_schema_problem` walks the schema the way
that function does and names the first such place, so the file is refused at load instead; a test
keeps the two in step. An ``output_model`` (imported only by ``hookline check`` and the worker) is
checked by :func:`output_model_problem`: a pydantic model, whose JSON Schema passes the same walk.

An ``output_schema`` is read as the draft its ``$schema`` names (draft-04, draft-07, 2019-09, …),
2020-12 when it names none: checked against that draft at load (:func:`schema_validator`), and the
model's answers validated by the same draft in the worker.
"""

from __future__ import annotations

from typing import Any

import jsonschema
from jsonschema.protocols import Validator
from pydantic import BaseModel

from app.core.config._base import resolve_target

#: The ``type`` values structured outputs take: one of these, never a list.
API_TYPES = ("object", "array", "string", "number", "integer", "boolean", "null")
_COMBINERS = ("anyOf", "oneOf", "allOf")


def schema_validator(schema: dict[str, Any]) -> type[Validator]:
    """The validator of the draft ``schema``'s ``$schema`` names; 2020-12 when it names none (or one
    jsonschema does not know). What the file is checked against at load and the answers in the worker."""
    return jsonschema.validators.validator_for(schema, default=jsonschema.Draft202012Validator)


def schema_error(schema: dict[str, Any]) -> str | None:
    """Why ``schema`` is not a valid JSON Schema of its draft, with the place; None when it is one."""
    cls = schema_validator(schema)
    try:
        cls.check_schema(schema)
    except jsonschema.SchemaError as e:
        where = "/".join(str(p) for p in e.absolute_path) or "(root)"
        draft = cls.__name__.removeprefix("Draft").removesuffix("Validator")
        named = f" (as draft {draft if len(draft) <= 2 else f'{draft[:4]}-{draft[4:]}'}, which its $schema names)"
        return f"not a valid JSON Schema at {where}: {e.message}" + (named if "$schema" in schema else "")
    return None


def _primitive(value: Any) -> bool:
    return value is None or isinstance(value, str | int | float | bool)


def _at(where: str, *steps: object) -> str:
    return "/".join([*([] if where == "(root)" else [where]), *map(str, steps)])


def api_schema_problem(schema: Any, where: str = "(root)") -> str | None:
    """The first place of ``schema`` (a valid JSON Schema) the Messages API's structured outputs cannot
    take, with why; None when there is none. Each subschema the API reads (a property, ``items``, an
    ``anyOf``/``oneOf``/``allOf`` variant, a ``$defs`` entry) must be a table with one ``type``, or
    ``anyOf``/``oneOf``/``allOf``, ``$ref``, or a ``const`` / non-empty ``enum`` of plain values."""
    if not isinstance(schema, dict):
        return f"{where}: a schema here must be a table (a JSON object), not {schema!r}"
    defs = schema.get("$defs")
    for name, sub in (defs if isinstance(defs, dict) else {}).items():
        if problem := api_schema_problem(sub, _at(where, "$defs", name)):
            return problem
    if "$ref" in schema:
        ref = schema["$ref"]
        if isinstance(ref, str) and ref.startswith("#/definitions/"):  # transform_schema keeps $defs only
            return (
                f"{where}: $ref {ref!r} points into definitions, which the request to the Messages API "
                "does not carry; name them $defs and point $ref at #/$defs/…"
            )
        return None
    enum = schema.get("enum")
    literal = (isinstance(enum, list) and bool(enum) and all(map(_primitive, enum))) or (
        "const" in schema and _primitive(schema["const"])
    )
    combiner = next((k for k in _COMBINERS if isinstance(schema.get(k), list)), None)
    if combiner is not None:
        for i, variant in enumerate(schema[combiner]):
            if problem := api_schema_problem(variant, _at(where, combiner, i)):
                return problem
    kind = None if literal else schema.get("type")
    if kind is None and combiner is None and not literal:
        return (
            f"{where}: the Messages API needs a 'type' here (or anyOf, oneOf, allOf, $ref, const, "
            "or a non-empty enum of strings, numbers, booleans or null)"
        )
    if kind is not None and kind not in API_TYPES:
        return (
            f"{where}: the Messages API takes one 'type', not {kind!r}; for a value that may be null use "
            'anyOf = [{ type = "string" }, { type = "null" }]'
        )
    if kind == "object":
        props = schema.get("properties")
        for name, sub in (props if isinstance(props, dict) else {}).items():
            if problem := api_schema_problem(sub, _at(where, "properties", name)):
                return problem
    elif kind == "array" and schema.get("items") is not None:
        return api_schema_problem(schema["items"], _at(where, "items"))
    return None


def output_model_problem(target: str) -> str | None:
    """What is wrong with an ``output_model`` that imports (``hookline check``): not a pydantic model,
    or a field whose JSON Schema the Messages API cannot take (``Any`` has no ``type``)."""
    model = resolve_target(target)
    if not (isinstance(model, type) and issubclass(model, BaseModel)):
        return f"{target} is not a pydantic BaseModel"
    problem = api_schema_problem(model.model_json_schema())
    return None if problem is None else f"{target}'s JSON Schema at {problem}"
