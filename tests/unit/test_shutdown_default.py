"""HOOKLINE_SHUTDOWN_TIMEOUT's default fits inside the grace period a PaaS gives between SIGTERM and
SIGKILL (30 s on Heroku and Render): the worker hands its running jobs back at the timeout, and that
hand-back (cut-off call stored, job back to todo) must happen before the kill, or the job stays `doing`
until HOOKLINE_STALLED_AFTER passes."""

from __future__ import annotations

import pytest

from app.core.settings import Settings

PAAS_GRACE_SECONDS = 30.0
#: What the hand-back itself may take: cancelling the jobs, storing the cut-off calls, a round trip.
HAND_BACK_MARGIN_SECONDS = 5.0


def test_the_default_shutdown_timeout_leaves_time_to_hand_back_before_a_paas_kill(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.delenv("HOOKLINE_SHUTDOWN_TIMEOUT", raising=False)
    default = Settings().shutdown_timeout
    assert default == 20.0
    assert default + HAND_BACK_MARGIN_SECONDS <= PAAS_GRACE_SECONDS
