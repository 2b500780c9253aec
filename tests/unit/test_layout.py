"""The layout states the architecture: no import cycles, small modules, the layers import-linter keeps."""

from __future__ import annotations

import statistics
from pathlib import Path

import grimp

ROOT = Path(__file__).resolve().parents[2]


def test_no_import_cycles() -> None:
    """At run time: an import under ``if TYPE_CHECKING`` (an annotation only) is no cycle."""
    graph = grimp.build_graph("app", "worker", exclude_type_checking_imports=True, cache_dir=None)
    cycles = []
    for importer in sorted(graph.modules):
        for imported in graph.find_modules_directly_imported_by(importer):
            back = graph.find_shortest_chain(importer=imported, imported=importer)
            if back is not None:
                cycles.append(" -> ".join((importer, *back)))
    assert cycles == []


def test_modules_stay_small() -> None:
    sizes = {
        str(p.relative_to(ROOT)): len(p.read_text(encoding="utf-8").splitlines())
        for folder in ("app", "worker")
        for p in (ROOT / folder).rglob("*.py")
    }
    assert {name: n for name, n in sizes.items() if n > 400} == {}
    assert statistics.median(sizes.values()) <= 150
