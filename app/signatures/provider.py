"""One record per provider: everything hookline knows about a sender, in one place.

:data:`app.signatures.registry.PROVIDERS` holds one :class:`Provider` per supported sender. A
record says how a delivery is verified and signed (``scheme``), where its metadata lives
(locators, plus ``rules`` computed on top of them), which handshakes it answers instead of storing,
and which sample payload ``hookline send`` posts. Adding a provider means adding one record.

Locators (see :mod:`app.signatures.locators`): ``header:Name`` or ``json:dotted.path`` (numeric
segments index lists, ``json:0.id`` is the first element of a top-level array). The first locator
that yields a non-empty scalar wins; a rule for that key then sees the value and may change it.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from types import MappingProxyType
from typing import Any

from ._base import Headers, Scheme

#: The metadata keys every provider maps: see :func:`app.signatures.extract_meta`.
META_KEYS = ("delivery_id", "event_type", "occurred_at", "tenant")

#: Where the sample payloads live (relative paths in :attr:`Provider.sample` start here).
SAMPLES = Path(__file__).resolve().parent / "samples"

#: A metadata rule: ``(headers, payload, value the locators found) -> value``.
Rule = Callable[[Headers, Any, str | None], str | None]


@dataclass(frozen=True)
class HandshakeReply:
    status: int
    content_type: str
    body: bytes


@dataclass(frozen=True)
class HandshakeRequest:
    """A verified POST, as a provider's handshake sees it (``payload`` is {} when not an object)."""

    headers: Headers
    body: bytes
    payload: Mapping[str, Any]
    secrets: Sequence[str]


#: Answers a verified POST, or returns None for "an ordinary event: store it".
PostHandshake = Callable[[HandshakeRequest], HandshakeReply | None]
#: Answers an unsigned GET from its query string and the source's ``verify_token``.
GetHandshake = Callable[[Mapping[str, str], str | None], HandshakeReply]


@dataclass(frozen=True)
class Provider:
    name: str
    scheme: Scheme  # verify / sign / key helpers
    default_tolerance: int | None  # seconds; None when the scheme signs no timestamp
    delivery_id: tuple[str, ...]  # locators, tried in order
    event_type: tuple[str, ...]
    occurred_at: tuple[str, ...] = ()
    tenant: tuple[str, ...] = ()
    rules: Mapping[str, Rule] = field(default_factory=dict)  # meta key → rule applied on top
    handshake: PostHandshake | None = None  # answered instead of stored (after verify)
    get_handshake: GetHandshake | None = None  # the only GET the endpoint accepts (no signature)
    sample: str = ""  # path under samples/ for `hookline send`; "" → "<name>.json"
    public_key: bool = False  # secrets are public keys
    url_bound: bool = False  # verify needs url=
    takes_options: bool = False  # the generic provider: [sources.x.hmac] options shape the scheme

    def __post_init__(self) -> None:
        if not self.sample:
            object.__setattr__(self, "sample", f"{self.name}.json")
        if not self.delivery_id or not self.event_type:
            raise ValueError(f"{self.name}: a provider needs delivery_id and event_type locators")
        unknown = set(self.rules) - set(META_KEYS)
        if unknown:
            raise ValueError(f"{self.name}: rules for unknown metadata keys {sorted(unknown)}")
        object.__setattr__(self, "rules", MappingProxyType(dict(self.rules)))

    @property
    def sample_path(self) -> Path:
        """The sample payload ``hookline send`` posts when no ``--file`` is given."""
        return SAMPLES / self.sample

    def locators(self, key: str) -> tuple[str, ...]:
        """The default locators of one metadata key (``delivery_id``, ``event_type``, …)."""
        if key not in META_KEYS:
            raise KeyError(key)
        value: tuple[str, ...] = getattr(self, key)
        return value


#: The name this record had before the registry held whole records (kept for importers).
ProviderSpec = Provider
