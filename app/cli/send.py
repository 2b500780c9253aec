"""``hookline send SOURCE``: sign a payload exactly as the source's provider would and post it.

The local test loop, like ``stripe trigger``: a sample payload ships for every provider; each send
gets a fresh delivery id (header or body field, wherever the provider carries it) so it is a new event.
"""

from __future__ import annotations

import json
import time
import uuid
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import httpx

from app.core.config import Config, Source
from app.core.errors import ConfigError
from app.signatures import PROVIDERS, parse_locator, sign_request


@dataclass
class Sent:
    status: int
    body: str
    delivery_id: str
    url: str


def sample_payload(provider: str, event_type: str | None = None) -> bytes:
    """What ``hookline send`` posts without ``--file``: the provider's sample of ``event_type`` where its
    samples are a folder of one file per type (``github/pull_request.opened.json``), else its default."""
    spec = PROVIDERS[provider]
    path = spec.sample_path
    if event_type and "/" in spec.sample:
        path = {p.stem: p for p in path.parent.glob("*.json")}.get(event_type, path)
    if not path.exists():
        raise ConfigError(f"no sample payload ships for provider {provider}; pass --file")
    return path.read_bytes()


def _set_path(payload: Any, path: tuple[str, ...], value: str) -> bool:
    cur = payload
    for seg in path[:-1]:
        if isinstance(cur, dict) and isinstance(cur.get(seg), dict | list):
            cur = cur[seg]
        elif isinstance(cur, list) and seg.isdigit() and int(seg) < len(cur):
            cur = cur[int(seg)]
        else:
            return False
    if isinstance(cur, dict):
        cur[path[-1]] = value
        return True
    return False


def prepare_body(src: Source, raw: bytes, *, delivery_id: str, event_type: str | None) -> bytes:
    """Put a fresh delivery id (and the --type) into the body where the provider keeps them there.

    A body that needs no change is sent byte for byte, as the file has it.
    """
    spec = PROVIDERS[src.provider]
    try:
        payload = json.loads(raw)
    except ValueError:
        return raw
    changed = False
    for loc_text in (src.delivery_id or spec.delivery_id)[:1]:
        loc = parse_locator(loc_text) if isinstance(loc_text, str) else loc_text
        if loc.kind == "json":
            changed |= _set_path(payload, loc.path, delivery_id)
    if event_type:
        for loc_text in (src.event_type or spec.event_type)[:1]:
            loc = parse_locator(loc_text) if isinstance(loc_text, str) else loc_text
            if loc.kind == "json":
                changed |= _set_path(payload, loc.path, event_type)
    return json.dumps(payload).encode() if changed else raw


def signing_secret(src: Source, environ: Mapping[str, str]) -> str:
    spec = PROVIDERS[src.provider]
    if spec.public_key:
        key = environ.get(src.signing_key_env) if src.signing_key_env else None
        if not key:
            raise ConfigError(
                f"sources.{src.name}: provider {src.provider} verifies with a public key; set "
                "signing_key_env to a variable holding the private key to sign with"
            )
        return key
    secrets = src.secrets(environ)
    if not secrets:
        raise ConfigError(f"sources.{src.name}.secrets_env: none of {list(src.secrets_env)} is set")
    return secrets[0]


def send(
    config: Config,
    source: str,
    *,
    environ: Mapping[str, str],
    base_url: str,
    public_url: str | None,
    file: Path | None = None,
    event_type: str | None = None,
    delivery_id: str | None = None,
    timeout: float = 10.0,
) -> Sent:
    src = config.sources.get(source)
    if src is None:
        raise ConfigError(f"no [sources.{source}] in the config; known: {', '.join(sorted(config.sources)) or 'none'}")
    raw = file.read_bytes() if file else sample_payload(src.provider, event_type)
    delivery_id = delivery_id or f"hl_{uuid.uuid4().hex}"
    body = prepare_body(src, raw, delivery_id=delivery_id, event_type=event_type)
    target = f"{base_url.rstrip('/')}/webhooks/{source}"
    signed_url = src.public_url or (f"{public_url.rstrip('/')}/webhooks/{source}" if public_url else target)
    signed = sign_request(
        src.provider,
        secret=signing_secret(src, environ),
        body=body,
        url=signed_url,
        now=time.time(),
        delivery_id=delivery_id,
        event_type=event_type,
        options=src.hmac_options(),
    )
    if signed.url and signed.url != signed_url:  # signing added to the URL (Twilio JSON: ?bodySHA256=…)
        query = urlsplit(signed.url).query
        target = f"{target.split('?', 1)[0]}?{query}" if query else target
    resp = httpx.post(target, content=signed.body, headers=signed.headers, timeout=timeout)
    return Sent(resp.status_code, resp.text, delivery_id, target)
