"""Keys and tokens in the environment are trimmed: a secrets file's trailing newline broke every call."""

from __future__ import annotations

import pytest

from app.core.settings import Settings


@pytest.mark.parametrize("name", ["ANTHROPIC_API_KEY", "HOOKLINE_ADMIN_TOKEN", "HOOKLINE_METRICS_TOKEN"])
def test_a_trailing_newline_is_trimmed_and_blank_is_unset(monkeypatch: pytest.MonkeyPatch, name: str) -> None:
    field = {"ANTHROPIC_API_KEY": "anthropic_api_key"}.get(name, name.removeprefix("HOOKLINE_").lower())
    monkeypatch.setenv(name, "  sk-value\n")
    value = getattr(Settings(), field)
    assert value is not None and value.get_secret_value() == "sk-value"
    monkeypatch.setenv(name, " \n")
    assert getattr(Settings(), field) is None
