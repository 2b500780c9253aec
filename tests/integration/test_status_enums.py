"""The Python status enums and the SQL CHECK constraints name the same values."""

from __future__ import annotations

import re
from enum import StrEnum

import psycopg
import pytest

from app.core.status import CHECKED


@pytest.mark.parametrize("enum", list(CHECKED), ids=lambda e: e.__name__)
def test_enum_matches_check_constraint(conn: psycopg.Connection, enum: type[StrEnum]) -> None:
    table, constraint = CHECKED[enum]
    row = conn.execute(
        "SELECT pg_get_constraintdef(oid) FROM pg_constraint WHERE conrelid = %s::regclass AND conname = %s",
        (table, constraint),
    ).fetchone()
    assert row is not None, f"{table} has no constraint {constraint}"
    allowed = set(re.findall(r"'([^']+)'::text", row[0]))
    assert allowed == {m.value for m in enum}
