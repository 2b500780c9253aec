"""FailedAttempts on a clock of its own: the window, the 429 it raises, and its bounded memory."""

from __future__ import annotations

import pytest

from app.core.errors import RateLimited
from app.web.throttle import FailedAttempts


def test_the_limit_holds_until_the_window_of_the_first_failure_has_passed() -> None:
    attempts = FailedAttempts(limit=3, window=60.0)
    for t in (100.0, 110.0, 120.0):
        assert attempts.retry_after("a", now=t) == 0
        attempts.failed("a", now=t)
    assert attempts.retry_after("a", now=120.5) == 40  # whole seconds, rounded up
    assert attempts.retry_after("b", now=120.5) == 0
    with pytest.raises(RateLimited) as refused:
        attempts.check("a", now=159.2)
    assert refused.value.headers == {"Retry-After": "1"} and "too many failed token attempts" in refused.value.detail
    assert attempts.retry_after("a", now=160.0) == 0
    attempts.failed("a", now=161.0)  # a new window, counted from this failure
    assert attempts.retry_after("a", now=162.0) == 0


def test_memory_is_bounded_whatever_the_number_of_addresses() -> None:
    attempts = FailedAttempts(limit=2, window=60.0, max_addresses=100)
    for i in range(10_000):
        attempts.failed(f"10.0.{i // 256}.{i % 256}", now=1000.0 + i / 1000)
    assert len(attempts) == 100
    # windows that passed are dropped first, before any live one
    attempts.failed("victim", now=2000.0)
    attempts.failed("victim", now=2000.0)
    for i in range(99):
        attempts.failed(f"late-{i}", now=2001.0)
    assert len(attempts) == 100 and attempts.retry_after("victim", now=2001.0) == 59


@pytest.mark.parametrize("address", ["127.0.0.1", "127.8.9.10", "::1", "::ffff:127.0.0.1"])
def test_loopback_addresses_are_never_counted(address: str) -> None:
    """The machine's own scripts, and a local reverse proxy HOOKLINE_TRUSTED_PROXIES does not name."""
    attempts = FailedAttempts(limit=2, window=60.0)
    for _ in range(5):
        attempts.failed(address, now=100.0)
    assert attempts.retry_after(address, now=101.0) == 0 and len(attempts) == 0
    for _ in range(2):  # not an address at all (a test client's name): counted as any other
        attempts.failed("testclient", now=100.0)
    assert attempts.retry_after("testclient", now=101.0) == 59
