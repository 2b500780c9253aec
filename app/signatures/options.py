"""Options of the generic ``hmac`` provider (from code or a TOML table)."""

from __future__ import annotations

import string
from collections.abc import Mapping
from dataclasses import dataclass, fields
from typing import Any

_ALGORITHMS = ("sha1", "sha256", "sha512")
_ENCODINGS = ("hex", "base64")
_FIELDS = ("body", "timestamp", "id", "method", "url")


@dataclass(frozen=True)
class HmacOptions:
    """How a generic HMAC sender signs.

    ``signed`` is a template over ``{body}``, ``{timestamp}``, ``{id}``, ``{method}``, ``{url}``
    (``{{``/``}}`` for literal braces). ``{timestamp}`` needs ``timestamp_header`` and turns on the
    window check (unix seconds, or milliseconds when the value is 13+ digits); ``{id}`` needs
    ``id_header``; ``{url}`` needs the caller's ``url``.
    """

    header: str
    algorithm: str = "sha256"
    encoding: str = "hex"
    prefix: str = ""
    signed: str = "{body}"
    timestamp_header: str | None = None
    id_header: str | None = None

    def __post_init__(self) -> None:
        if not isinstance(self.header, str) or not self.header.strip():
            raise ValueError("hmac option 'header' is required (the signature header name)")
        if self.algorithm not in _ALGORITHMS:
            raise ValueError(f"hmac option 'algorithm' must be one of {', '.join(_ALGORITHMS)}")
        if self.encoding not in _ENCODINGS:
            raise ValueError(f"hmac option 'encoding' must be one of {', '.join(_ENCODINGS)}")
        if not isinstance(self.prefix, str):
            raise ValueError("hmac option 'prefix' must be a string")
        for key in ("timestamp_header", "id_header"):
            value = getattr(self, key)
            if value is not None and (not isinstance(value, str) or not value.strip()):
                raise ValueError(f"hmac option {key!r} must be a non-empty header name")
        names = template_fields(self.signed)
        if "body" not in names:
            raise ValueError("hmac option 'signed' must contain {body}")
        if "timestamp" in names and self.timestamp_header is None:
            raise ValueError("hmac option 'signed' uses {timestamp} but 'timestamp_header' is not set")
        if "id" in names and self.id_header is None:
            raise ValueError("hmac option 'signed' uses {id} but 'id_header' is not set")

    @classmethod
    def from_mapping(cls, options: Mapping[str, Any] | HmacOptions) -> HmacOptions:
        """Build from a TOML table; ``ValueError`` naming the bad key."""
        return coerce_options(options)

    @property
    def signs_timestamp(self) -> bool:
        return "timestamp" in template_fields(self.signed)


def template_fields(template: Any) -> set[str]:
    if not isinstance(template, str):
        raise ValueError("hmac option 'signed' must be a string template")
    try:
        parsed = list(string.Formatter().parse(template))
    except ValueError as exc:
        raise ValueError(f"hmac option 'signed' is not a valid template: {exc}") from None
    names: set[str] = set()
    for _literal, name, spec, conv in parsed:
        if name is None:
            continue
        if name not in _FIELDS or spec or conv:
            raise ValueError(
                f"hmac option 'signed' has an unknown field {{{name}}}; allowed: "
                + ", ".join("{" + f + "}" for f in _FIELDS)
            )
        names.add(name)
    return names


def coerce_options(options: HmacOptions | Mapping[str, Any] | None) -> HmacOptions:
    """Accept an :class:`HmacOptions` or a plain mapping with the same keys (as read from TOML)."""
    if isinstance(options, HmacOptions):
        return options
    if options is None:
        raise ValueError("the 'hmac' provider needs options (at least 'header')")
    if not isinstance(options, Mapping):
        raise ValueError("hmac options must be a table/mapping")
    known = {f.name for f in fields(HmacOptions)}
    unknown = sorted(str(k) for k in options if k not in known)
    if unknown:
        raise ValueError(f"unknown hmac option {unknown[0]!r}; known: {', '.join(sorted(known))}")
    if "header" not in options:
        raise ValueError("hmac option 'header' is required (the signature header name)")
    return HmacOptions(**{str(k): v for k, v in options.items()})
