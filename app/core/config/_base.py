"""Shared pieces of the config models: strict frozen models, name checks, import targets."""

from __future__ import annotations

import importlib
import re
from typing import Any

from pydantic import BaseModel, ConfigDict

from app.signatures import parse_locator

NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$")
ENV = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")
#: The largest request body a source may accept (``max_body_bytes``, ``HOOKLINE_MAX_BODY_BYTES``): its
#: insert sends it as sent and as its parsed payload's JSON text (up to six times a form body's size:
#: ``\u00XX`` for one byte), and Postgres refuses a statement's parameters over 1 GiB.
MAX_BODY_BYTES = 128 * 1024 * 1024
LOCATOR_KEYS = ("delivery_id", "event_type", "occurred_at", "tenant", "ordering_key")
#: The longest ``*_env`` value taken as a variable's name, and the shortest run between underscores
#: mixing letters and digits taken as a secret's random part.
MAX_ENV_NAME = 100
_RANDOM_RUN = 20
TARGET = re.compile(r"^[A-Za-z_][\w.]*:[A-Za-z_]\w*$")


class Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


def check_env_name(v: str) -> str:
    """A ``*_env`` key's value: the name of a variable. What else is written there is most often the
    secret itself, so the error names the key (the caller's location) and never quotes the value."""
    if v.startswith("whsec_"):  # Stripe's and Standard Webhooks' signing secrets; Stripe's looks like a name
        raise ValueError(
            "this is a signing secret (whsec_…), not the name of the environment variable that holds it "
            "(the value is not shown)"
        )
    if not ENV.match(v):
        raise ValueError(
            "not an environment variable name (letters, digits and _, not starting with a digit): name the "
            "variable that holds the value, never the value itself (not shown)"
        )
    if _looks_like_a_value(v):
        raise ValueError(
            "this looks like a secret (letters and digits mixed in a long run, or over "
            f"{MAX_ENV_NAME} characters), not the name of the environment variable that holds it (the value is "
            "not shown)"
        )
    return v


def _looks_like_a_value(v: str) -> bool:
    """A random string of letters and digits only (40 hex digits, base64 without ``+/=``, an API key
    such as ``sk_live_…``) passes :data:`ENV`. A name is words between underscores: no variable is
    called with a run of 20 characters mixing letters and digits, nor with more than 100 characters."""
    if len(v) > MAX_ENV_NAME:
        return True
    return any(
        len(part) >= _RANDOM_RUN and any(c.isdigit() for c in part) and any(c.isalpha() for c in part)
        for part in v.split("_")
    )


def check_locators(v: str | list[str] | None) -> tuple[str, ...] | None:
    if v is None:
        return None
    items = [v] if isinstance(v, str) else list(v)
    for item in items:
        parse_locator(item)
    return tuple(items)


def import_problem(target: str) -> str | None:
    module, _, attr = target.partition(":")
    try:
        mod = importlib.import_module(module)
    except Exception as e:
        return f"cannot import {module!r}: {e.__class__.__name__}: {e}"
    if not hasattr(mod, attr):
        return f"{module!r} has no attribute {attr!r}"
    return None


def resolve_target(target: str) -> Any:
    module, _, attr = target.partition(":")
    return getattr(importlib.import_module(module), attr)
