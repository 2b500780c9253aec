"""Public-key schemes: Discord interactions (Ed25519) and SendGrid Event Webhook (ECDSA P-256).

Key encodings (``secrets`` hold public keys, ``sign`` takes the private key):

- discord_interactions: public key = 64 hex chars (the Developer Portal value); private key =
  64 hex chars, the 32-byte Ed25519 seed. Signed: ``{X-Signature-Timestamp}{body}``.
- sendgrid_event_webhook: public key = base64 DER SubjectPublicKeyInfo (the dashboard value) or
  PEM; private key = PEM or base64 DER PKCS#8. Signature = base64 DER ECDSA/SHA-256 over
  ``{timestamp}{body}``.
"""

from __future__ import annotations

import binascii

from cryptography.exceptions import InvalidSignature, UnsupportedAlgorithm
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

from ._base import (
    Scheme,
    SignatureError,
    SignedRequest,
    SignInput,
    VerifyRequest,
    b64,
    b64decode_strict,
)
from ._time import check_window, parse_unix

# --- Discord ---------------------------------------------------------------------------------------


def _hex32(value: str) -> bytes | None:
    try:
        raw = bytes.fromhex(value.strip())
    except ValueError:
        return None
    return raw if len(raw) == 32 else None


def _discord_key(secret: str) -> Ed25519PublicKey | None:
    raw = _hex32(secret)
    return Ed25519PublicKey.from_public_bytes(raw) if raw is not None else None


def _discord_check(secret: str) -> None:
    if _discord_key(secret) is None:
        raise ValueError("a Discord public key is 64 hex characters (32 bytes)")


def _discord_verify(req: VerifyRequest) -> None:
    value = req.headers.one("X-Signature-Ed25519")
    ts_text = req.headers.one("X-Signature-Timestamp")
    ts = parse_unix(ts_text, "X-Signature-Timestamp")
    try:
        sig = bytes.fromhex(value)
    except ValueError:
        raise SignatureError("malformed_header", "X-Signature-Ed25519 is not hex") from None
    keys = [k for k in (_discord_key(s) for s in req.secrets) if k is not None]
    if not keys:
        raise SignatureError("invalid_secret")
    message = ts_text.encode() + req.body
    if len(sig) != 64 or not any(_ed_ok(k, sig, message) for k in keys):
        raise SignatureError("bad_signature")
    check_window(ts, req.now, req.tolerance)


def _ed_ok(key: Ed25519PublicKey, sig: bytes, message: bytes) -> bool:
    try:
        key.verify(sig, message)
    except InvalidSignature:
        return False
    return True


def _discord_sign(inp: SignInput) -> SignedRequest:
    seed = _hex32(inp.secret)
    if seed is None:
        raise ValueError("discord_interactions signs with a hex 32-byte Ed25519 seed")
    ts = str(int(inp.now))
    sig = Ed25519PrivateKey.from_private_bytes(seed).sign(ts.encode() + inp.body)
    headers = {
        "X-Signature-Ed25519": sig.hex(),
        "X-Signature-Timestamp": ts,
        "Content-Type": "application/json",
    }
    return SignedRequest(headers=headers, body=inp.body)


def _discord_keypair() -> tuple[str, str]:
    sk = Ed25519PrivateKey.generate()
    seed = sk.private_bytes(serialization.Encoding.Raw, serialization.PrivateFormat.Raw, serialization.NoEncryption())
    pub = sk.public_key().public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
    return seed.hex(), pub.hex()


DISCORD = Scheme(verify=_discord_verify, sign=_discord_sign, keypair=_discord_keypair, check_secret=_discord_check)


# --- SendGrid --------------------------------------------------------------------------------------

_SG_SIG = "X-Twilio-Email-Event-Webhook-Signature"
_SG_TS = "X-Twilio-Email-Event-Webhook-Timestamp"


def _der_or_pem(value: str) -> tuple[str, bytes] | None:
    text = value.strip()
    if text.startswith("-----BEGIN"):
        return "pem", text.encode()
    raw = b64decode_strict("".join(text.split()), pad=True)
    return ("der", raw) if raw else None


def _sendgrid_public(secret: str) -> ec.EllipticCurvePublicKey | None:
    found = _der_or_pem(secret)
    if found is None:
        return None
    kind, data = found
    try:
        key = serialization.load_pem_public_key(data) if kind == "pem" else serialization.load_der_public_key(data)
    except (ValueError, UnsupportedAlgorithm, binascii.Error):
        return None
    if isinstance(key, ec.EllipticCurvePublicKey) and isinstance(key.curve, ec.SECP256R1):
        return key
    return None


def _sendgrid_private(secret: str) -> ec.EllipticCurvePrivateKey:
    found = _der_or_pem(secret)
    key = None
    if found is not None:
        kind, data = found
        try:
            key = (
                serialization.load_pem_private_key(data, password=None)
                if kind == "pem"
                else serialization.load_der_private_key(data, password=None)
            )
        except (ValueError, TypeError, UnsupportedAlgorithm):
            key = None
    if not isinstance(key, ec.EllipticCurvePrivateKey) or not isinstance(key.curve, ec.SECP256R1):
        raise ValueError("sendgrid_event_webhook signs with a P-256 key: PEM or base64 DER PKCS#8")
    return key


def _sendgrid_check(secret: str) -> None:
    if _sendgrid_public(secret) is None:
        raise ValueError("a SendGrid verification key is a base64 DER (or PEM) P-256 public key")


def _sendgrid_verify(req: VerifyRequest) -> None:
    value = req.headers.one(_SG_SIG)
    ts_text = req.headers.one(_SG_TS)
    ts = parse_unix(ts_text, _SG_TS)
    sig = b64decode_strict(value)
    if not sig:
        raise SignatureError("malformed_header", f"{_SG_SIG} is not base64")
    keys = [k for k in (_sendgrid_public(s) for s in req.secrets) if k is not None]
    if not keys:
        raise SignatureError("invalid_secret")
    message = ts_text.encode() + req.body
    if not any(_ec_ok(k, sig, message) for k in keys):
        raise SignatureError("bad_signature")
    check_window(ts, req.now, req.tolerance)


def _ec_ok(key: ec.EllipticCurvePublicKey, sig: bytes, message: bytes) -> bool:
    try:
        key.verify(sig, message, ec.ECDSA(hashes.SHA256()))
    except (InvalidSignature, ValueError):
        return False
    return True


def _sendgrid_sign(inp: SignInput) -> SignedRequest:
    key = _sendgrid_private(inp.secret)
    ts = str(int(inp.now))
    sig = key.sign(ts.encode() + inp.body, ec.ECDSA(hashes.SHA256()))
    headers = {
        _SG_SIG: b64(sig),
        _SG_TS: ts,
        "Content-Type": "application/json",
    }
    return SignedRequest(headers=headers, body=inp.body)


def _sendgrid_keypair() -> tuple[str, str]:
    sk = ec.generate_private_key(ec.SECP256R1())
    der = sk.private_bytes(serialization.Encoding.DER, serialization.PrivateFormat.PKCS8, serialization.NoEncryption())
    pub = sk.public_key().public_bytes(serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo)
    return b64(der), b64(pub)


SENDGRID = Scheme(
    verify=_sendgrid_verify,
    sign=_sendgrid_sign,
    keypair=_sendgrid_keypair,
    check_secret=_sendgrid_check,
)
