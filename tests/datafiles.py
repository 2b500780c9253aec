"""Where the tests' data lives: everything under the repository root (tests/data/, app/signatures/samples/)."""

from __future__ import annotations

from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
DATA = ROOT / "tests" / "data"
#: Official signature vectors (tests/data/vectors/SOURCES.md says where each one comes from).
VECTORS_FILE = DATA / "vectors" / "signatures.json"
#: Real published payloads (tests/data/payloads/SOURCES.md).
PAYLOADS = DATA / "payloads"
#: The sample payloads ``hookline send`` ships, one per provider (each record's ``sample_path``).
SAMPLES = ROOT / "app" / "signatures" / "samples"
