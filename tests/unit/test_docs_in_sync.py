"""The README is the operating manual: its tables and commands must match the code."""

from __future__ import annotations

import re
import subprocess
from pathlib import Path

from app.core.settings import Settings

ROOT = Path(__file__).resolve().parents[2]
README = (ROOT / "README.md").read_text()


def _env_name(field: str) -> str:
    info = Settings.model_fields[field]
    alias = info.validation_alias
    return str(alias.choices[0]) if alias is not None else f"HOOKLINE_{field.upper()}"  # type: ignore[union-attr]


def test_every_setting_is_in_the_readme_table_and_nothing_else() -> None:
    table = README.split("<!-- env-table:start -->")[1].split("<!-- env-table:end -->")[0]
    documented = set(re.findall(r"^\| `([A-Z_]+)` \|", table, re.MULTILINE))
    assert documented == {_env_name(f) for f in Settings.model_fields}
    for field, info in Settings.model_fields.items():
        row = next(line for line in table.splitlines() if line.startswith(f"| `{_env_name(field)}` |"))
        default = "—" if info.default is None else f"`{info.default}`"
        assert f"| {default} |" in row, f"{_env_name(field)}: README default differs from {info.default!r}"


def test_ci_runs_the_readme_test_command_verbatim() -> None:
    out = subprocess.run(
        [
            "awk",
            r"/<!-- test-command/{grab=1; next} grab && /^```sh/{next} grab && /^```/{exit} grab{print}",
            str(ROOT / "README.md"),
        ],
        capture_output=True,
        text=True,
        check=True,
    ).stdout.strip()
    assert out.startswith("python3 -m venv .venv") and out.endswith("pytest")
    assert 'eval "$test_command"' in (ROOT / ".ci" / "run").read_text()


def test_every_cli_command_is_documented() -> None:
    from app.cli.main import COMMANDS, build_parser

    build_parser()  # registers the commands other modules add (watch, bench)
    for name in COMMANDS:
        assert f"`hookline {name}" in README, name


def test_price_table_matches_the_code() -> None:
    from worker.pricing import PRICES

    table = README.split("<!-- price-table:start -->")[1].split("<!-- price-table:end -->")[0]
    documented = {
        m.group(1): tuple(c.strip() for c in m.group(2).split("|"))
        for m in re.finditer(r"^\| `([^`]+)` \|(.+)\|$", table, re.MULTILINE)
    }
    assert documented == PRICES
