"""schemathesis against the published OpenAPI description (``GET /openapi.json``) on the real server,
with sources that use allowed_ips and schemas too: no 5xx, every status and content type documented."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Iterator
from typing import Any

import httpx
import psycopg
import pytest
import schemathesis
from hypothesis import HealthCheck, settings
from schemathesis import checks

from app.web.openapi import document
from tests.conftest import TEST_DB
from tests.fuzz import EXAMPLES
from tests.harness import config_from, make_settings, web_server

SECRET = "whsec_" + "c2NoZW1hdGhlc2lzLXNlY3JldC0wMTIzNDU2Nzg5"
RAN = {"cases": 0}
CONFIG = config_from(
    {
        "sources": {
            "github": {"provider": "github", "secrets_env": ["HL_ST_SECRET"], "allowed_ips": ["127.0.0.0/8"]},
            "lead": {
                "provider": "standard_webhooks",
                "secrets_env": ["HL_ST_SECRET"],
                "schemas": {"*": {"type": "object", "required": ["email"]}},
            },
        }
    }
)


@pytest.fixture(scope="module")
def base_url(pg_server: Any, hookline_pg: Any) -> Iterator[str]:
    """One real server for the module, on a database of its own cloned from the migrated template."""
    name = f"{TEST_DB}_st"
    admin = pg_server.url("postgres")
    with psycopg.connect(admin, autocommit=True) as c:
        c.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        c.execute(f'CREATE DATABASE "{name}" TEMPLATE "{TEST_DB}_tmpl"')
    mp = pytest.MonkeyPatch()
    mp.setenv("HL_ST_SECRET", SECRET)
    started, stop = threading.Event(), threading.Event()
    box: dict[str, str] = {}

    async def serve() -> None:
        async with web_server(make_settings(pg_server.url(name)), CONFIG) as base:
            box["base"] = base
            started.set()
            await asyncio.to_thread(stop.wait)

    thread = threading.Thread(target=asyncio.run, args=(serve(),), daemon=True)
    thread.start()
    assert started.wait(30)
    yield box["base"]
    stop.set()
    thread.join(30)
    mp.undo()
    with psycopg.connect(admin, autocommit=True) as c:
        c.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


schema = schemathesis.openapi.from_dict(document(make_settings(None), CONFIG))


def test_the_document_tested_is_the_one_served(base_url: str) -> None:
    assert httpx.get(f"{base_url}/openapi.json").json() == document(make_settings(None), CONFIG)


@schema.parametrize()
@settings(max_examples=EXAMPLES or 25, deadline=None, suppress_health_check=list(HealthCheck), database=None)
def test_api_conforms_to_its_published_description(case: Any, base_url: str) -> None:
    RAN["cases"] += 1
    # positive_data_acceptance is off: a schema-valid request without a valid signature is rightly
    # refused (401); every other check applies, not_a_server_error above all.
    case.call_and_validate(base_url=base_url, excluded_checks=[checks.positive_data_acceptance])


def test_schemathesis_case_count(record_property: Any) -> None:
    record_property("schemathesis_cases", RAN["cases"])
    print(f"\nschemathesis: {RAN['cases']} cases")
