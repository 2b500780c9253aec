"""The provider registry: one complete record per provider, and every entry point reads it."""

from __future__ import annotations

import json
from typing import Any

import pytest

import app.signatures as sig
from app.signatures import PROVIDERS, Provider, extract_meta, generate_keypair, parse_locator, sign_request, verify
from app.signatures._base import Scheme
from app.signatures.provider import META_KEYS
from app.signatures.registry import get_provider
from tests.datafiles import SAMPLES

URL = "https://hooks.example.com/webhooks/src"
NOW = 1_767_225_600.0  # 2026-01-01T00:00:00Z
HMAC_OPTIONS = {"header": "X-Signature", "signed": "{timestamp}.{body}", "timestamp_header": "X-Timestamp"}


def _keys(record: Provider) -> tuple[str, str]:
    if record.public_key:
        return generate_keypair(record.name)
    return "whsec_c2VjcmV0LWZvci10aGUtcmVnaXN0cnk=", "whsec_c2VjcmV0LWZvci10aGUtcmVnaXN0cnk="


def test_the_registry_is_keyed_by_record_name() -> None:
    assert PROVIDERS, "no providers registered"
    for name, record in PROVIDERS.items():
        assert isinstance(record, Provider)
        assert record.name == name
        assert get_provider(name) is record
    with pytest.raises(ValueError, match="unknown provider 'nope'; known: "):
        get_provider("nope")


@pytest.mark.parametrize("name", sorted(PROVIDERS))
def test_every_record_is_complete(name: str) -> None:
    record = PROVIDERS[name]
    # verification scheme
    assert isinstance(record.scheme, Scheme)
    assert callable(record.scheme.verify) and callable(record.scheme.sign)
    assert record.default_tolerance is None or record.default_tolerance > 0
    # metadata: locators that parse for the two keys every event needs, rules only for known keys
    assert record.delivery_id and record.event_type
    for key in META_KEYS:
        for text in record.locators(key):
            parse_locator(text)
    assert set(record.rules) <= set(META_KEYS)
    assert all(callable(rule) for rule in record.rules.values())
    # handshakes: callables when present; only a GET handshake makes GET meaningful
    assert record.handshake is None or callable(record.handshake)
    assert record.get_handshake is None or callable(record.get_handshake)
    assert sig.accepts_get(name) is (record.get_handshake is not None)
    # sample: ships under app/signatures/samples and is the JSON `hookline send` posts
    assert record.sample_path.is_file(), f"{name}: no sample at {record.sample_path}"
    assert record.sample_path.resolve().is_relative_to(SAMPLES.resolve())
    json.loads(record.sample_path.read_bytes())


@pytest.mark.parametrize("name", sorted(PROVIDERS))
def test_every_sample_signs_verifies_and_yields_metadata(name: str) -> None:
    record = PROVIDERS[name]
    private, public = _keys(record)
    options = HMAC_OPTIONS if record.takes_options else None
    signed = sign_request(
        name,
        secret=private,
        body=record.sample_path.read_bytes(),
        url=URL,
        now=NOW,
        delivery_id="dlv-registry-1",
        event_type=None,
        options=options,
    )
    verify(name, secrets=[public], headers=signed.headers, body=signed.body, url=URL, now=NOW + 1, options=options)
    _, other = generate_keypair(name) if record.public_key else ("", "whsec_YW5vdGhlci1zZWNyZXQtZW50aXJlbHk=")
    with pytest.raises(sig.SignatureError) as info:
        verify(name, secrets=[other], headers=signed.headers, body=signed.body, url=URL, now=NOW + 1, options=options)
    assert info.value.code == "bad_signature"
    meta = extract_meta(name, headers=signed.headers, payload=json.loads(signed.body))
    assert meta.delivery_id, f"{name}: its sample yields no delivery id"
    assert meta.event_type, f"{name}: its sample yields no event type"


def test_only_the_generic_provider_takes_options() -> None:
    assert [name for name, record in PROVIDERS.items() if record.takes_options] == ["hmac"]


def test_hmac_sample_is_what_hookline_send_posts() -> None:
    from app.cli.send import sample_payload

    assert sample_payload("hmac") == (SAMPLES / "hmac.json").read_bytes()
    payload: Any = json.loads(sample_payload("hmac"))
    meta = extract_meta("hmac", headers={}, payload=payload)
    assert (meta.delivery_id, meta.event_type) == ("evt_01JD7Q3M2K8ZC4T6W9XYB5N0AE", "order.created")
    assert meta.occurred_at is not None and meta.occurred_at.isoformat() == "2026-01-15T10:24:31+00:00"


def test_a_record_without_metadata_locators_is_refused() -> None:
    base = PROVIDERS["github"]
    with pytest.raises(ValueError, match="needs delivery_id and event_type"):
        Provider(name="x", scheme=base.scheme, default_tolerance=None, delivery_id=(), event_type=("json:type",))
    with pytest.raises(ValueError, match="unknown metadata keys"):
        Provider(
            name="x",
            scheme=base.scheme,
            default_tolerance=None,
            delivery_id=("json:id",),
            event_type=("json:type",),
            rules={"colour": base.rules["event_type"]},
        )
    assert Provider(
        name="x", scheme=base.scheme, default_tolerance=None, delivery_id=("json:id",), event_type=("json:t",)
    ).sample_path == (SAMPLES / "x.json")
