"""A source's ``schemas`` are read as the draft their ``$schema`` names (2020-12 when none), as pipelines'
output schemas are: checked as that draft at load, and ingest validates payloads by it. Both used 2020-12
whatever the schema named: a draft-07 list of ``items`` was refused at load, and ``dependencies`` (not a
2020-12 keyword) let every payload through."""

from __future__ import annotations

from typing import Any

import pytest

from app.core.config import Source, parse_config
from app.web.payloads import schema_violation
from tests.unit.test_config import _err
from tests.unit.test_output_schemas import DRAFT_07, _draft4

DRAFT_2020_12 = "https://json-schema.org/draft/2020-12/schema"


def _config(schema: dict[str, Any]) -> dict[str, Any]:
    return {"sources": {"sw": {"provider": "stripe", "secrets_env": ["STRIPE_SECRET"], "schemas": {"*": schema}}}}


def _source(schema: dict[str, Any]) -> Source:
    return parse_config(_config(schema)).sources["sw"]


def test_a_draft_07_schema_is_taken_at_load_and_validates_as_draft_07() -> None:
    tags = {"type": "array", "items": [{"type": "string"}], "additionalItems": False}
    src = _source({"$schema": DRAFT_07, "type": "object", "properties": {"tags": tags}})
    assert schema_violation(src, "t", {"tags": ["a"]}) is None
    assert (
        schema_violation(src, "t", {"tags": ["a", "SECRET"]})
        == "tags: has more than 1 item(s) (additionalItems is false)"
    )
    assert schema_violation(src, "t", {"tags": [5]}) == "tags/0: is not of type 'string'"


def test_draft_07_dependencies_are_checked() -> None:
    src = _source({"$schema": DRAFT_07, "type": "object", "dependencies": {"a": ["b"], "c": {"required": ["d"]}}})
    assert schema_violation(src, "t", {"a": "SECRET", "b": 1, "c": 2, "d": 3}) is None
    assert schema_violation(src, "t", {"a": "SECRET"}) == "(root): 'b' is required when 'a' is present (dependencies)"
    assert schema_violation(src, "t", {"c": "SECRET"}) == "(root): 'd' is a required property"


def test_a_draft_04_schema_reads_its_boolean_exclusive_minimum() -> None:
    src = _source(_draft4(True))
    assert schema_violation(src, "t", {"n": 2}) is None
    assert schema_violation(src, "t", {"n": 1}) == "n: is less than or equal to the minimum of 1 (exclusiveMinimum)"


@pytest.mark.parametrize(
    ("schema", "error"),
    [
        (
            _draft4(1),
            "at properties/n/exclusiveMinimum: 1 is not of type 'boolean' (as draft 4, which its $schema names)",
        ),
        (
            {"$schema": DRAFT_2020_12, "properties": {"tags": {"items": [{"type": "string"}]}}},
            "at properties/tags/items: [{'type': 'string'}] is not of type 'object', 'boolean' "
            "(as draft 2020-12, which its $schema names)",
        ),
        ({"type": "nope"}, "at type: 'nope' is not valid under any of the given schemas"),
    ],
)
def test_a_schema_invalid_as_its_draft_is_refused_at_load_naming_the_place(schema: dict[str, Any], error: str) -> None:
    message = _err(_config(schema))
    assert f"sources.sw.schemas: schemas.'*' is not a valid JSON Schema {error}" in message, message
