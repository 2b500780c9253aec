"""Standard Webhooks (Svix, Clerk, Resend, OpenAI, …): ``v1`` HMAC-SHA256 and ``v1a`` Ed25519.

Secrets:
- ``whsec_<base64>`` (or bare base64): HMAC key = base64-decoded bytes, missing padding tolerated.
- ``whpk_<base64 32-byte Ed25519 public key>``: verifies ``v1a`` signatures.
- For signing only, ``whsk_<base64 seed(32) or seed‖public(64)>`` is the Ed25519 private key.

Header family: ``webhook-*``; Svix-branded senders use ``svix-*`` (used when ``webhook-signature``
is absent). Signed content: ``{id}.{timestamp}.{body}``; window ±300 s by default (both ways).
"""

from __future__ import annotations

import functools
import hmac
import secrets as _random

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

from ._base import (
    Headers,
    Scheme,
    SignatureError,
    SignedRequest,
    SignInput,
    VerifyRequest,
    b64,
    b64decode_strict,
    digest,
)
from ._time import check_window, parse_unix


def _family(headers: Headers) -> str:
    return "webhook" if headers.has("webhook-signature") else "svix"


@functools.lru_cache(maxsize=64)
def hmac_key(secret: str) -> bytes | None:
    if secret.startswith(("whpk_", "whsk_")):
        return None
    raw = secret.removeprefix("whsec_")
    return b64decode_strict(raw, pad=True) or None


def public_key(secret: str) -> Ed25519PublicKey | None:
    if not secret.startswith("whpk_"):
        return None
    raw = b64decode_strict(secret.removeprefix("whpk_"), pad=True)
    if raw is None or len(raw) != 32:
        return None
    return Ed25519PublicKey.from_public_bytes(raw)


def private_key(secret: str) -> Ed25519PrivateKey | None:
    if not secret.startswith("whsk_"):
        return None
    raw = b64decode_strict(secret.removeprefix("whsk_"), pad=True)
    if raw is None or len(raw) not in (32, 64):
        return None
    return Ed25519PrivateKey.from_private_bytes(raw[:32])


def check_secret(secret: str) -> None:
    if secret.startswith("whpk_"):
        if public_key(secret) is None:
            raise ValueError("a whpk_ key must be base64 of a 32-byte Ed25519 public key")
    elif secret.startswith("whsk_"):
        if private_key(secret) is None:
            raise ValueError("a whsk_ key must be base64 of a 32-byte seed (or seed+public key)")
    elif hmac_key(secret) is None:
        raise ValueError("a Standard Webhooks secret must be whsec_ followed by base64")


def _signatures(value: str) -> list[tuple[str, bytes]]:
    """Parse ``v1,<b64> v1a,<b64> …``; entries that are not ``version,base64`` are skipped."""
    out: list[tuple[str, bytes]] = []
    for item in value.split():
        version, comma, sig = item.partition(",")
        if not comma:
            continue
        decoded = b64decode_strict(sig)
        if decoded is not None:
            out.append((version, decoded))
    return out


def _no_unsigned_twin(headers: Headers, fam: str, name: str, signed_value: str) -> None:
    """The other family's ``name`` header is not covered by this signature. Metadata reads
    ``webhook-id`` before ``svix-id``, so an added, different twin could pose as the delivery id
    (a re-send with a new id would bypass deduplication): refuse it unless it says the same."""
    other = "svix" if fam == "webhook" else "webhook"
    for value in headers.all(f"{other}-{name}"):
        if value.strip() != signed_value:
            raise SignatureError("malformed_header", f"{other}-{name} differs from the signed {fam}-{name}")


def verify(req: VerifyRequest) -> None:
    fam = _family(req.headers)
    msg_id = req.headers.one(f"{fam}-id")
    ts_text = req.headers.one(f"{fam}-timestamp")
    _no_unsigned_twin(req.headers, fam, "id", msg_id)
    _no_unsigned_twin(req.headers, fam, "timestamp", ts_text)
    sig_header = req.headers.one(f"{fam}-signature")
    ts = parse_unix(ts_text, f"{fam}-timestamp")
    sigs = _signatures(sig_header)
    if not sigs:
        raise SignatureError("malformed_header", f"{fam}-signature has no version,signature entry")
    if not any(v in ("v1", "v1a") for v, _ in sigs):
        raise SignatureError("unsupported_version")
    signed = f"{msg_id}.{ts_text}.".encode() + req.body
    usable = False
    for secret in req.secrets:
        pk = public_key(secret)
        if pk is not None:
            usable = True
            for version, sig in sigs:
                if version == "v1a" and _ed_ok(pk, sig, signed):
                    check_window(ts, req.now, req.tolerance)
                    return
            continue
        key = hmac_key(secret)
        if key is None:
            continue
        usable = True
        expected = digest(key, signed)
        for version, sig in sigs:
            if version == "v1" and hmac.compare_digest(expected, sig):
                check_window(ts, req.now, req.tolerance)
                return
    if not usable:
        raise SignatureError("invalid_secret")
    raise SignatureError("bad_signature")


def _ed_ok(pk: Ed25519PublicKey, sig: bytes, message: bytes) -> bool:
    if len(sig) != 64:
        return False
    try:
        pk.verify(sig, message)
    except InvalidSignature:
        return False
    return True


def sign(inp: SignInput) -> SignedRequest:
    msg_id = inp.delivery_id or "msg_" + _random.token_hex(12)
    ts = str(int(inp.now))
    signed = f"{msg_id}.{ts}.".encode() + inp.body
    sk = private_key(inp.secret)
    if sk is not None:
        sig = "v1a," + b64(sk.sign(signed))
    else:
        key = hmac_key(inp.secret)
        if key is None:
            raise ValueError("a Standard Webhooks secret must be whsec_<base64> or whsk_<base64>")
        sig = "v1," + b64(digest(key, signed))
    return SignedRequest(
        headers={
            "webhook-id": msg_id,
            "webhook-timestamp": ts,
            "webhook-signature": sig,
            "Content-Type": "application/json",
        },
        body=inp.body,
    )


def keypair() -> tuple[str, str]:
    """A fresh (``whsk_`` private, ``whpk_`` public) Ed25519 pair."""
    from cryptography.hazmat.primitives import serialization

    sk = Ed25519PrivateKey.generate()
    seed = sk.private_bytes(serialization.Encoding.Raw, serialization.PrivateFormat.Raw, serialization.NoEncryption())
    pub = sk.public_key().public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
    return "whsk_" + b64(seed + pub), "whpk_" + b64(pub)


SCHEME = Scheme(verify=verify, sign=sign, keypair=keypair, check_secret=check_secret)
