"""Keys and tokens in the environment are trimmed: a secrets file's trailing newline broke every call."""

from __future__ import annotations

import pytest
from pydantic import SecretStr

from app.core.settings import MIN_TOKEN_LENGTH, Settings, weak_tokens


@pytest.mark.parametrize("name", ["ANTHROPIC_API_KEY", "HOOKLINE_ADMIN_TOKEN", "HOOKLINE_METRICS_TOKEN"])
def test_a_trailing_newline_is_trimmed_and_blank_is_unset(monkeypatch: pytest.MonkeyPatch, name: str) -> None:
    field = {"ANTHROPIC_API_KEY": "anthropic_api_key"}.get(name, name.removeprefix("HOOKLINE_").lower())
    monkeypatch.setenv(name, "  sk-value\n")
    value = getattr(Settings(), field)
    assert value is not None and value.get_secret_value() == "sk-value"
    monkeypatch.setenv(name, " \n")
    assert getattr(Settings(), field) is None


def test_a_short_token_is_named_never_shown() -> None:
    """A token under 16 characters still works; ``weak_tokens`` is what `hookline check` and the web
    process warn with: the variable, the minimum and how to make a good one, never the value."""
    short = Settings(admin_token=SecretStr("hunter2-short"), metrics_token=SecretStr("m" * MIN_TOKEN_LENGTH))
    assert weak_tokens(short) == [
        "HOOKLINE_ADMIN_TOKEN is shorter than 16 characters, so it can be guessed; use a long random one: "
        'python3 -c "import secrets; print(secrets.token_urlsafe(32))"'
    ]
    both = weak_tokens(Settings(admin_token=SecretStr("Zq9Wv"), metrics_token=SecretStr("Xk4Jp-metrics")))
    assert [w.split()[0] for w in both] == ["HOOKLINE_ADMIN_TOKEN", "HOOKLINE_METRICS_TOKEN"]
    assert not any("Zq9Wv" in w or "Xk4Jp" in w for w in both)
    assert weak_tokens(Settings()) == []
