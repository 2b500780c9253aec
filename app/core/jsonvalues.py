"""Reading the database's ``json``/``jsonb`` values into Python, whatever number they hold.

Postgres keeps a number exactly, however long; Python refuses to turn a string of more than 4,300
digits into an ``int`` (``sys.get_int_max_str_digits``, a guard against slow conversions) and
``json.loads`` then raises. Ingest never stores such a number (a webhook body holding one is a 400), but
a watched table's row can: a ``numeric`` column of 1e5000, or a ``json`` column holding one. The worker
could not read that event: its job failed, again and again, and the events claimed with it in the same
statement stayed ``processing``. :func:`loads` reads such an integer as the string of its digits
(exact, and JSON again wherever it goes); every other value as ``json.loads`` does, at its speed.

A number with a fraction or an exponent beyond a float's range (a ``numeric`` of 1e400 + 0.5) does not
fail: ``json.loads`` reads it as ``inf``, which no JSON can hold again (the model's input said
``Infinity``, the admin API answered it, a strict JSON reader refuses it). :func:`loads` reads such a
number as its text too. (``jsonb`` holds no NaN or Infinity: a ``float8`` column's are the strings
``"NaN"``, ``"Infinity"`` in a row's payload.)

The worker's connections (worker/db.py) and asyncpg's in the web process and the CLI (app/core/db.py)
read ``json`` and ``jsonb`` with it.
"""

from __future__ import annotations

import json
from typing import Any


def loads(data: str | bytes) -> Any:
    """``json.loads``, except that an integer too long for Python's ``int`` is the string of its digits,
    and a number beyond a float's range the string of its text."""
    try:
        return json.loads(data, parse_float=_float)
    except json.JSONDecodeError:
        raise
    except ValueError:  # "Exceeds the limit (4300 digits) for integer string conversion"
        return json.loads(data, parse_int=_integer, parse_float=_float)


def _float(text: str) -> float | str:
    value = float(text)
    return value if value - value == 0.0 else text  # inf - inf is nan; JSON text holds no NaN


def _integer(text: str) -> int | str:
    try:
        return int(text)
    except ValueError:
        return text
