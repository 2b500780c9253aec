"""Numbers no process can use are refused at start, naming the variable: a worker of concurrency 0 ran
no job and said nothing, `hookline web` announced a PORT above 65535 as bound, a worker given such a
metrics port hung; a timeout of 0 or less, or negative retries, were taken as given."""

from __future__ import annotations

import pytest
from pydantic import ValidationError

from app.core.settings import Settings, settings_problems


@pytest.mark.parametrize(
    ("name", "value", "problem"),
    [
        ("HOOKLINE_WORKER_CONCURRENCY", "0", "greater than or equal to 1"),
        ("PORT", "70000", "less than or equal to 65535"),
        ("PORT", "-1", "greater than or equal to 0"),
        ("HOOKLINE_WORKER_METRICS_PORT", "70000", "less than or equal to 65535"),
        ("HOOKLINE_MAX_BODY_BYTES", "0", "greater than or equal to 1"),
        ("HOOKLINE_MAX_BODY_BYTES", str(128 * 1024 * 1024 + 1), "less than or equal to 134217728"),
        ("HOOKLINE_DB_TIMEOUT", "-1", "greater than 0"),
        ("HOOKLINE_LLM_TIMEOUT", "0", "greater than 0"),
        ("HOOKLINE_OUTBOUND_TIMEOUT", "0", "greater than 0"),
        ("HOOKLINE_STALLED_AFTER", "0", "greater than 0"),
        ("HOOKLINE_BATCH_POLL_SECONDS", "0", "greater than or equal to 1"),
        ("HOOKLINE_RETRY_AFTER_SECONDS", "-1", "greater than or equal to 0"),
        ("HOOKLINE_LLM_MAX_RETRIES", "-1", "greater than or equal to 0"),
    ],
)
def test_a_value_out_of_range_is_one_line_naming_it(
    monkeypatch: pytest.MonkeyPatch, name: str, value: str, problem: str
) -> None:
    monkeypatch.setenv(name, value)
    with pytest.raises(ValidationError) as e:
        Settings()
    assert settings_problems(e.value) == [f"{name}: {problem} (got {value!r})"]


def test_the_bounds_keep_the_smallest_useful_values(monkeypatch: pytest.MonkeyPatch) -> None:
    """PORT=0 stays: any free port (the tests' servers take one)."""
    for name, value in {"HOOKLINE_WORKER_CONCURRENCY": "1", "PORT": "0", "HOOKLINE_LLM_MAX_RETRIES": "0"}.items():
        monkeypatch.setenv(name, value)
    settings = Settings()
    assert (settings.worker_concurrency, settings.port, settings.llm_max_retries) == (1, 0, 0)
