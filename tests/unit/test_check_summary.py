"""``hookline check``'s summary of a valid hookline.toml: every table that makes events or takes alerts."""

from __future__ import annotations

from pathlib import Path

import pytest

from app.cli.main import main

TOML = """
[sources.stripe]
provider = "stripe"
secrets_env = ["HL_CHECK_STRIPE"]

[pipelines.triage]
source = "stripe"
instructions = "x"
output_schema = { type = "object" }

[pipelines.digest]
source = "schedule"
instructions = "x"
output_schema = { type = "object" }

[pipelines.cancellation-note]
source = "db"
events = ["public.orders.update"]
instructions = "x"
output_schema = { type = "object" }

[schedules.daily-digest]
cron = "0 9 * * *"
timezone = "Europe/Berlin"
pipeline = "digest"

[[watch]]
table = "public.orders"
on = ["update"]
columns = ["status"]

[[alerts]]
type = "log"

[[alerts]]
type = "log"
name = "ops-log"
"""


def test_check_lists_schedules_watched_tables_and_alerts(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """A config with schedules, [[watch]] and [[alerts]] is summarized whole: the OK line counts them,
    each schedule names its pipeline and next run (UTC, and its own time zone), each watched table its
    operations, and the pipelines of the built-in db source are listed as a source's are."""
    path = tmp_path / "hookline.toml"
    path.write_text(TOML)
    monkeypatch.setenv("HOOKLINE_CONFIG", str(path))
    monkeypatch.setenv("HL_CHECK_STRIPE", "whsec_x")
    assert main(["check"]) == 0
    out = capsys.readouterr().out.splitlines()
    assert out[0] == (f"{path}: OK — 1 source(s), 3 pipeline(s), 1 schedule(s), 1 watched table(s), 2 alert action(s)")
    assert "  source stripe (stripe) → triage" in out
    assert "  source db (row changes) → cancellation-note" in out
    [schedule] = [line for line in out if line.startswith("  schedule ")]
    assert schedule.startswith("  schedule daily-digest (0 9 * * *, Europe/Berlin) → digest, next ")
    assert schedule.endswith(("+01:00)", "+02:00)")), schedule
    assert "  watch public.orders (update of status)" in out
    assert "  alerts → log, ops-log (log)" in out


def test_check_of_sources_only_says_what_it_said(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """No schedules, watch or alerts: the summary names no count of them."""
    path = tmp_path / "hookline.toml"
    path.write_text(TOML.split("[pipelines.digest]")[0])
    monkeypatch.setenv("HOOKLINE_CONFIG", str(path))
    monkeypatch.setenv("HL_CHECK_STRIPE", "whsec_x")
    assert main(["check"]) == 0
    assert capsys.readouterr().out.splitlines() == [
        f"{path}: OK — 1 source(s), 1 pipeline(s)",
        "  source stripe (stripe) → triage",
    ]
