"""A ``sql`` action's data exception (class 22) never carries the refused value into
``action_runs.error``, however the value is shaped: Postgres quotes it whole in ``message_primary``,
line breaks and quotes of its own included. Real Postgres raises each error; ``error_text`` is what
the action stores."""

from __future__ import annotations

from typing import Any

import psycopg
import pytest

from worker.actions.sql import error_text

SECRET = "SSN 078-05-1120"
VALUES = [
    SECRET,
    f"note:\n{SECRET}",
    f'note: "x"\n{SECRET}',
    f'"quoted" then\r\n{SECRET} "and" more\n"',
    f'{{"a": "{SECRET}\n',
    f'line one\n"{SECRET}"\nline three',
]


@pytest.mark.parametrize(
    ("cast", "before"),
    [
        ("int", "invalid input syntax for type integer: "),
        ("uuid", "invalid input syntax for type uuid: "),
        ("date", "invalid input syntax for type date: "),
        ("int[]", "malformed array literal: "),
    ],
)
@pytest.mark.parametrize("value", VALUES, ids=range(len(VALUES)))
def test_a_refused_value_is_left_out_whatever_its_lines_and_quotes(
    conn: psycopg.Connection[Any], cast: str, before: str, value: str
) -> None:
    with pytest.raises(psycopg.DataError) as caught:
        conn.execute(f"SELECT %s::{cast}", (value,))
    text = error_text(caught.value)
    assert text == before + "<value not shown>"
    assert "078" not in text and "1120" not in text


def test_the_words_after_the_value_are_kept(conn: psycopg.Connection[Any]) -> None:
    with pytest.raises(psycopg.DataError) as caught:
        conn.execute("SELECT %s::text::int", ("078051120078051120",))
    assert error_text(caught.value) == "value <value not shown> is out of range for type integer"
