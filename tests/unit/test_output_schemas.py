"""An output_schema (or output_model) must be one the Messages API's structured outputs take: the
worker turns it into the API's strict form (``anthropic.transform_schema``) when it builds the first
request, and a valid JSON Schema that function refuses failed every event of the pipeline, found only
then. The config check walks the schema as that function does; these tests keep the two in step."""

from __future__ import annotations

import copy
from typing import Any

import anthropic
import pytest

from app.core.config import environment_problems, parse_config
from tests import pipeline_models
from tests.unit.test_config import GOOD, _err
from worker.prompt import output_spec

NEEDS_A_TYPE = "the Messages API needs a 'type' here"

#: Valid JSON Schemas (draft 2020-12) the API cannot take, and where the error says the problem is.
REFUSED: list[tuple[dict[str, Any], str]] = [
    ({"type": "object", "properties": {"note": {"description": "anything"}}}, f"properties/note: {NEEDS_A_TYPE}"),
    ({"type": "object", "properties": {"note": {}}}, f"properties/note: {NEEDS_A_TYPE}"),
    (
        {"type": "object", "properties": {"note": {"type": ["string", "null"]}}},
        "properties/note: the Messages API takes one 'type', not ['string', 'null']",
    ),
    (
        {"type": "object", "properties": {"tags": {"type": "array", "items": {}}}},
        f"properties/tags/items: {NEEDS_A_TYPE}",
    ),
    ({"type": "object", "properties": {"x": True}}, "properties/x: a schema here must be a table"),
    (
        {"type": "object", "properties": {"x": {"anyOf": [{"type": "string"}, {"not": {"type": "string"}}]}}},
        f"properties/x/anyOf/1: {NEEDS_A_TYPE}",
    ),
    (
        {"type": "object", "$defs": {"d": {"title": "D"}}, "properties": {"x": {"$ref": "#/$defs/d"}}},
        f"$defs/d: {NEEDS_A_TYPE}",
    ),
]

#: Schemas the API takes: none of them may be refused.
TAKEN: list[dict[str, Any]] = [
    {"type": "object"},
    {
        "type": "object",
        "properties": {
            "category": {"enum": ["billing", "bug"]},
            "kind": {"const": "triage"},
            "note": {"anyOf": [{"type": "string"}, {"type": "null"}]},
            "score": {"type": "integer", "minimum": 1, "maximum": 5},
            "tags": {"type": "array", "items": {"type": "string"}, "minItems": 2},
            "owner": {"$ref": "#/$defs/person"},
            "meta": {"type": "object", "additionalProperties": {}},
            "either": {"oneOf": [{"type": "string"}, {"type": "integer"}]},
            "both": {"allOf": [{"type": "object", "properties": {"a": {"type": "string"}}}]},
            "nullable_enum": {"type": ["string", "null"], "enum": ["a", None]},
        },
        "required": ["category"],
        "$defs": {"person": {"type": "object", "properties": {"name": {"type": "string"}}}},
    },
]


def _with_schema(schema: dict[str, Any]) -> dict[str, Any]:
    data = copy.deepcopy(GOOD)
    data["pipelines"]["p"]["output_schema"] = schema
    return data


@pytest.mark.parametrize(("schema", "where"), REFUSED)
def test_an_output_schema_the_messages_api_cannot_take_is_refused_at_load(schema: dict[str, Any], where: str) -> None:
    with pytest.raises((ValueError, TypeError, AssertionError)):  # what the worker met at the first event
        anthropic.transform_schema(copy.deepcopy(schema))
    assert f"pipelines.p.output_schema: {where}" in _err(_with_schema(schema))


@pytest.mark.parametrize("schema", TAKEN)
def test_an_output_schema_the_api_takes_is_accepted(schema: dict[str, Any]) -> None:
    anthropic.transform_schema(copy.deepcopy(schema))
    assert parse_config(_with_schema(schema)).pipelines["p"].output_schema == schema


def test_hookline_check_names_an_output_model_the_worker_cannot_use() -> None:
    with pytest.raises(ValueError, match="must have a 'type'"):
        anthropic.transform_schema(pipeline_models.Loose)
    data = copy.deepcopy(GOOD)
    pipes = data["pipelines"]
    base = pipes.pop("p")
    base.pop("output_schema")
    base.pop("name", None)  # parse_config writes it into the table it reads (GOOD too)
    base["actions"] = []
    for name, target in (("loose", "Loose"), ("not-a-model", "give_back"), ("good", "Triage")):
        pipes[name] = {**base, "output_model": f"tests.pipeline_models:{target}"}
    problems = environment_problems(parse_config(data), {"STRIPE_SECRET": "whsec_x"})
    assert problems == [
        f"pipelines.loose.output_model: tests.pipeline_models:Loose's JSON Schema at properties/extra: {NEEDS_A_TYPE} "
        "(or anyOf, oneOf, allOf, $ref, const, or a non-empty enum of strings, numbers, booleans or null)",
        "pipelines.not-a-model.output_model: tests.pipeline_models:give_back is not a pydantic BaseModel",
    ]


DRAFT_04 = "http://json-schema.org/draft-04/schema#"
DRAFT_07 = "http://json-schema.org/draft-07/schema#"


def _draft4(exclusive_minimum: Any) -> dict[str, Any]:
    n = {"type": "integer", "minimum": 1, "exclusiveMinimum": exclusive_minimum}
    return {"$schema": DRAFT_04, "type": "object", "properties": {"n": n}}


def test_an_output_schema_is_checked_as_the_draft_its_schema_names() -> None:
    """Checked against 2020-12 whatever it named, a draft-04 schema's boolean exclusiveMinimum was
    refused, and a number there (2020-12's form) taken, though the worker validates the answers by
    the draft named, which reads it otherwise."""
    spec = output_spec(parse_config(_with_schema(_draft4(True))).pipelines["p"])  # what the worker builds
    assert spec.validate({"n": 2}) == {"n": 2}
    with pytest.raises(ValueError, match="less than or equal to the minimum of 1"):
        spec.validate({"n": 1})
    assert (
        "pipelines.p.output_schema: not a valid JSON Schema at properties/n/exclusiveMinimum: "
        "1 is not of type 'boolean' (as draft 4, which its $schema names)"
    ) in _err(_with_schema(_draft4(1)))
    draft7 = {"$schema": DRAFT_07, "type": "object", "properties": {"tags": {"type": "array", "items": "x"}}}
    assert _err(_with_schema(draft7)).endswith(
        "at properties/tags/items: 'x' is not valid under any of the given schemas "
        "(as draft 7, which its $schema names)"
    )


def _with_definitions(where: str) -> dict[str, Any]:
    return {
        "$schema": DRAFT_07,
        "type": "object",
        where: {"level": {"enum": ["low", "high"]}},
        "properties": {"level": {"$ref": f"#/{where}/level"}},
    }


def test_a_ref_into_definitions_is_refused_at_load() -> None:
    """Draft-07's ``definitions``: the SDK's transform keeps only $defs (it moves anything else into the
    description text), so the request carried a $ref to a place it did not hold."""
    sent = anthropic.transform_schema(_with_definitions("definitions"))
    assert "definitions" not in sent and sent["properties"]["level"] == {"$ref": "#/definitions/level"}
    assert "pipelines.p.output_schema: properties/level: $ref '#/definitions/level' points into definitions" in (
        _err(_with_schema(_with_definitions("definitions")))
    )
    schema = _with_definitions("$defs")
    assert parse_config(_with_schema(schema)).pipelines["p"].output_schema == schema
