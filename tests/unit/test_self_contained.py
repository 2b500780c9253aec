"""Nothing in the repository reaches outside its own root (a fresh clone must run on its own).

Two checks: a scan of every source file in app/, worker/, tests/ and .ci/ for the ways code has
reached out before (the reference folder beside our checkouts by a relative path or a path part,
``parents[N]`` or ``.parent`` chains that climb above the root, the root's parent, absolute paths
into the machine's work folders), and a
runtime check that every module-level ``Path`` constant of every importable module resolves to a
place under the root.
"""

from __future__ import annotations

import importlib
import pkgutil
import re
from collections.abc import Iterator
from pathlib import Path
from types import ModuleType

import pytest

from tests.datafiles import ROOT

SCANNED = ("app", "worker", "tests", ".ci")
SUFFIXES = {".py", ".sh", ".toml", ".cfg", ".ini", ""}  # "" → scripts such as .ci/run
SKIPPED_DIRS = {"__pycache__", "data", "samples"}  # data folders hold no code

# Built by concatenation so that this file's own patterns do not match themselves.
_DOTDOT = "." + "./"
_FORBIDDEN_TEXT = [
    (re.compile("(?:" + re.escape(_DOTDOT) + ")+sha" + "red"), "a relative path to the reference folder"),
    (re.compile(r"""/\s*["']""" + "sha" + r"""red["']"""), 'a "shared" path part'),
    (re.compile(r"""(?<![\w.])/""" + "work" + r"""/"""), "an absolute path into /work"),
    (re.compile(r"\b[A-Z_]*ROOT\.parent\b"), "the parent of the repository root"),
    (re.compile(re.escape(_DOTDOT) + re.escape(_DOTDOT) + r"\w"), "a path climbing two levels up"),
]
_FILE = "X = Path(__" + "file__)"
_PARENTS_INDEX = re.compile(r"__file__\)(?:\.resolve\(\))?\.parents\[(\d+)\]")
_PARENT_CHAIN = re.compile(r"__file__\)(?:\.resolve\(\))?((?:\.parent\b)+)")


def source_files() -> Iterator[Path]:
    for top in SCANNED:
        base = ROOT / top
        if base.is_file():
            yield base
            continue
        for path in sorted(base.rglob("*")):
            rel = path.relative_to(ROOT)
            if not path.is_file() or SKIPPED_DIRS & set(rel.parts) or path.suffix not in SUFFIXES:
                continue
            yield path


def problems_in(path: Path, root: Path = ROOT) -> list[str]:
    rel = path.relative_to(root)
    # Path(__file__).parents[N] stays inside the root while N < number of folders above the file.
    max_up = len(rel.parts) - 1
    found: list[str] = []
    text = path.read_text(encoding="utf-8", errors="replace")
    for lineno, line in enumerate(text.splitlines(), start=1):
        for pattern, what in _FORBIDDEN_TEXT:
            if pattern.search(line):
                found.append(f"{rel}:{lineno}: {what}")
        for match in _PARENTS_INDEX.finditer(line):
            if int(match.group(1)) > max_up:
                found.append(f"{rel}:{lineno}: parents[{match.group(1)}] climbs above the repository root")
        for match in _PARENT_CHAIN.finditer(line):
            if match.group(1).count(".parent") - 1 > max_up:
                found.append(f"{rel}:{lineno}: a .parent chain climbs above the repository root")
    return found


def test_the_scan_finds_something_to_scan() -> None:
    files = {p.relative_to(ROOT).as_posix() for p in source_files()}
    assert {".ci/run", "app/cli/send.py", "tests/conftest.py", "worker/tasks.py"} <= files


def test_no_source_reaches_outside_the_repository() -> None:
    problems = [p for path in source_files() for p in problems_in(path)]
    assert not problems, "code reaching outside the repository root:\n" + "\n".join(problems)


@pytest.mark.parametrize(
    ("rel", "line", "bad"),
    [
        ("tests/unit/test_x.py", _FILE + ".resolve().parents[3] / 'data'", True),
        ("tests/unit/test_x.py", _FILE + ".resolve().parents[2] / 'data'", False),
        ("app/x.py", _FILE + ".parent.parent.parent", True),
        ("app/x.py", _FILE + ".parent.parent", False),
        ("app/x.py", _FILE + ".parent", False),
        ("tests/x.py", "SHARED = ROOT" + ".parent / 'x'", True),
        ("tests/x.py", "p = DATA / 'sha" + "red' / 'v.json'", True),
        ("tests/x.py", "p = Path('" + _DOTDOT + "shared/payloads')", True),
        (".ci/run", "cp -r /" + "work/shared .", True),
        (".ci/run", "cd " + _DOTDOT + _DOTDOT + "elsewhere", True),
        (".ci/run", 'cd "$(dirname "$0")/' + _DOTDOT + '"', False),
    ],
)
def test_the_scan_catches_what_it_should(tmp_path: Path, rel: str, line: str, bad: bool) -> None:
    fake_root = tmp_path / "repo"
    path = fake_root / rel
    path.parent.mkdir(parents=True)
    path.write_text(line + "\n")
    assert bool(problems_in(path, fake_root)) is bad


def _modules() -> Iterator[ModuleType]:
    for package in ("app", "worker", "tests"):
        pkg = importlib.import_module(package)
        yield pkg
        for info in pkgutil.walk_packages(pkg.__path__, prefix=f"{package}."):
            if info.name.rsplit(".", 1)[-1] in ("__main__", "conftest"):
                continue  # __main__ runs a process on import; conftest belongs to pytest
            yield importlib.import_module(info.name)


def _paths(value: object) -> Iterator[Path]:
    if isinstance(value, Path):
        yield value
    elif isinstance(value, list | tuple | set | frozenset):
        for item in value:
            if isinstance(item, Path):
                yield item
    elif isinstance(value, dict):
        for item in value.values():
            if isinstance(item, Path):
                yield item


def test_every_module_level_path_stays_under_the_root() -> None:
    checked = 0
    outside: list[str] = []
    for module in _modules():
        for name, value in vars(module).items():
            for path in _paths(value):
                checked += 1
                resolved = (path if path.is_absolute() else ROOT / path).resolve()
                if not resolved.is_relative_to(ROOT):
                    outside.append(f"{module.__name__}.{name} = {resolved}")
    assert checked >= 5  # ROOT constants, the SQL folder, the samples: the check sees them
    assert not outside, "module-level paths outside the repository root:\n" + "\n".join(outside)
