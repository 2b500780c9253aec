"""Per-minute rate-limit bookkeeping of the fake: the anthropic-ratelimit-* headers and enforced 429s."""

from __future__ import annotations

import time
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from tests.fakes.messages_api import FakeMessagesAPI


def over_limit(fake: FakeMessagesAPI) -> float | None:
    """With `enforce_limits`: seconds until the minute window resets if its request limit is used up."""
    if not fake.enforce_limits:
        return None
    now = time.time()
    minute = int(now // 60)
    with fake._lock:
        m, reqs, _ = fake._window
        if m == minute and reqs >= fake.limits["requests"]:
            return (minute + 1) * 60 - now
    return None


def headers(fake: FakeMessagesAPI, tokens: int, limited: bool) -> dict[str, str]:
    now = time.time()
    minute = int(now // 60)
    with fake._lock:
        m, reqs, toks = fake._window
        if m != minute:
            reqs, toks = 0, 0
        if not limited:
            reqs, toks = reqs + 1, toks + tokens
        fake._window = (minute, reqs, toks)
    reset = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime((minute + 1) * 60))
    lim = fake.limits
    req_limit, tok_limit, in_limit, out_limit = lim["requests"], lim["tokens"], lim["input"], lim["output"]
    return {
        "anthropic-ratelimit-requests-limit": str(req_limit),
        "anthropic-ratelimit-requests-remaining": "0" if limited else str(max(req_limit - reqs, 0)),
        "anthropic-ratelimit-requests-reset": reset,
        "anthropic-ratelimit-tokens-limit": str(tok_limit),
        "anthropic-ratelimit-tokens-remaining": "0" if limited else str(max(tok_limit - toks, 0)),
        "anthropic-ratelimit-tokens-reset": reset,
        "anthropic-ratelimit-input-tokens-limit": str(in_limit),
        "anthropic-ratelimit-input-tokens-remaining": "0" if limited else str(max(in_limit - toks, 0)),
        "anthropic-ratelimit-input-tokens-reset": reset,
        "anthropic-ratelimit-output-tokens-limit": str(out_limit),
        "anthropic-ratelimit-output-tokens-remaining": str(out_limit),
        "anthropic-ratelimit-output-tokens-reset": reset,
    }
