"""Fuzz ``app.signatures.verify`` for every provider: any headers, body, URL and method give either
success or :class:`SignatureError`, never another exception (which ingest would turn into a 500)."""

from __future__ import annotations

import json
from collections import Counter
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from app.signatures import PROVIDERS, SignatureError, extract_meta, generate_keypair, sign_request, verify
from tests.fuzz import EXAMPLES

RAN: Counter[str] = Counter()
URL = "https://hooks.example.com/webhooks/x?a=1"
HMAC_OPTIONS = {"header": "X-Acme-Signature", "algorithm": "sha256", "encoding": "hex", "signed": "{timestamp}.{body}",
                "timestamp_header": "X-Acme-Timestamp"}  # fmt: skip
SW = "whsec_" + "ZnV6ei1zdGFuZGFyZC13ZWJob29rcy1zZWNyZXQ="

header_text = st.one_of(
    st.text(max_size=80),
    st.sampled_from(["", " ", "0", "-1", "99999999999999999999", "9999-12-31T23:59:59-01:00", "v1,", "t=1,v1=",
                     "sha256=", "v0=zz", "=", ",,,", "key=a,algorithm=HMAC_SHA256", "\x00", "é", "a" * 3000]),
)  # fmt: skip


def _keys(provider: str) -> tuple[str, str]:
    if provider == "standard_webhooks":
        return SW, SW
    if PROVIDERS[provider].public_key:
        return _KEYPAIRS.setdefault(provider, generate_keypair(provider))
    return "fuzz-secret-0123456789", "fuzz-secret-0123456789"


_KEYPAIRS: dict[str, tuple[str, str]] = {}


def _call(provider: str, headers: Any, body: bytes, url: str | None, method: str, secret: str) -> None:
    try:
        verify(
            provider,
            secrets=[secret],
            headers=headers,
            body=body,
            url=url,
            method=method,
            options=HMAC_OPTIONS if provider == "hmac" else None,
        )
    except SignatureError:
        return
    try:
        payload = json.loads(body)
    except ValueError:
        payload = {}
    extract_meta(provider, headers=headers, payload=payload)


@pytest.mark.parametrize("provider", sorted(PROVIDERS))
def test_fuzz_verify_with_mutated_signed_requests(provider: str) -> None:
    """Start from a correctly signed request and replace, add or repeat headers, and change the body."""
    private, public = _keys(provider)
    options = HMAC_OPTIONS if provider == "hmac" else None

    @settings(max_examples=EXAMPLES or 16, deadline=None, suppress_health_check=list(HealthCheck), database=None)
    @given(
        payload=st.recursive(
            st.none() | st.booleans() | st.integers() | st.text(max_size=20),
            lambda c: st.lists(c, max_size=3) | st.dictionaries(st.text(max_size=8), c, max_size=3),
            max_leaves=20,
        ),
        edits=st.lists(
            st.tuples(st.integers(0, 30), header_text, st.sampled_from(["replace", "add", "repeat"])), max_size=4
        ),
        tail=st.sampled_from([b"", b" ", b"\r\n", b"x"]),
        method=st.sampled_from(["POST", "GET", "PUT"]),
    )
    def run(payload: Any, edits: list[tuple[int, str, str]], tail: bytes, method: str) -> None:
        RAN[provider] += 1
        body = json.dumps({"id": "evt", "type": "t", "data": payload}).encode()
        signed = sign_request(provider, secret=private, body=body, url=URL, options=options)
        pairs = list(signed.headers.items())
        for index, value, how in edits:
            name = pairs[index % len(pairs)][0] if pairs else "x"
            if how == "replace":
                pairs = [(n, value if n == name else v) for n, v in pairs]
            elif how == "add":
                pairs.append((f"X-Fuzz-{index}", value))
            else:
                pairs.append((name, value))
        _call(provider, pairs, signed.body + tail, URL, method, public)

    run()


@pytest.mark.parametrize("provider", sorted(PROVIDERS))
def test_fuzz_verify_with_arbitrary_input(provider: str) -> None:
    _, public = _keys(provider)

    @settings(max_examples=EXAMPLES or 10, deadline=None, suppress_health_check=list(HealthCheck), database=None)
    @given(
        headers=st.lists(st.tuples(st.text(min_size=1, max_size=30), header_text), max_size=8),
        body=st.binary(max_size=300),
        url=st.one_of(st.none(), st.text(max_size=60), st.just(URL)),
        method=st.text(min_size=1, max_size=8),
    )
    def run(headers: list[tuple[str, str]], body: bytes, url: str | None, method: str) -> None:
        RAN[provider] += 1
        _call(provider, headers, body, url, method, public)

    run()


def test_fuzz_case_count_is_recorded(record_property: Any) -> None:
    """Runs last in this module: how many cases the properties above ran (see the README)."""
    total = sum(RAN.values())
    record_property("verify_fuzz_cases", total)
    print(f"\nverify fuzz: {total} cases over {len(RAN)} providers")
    assert total >= len(PROVIDERS) * 2 or not RAN
