"""Where the SQL lives, and the named-query loader.

Runtime SQL is kept in ``sql/queries/*.sql`` as named blocks::

    -- name: insert_event
    -- Store a verified delivery; nothing when (source, delivery_id) exists.
    INSERT INTO ...;

Python only names the block, through a :class:`NamedQueries` typed by a ``Literal`` of the file's
names (``app/core/querynames.py``): a mistyped name is a mypy error, and a file whose names differ
from its ``Literal`` fails at import. ``tests/integration/test_schema.py`` prepares every block
against a migrated database, our compile-time check.
"""

from __future__ import annotations

import functools
import re
from pathlib import Path
from typing import Any, Generic, TypeVar, get_args

_APP = Path(__file__).resolve().parents[1]


def sql_dir() -> Path:
    """``sql/`` beside the packages in a checkout, or ``app/_sql`` inside an installed wheel."""
    for candidate in (_APP.parent / "sql", _APP / "_sql"):
        if (candidate / "migrations").is_dir():
            return candidate
    raise FileNotFoundError("hookline's sql/ folder was not found next to the app package")


_NAME = re.compile(r"^--\s*name:\s*([a-z_][a-z0-9_]*)\s*$", re.MULTILINE)


def parse_queries(text: str) -> dict[str, str]:
    """Split a file into its named blocks. Duplicate names are an error."""
    out: dict[str, str] = {}
    matches = list(_NAME.finditer(text))
    for i, m in enumerate(matches):
        end = matches[i + 1].start() if i + 1 < len(matches) else len(text)
        lines = [ln for ln in text[m.end() : end].strip().splitlines() if not ln.lstrip().startswith("--")]
        body = "\n".join(lines).strip().rstrip(";").strip()
        if m.group(1) in out:
            raise ValueError(f"duplicate query name {m.group(1)!r}")
        out[m.group(1)] = body
    return out


@functools.cache
def queries(name: str) -> dict[str, str]:
    """The named blocks of ``sql/queries/<name>.sql``."""
    return parse_queries((sql_dir() / "queries" / f"{name}.sql").read_text(encoding="utf-8"))


N = TypeVar("N", bound=str)


class NamedQueries(Generic[N]):
    """The blocks of one ``sql/queries/<file>.sql``, indexed by a ``Literal`` of its names."""

    def __init__(self, file: str, names: Any) -> None:
        self._blocks = queries(file)
        expected, actual = set(get_args(names)), set(self._blocks)
        if expected != actual:
            raise RuntimeError(
                f"sql/queries/{file}.sql and app/core/querynames.py differ: "
                f"blocks without a name in the Literal {sorted(actual - expected)}, "
                f"names without a block {sorted(expected - actual)}"
            )

    def __getitem__(self, name: N) -> str:
        return self._blocks[name]
