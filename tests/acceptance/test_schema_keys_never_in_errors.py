"""A schema violation never names a property of the payload's own: under ``additionalProperties`` or
``patternProperties`` the keys are the sender's data (a map keyed by e-mail, card number, account id),
so the path shows them as ``*``; only the names the schema declares (``properties``) and array indexes
are shown. Keys refused by ``additionalProperties: false`` or ``propertyNames`` are counted, not named.
The 422 (``on_invalid = "reject"``) and the stored ``detail`` (``on_invalid = "store"``) are the same."""

from __future__ import annotations

from typing import Any

import httpx
import pytest

from tests.acceptance.test_values_never_in_errors import SECRET, _signed
from tests.harness import config_from, make_settings, rows, web_server

CARD = "4111111111111111"
EMAIL = "alice@example.com"
ACCOUNT = "acct_SECRET42"
MAP = {"type": "object", "additionalProperties": {"type": "integer"}}
CASES: list[tuple[dict[str, Any], dict[str, Any], str]] = [
    (MAP, {CARD: "x"}, "*: is not of type 'integer'"),
    (MAP, {EMAIL: "x"}, "*: is not of type 'integer'"),
    (
        {
            "type": "object",
            "properties": {
                "accounts": {
                    "type": "object",
                    "additionalProperties": {"type": "object", "properties": {"balance": {"type": "integer"}}},
                }
            },
        },
        {"accounts": {ACCOUNT: {"balance": "x"}}},
        "accounts/*/balance: is not of type 'integer'",
    ),
    (
        {"type": "object", "patternProperties": {"@": {"type": "array", "items": {"type": "integer"}}}},
        {EMAIL: [1, "x"]},
        "*/1: is not of type 'integer'",
    ),
    (
        {"type": "object", "properties": {"a": {"type": "integer"}}, "additionalProperties": False},
        {CARD: 1, EMAIL: 2},
        "(root): has 2 properties the schema does not allow",
    ),
    (
        {"type": "object", "properties": {"a": {"type": "integer"}}, "additionalProperties": False},
        {ACCOUNT: 1},
        "(root): has 1 property the schema does not allow",
    ),
    (
        {"type": "object", "propertyNames": {"pattern": "^[a-z]+$"}},
        {ACCOUNT: 1},
        "(root): a property name does not match pattern '^[a-z]+$'",
    ),
    (
        {"type": "object", "additionalProperties": {"propertyNames": {"maxLength": 4}}},
        {EMAIL: {CARD: 1}},
        "*: a property name is longer than the maxLength of 4",
    ),
]


def _config(schema: dict[str, Any], on_invalid: str) -> Any:
    with_type = {**schema, "properties": {**schema.get("properties", {}), "type": {"type": "string"}}}
    if "propertyNames" in schema:
        with_type = schema  # "type" itself must pass the name rule, so no "type" property here
    source = {
        "provider": "standard_webhooks",
        "secrets_env": ["HL_SW_SECRET"],
        "schemas": {"*": with_type},
        "on_invalid": on_invalid,
    }
    return config_from({"sources": {"sw": source}})


@pytest.mark.parametrize(("schema", "payload", "expected"), CASES, ids=range(len(CASES)))
async def test_the_payloads_own_keys_are_never_in_a_schema_violation(
    db_url: str, monkeypatch: pytest.MonkeyPatch, schema: dict[str, Any], payload: dict[str, Any], expected: str
) -> None:
    monkeypatch.setenv("HL_SW_SECRET", SECRET)
    body_payload = payload if "propertyNames" in schema else {"type": "t", **payload}
    async with web_server(make_settings(db_url), _config(schema, "reject")) as base, httpx.AsyncClient() as client:
        body, headers = _signed(body_payload)
        refused = await client.post(f"{base}/webhooks/sw", content=body, headers=headers)
    assert refused.status_code == 422
    assert refused.json() == {
        "error": "invalid_payload",
        "detail": f"payload does not match the schema for this event type: {expected}",
    }
    async with web_server(make_settings(db_url), _config(schema, "store")) as base, httpx.AsyncClient() as client:
        body, headers = _signed(body_payload)
        stored = await client.post(f"{base}/webhooks/sw", content=body, headers=headers)
    assert stored.status_code == 200, stored.text
    ((detail,),) = rows(db_url, "SELECT detail FROM hookline.events")
    assert detail == f"payload does not match the schema: {expected}"
    for text in (refused.text, detail):
        assert CARD not in text and "alice" not in text and "SECRET" not in text
