"""An event's terminal write, carried to the last write of its run.

On the happy path an event costs two short transactions: the claim that loads it, and the write that
stores its answer *and* finishes it (``hookline.finish_event``, or ``hookline.finish_events`` for a
group commit's rows, inside the statement that stores the model call's row). :class:`Closing` is what
that write needs: it takes :meth:`params`, and once the statement has succeeded and finished the
event (never before: a failed write must leave the event to the failure path, and a write refused
because the run's claim is no longer current finishes nothing) calls :meth:`carried`. When nothing can carry
it (actions follow the answer, whose outcomes are recorded on their own; a reused answer; a
micro-batch), :func:`worker.tasks.handle_event` finishes the event with its
own statement.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from app.core.status import EventStatus

DRY_RUN_DETAIL = "dry run: ANTHROPIC_API_KEY is not set; the request is stored in hookline.llm_calls, no action fired"
SIMULATED_DETAIL = "simulated model: answers made up from the output schema, no API call"

#: The finish parameters of a write that does not finish the event.
NO_FINISH: dict[str, Any] = {
    "finish_status": None,
    "finish_dry_run": False,
    "finish_detail": None,
    "finish_job_id": None,
    "finish_claim": None,
}


def success_detail(*, dry: bool, simulated: bool) -> str | None:
    """The ``detail`` of a succeeded event."""
    if dry:
        return DRY_RUN_DETAIL
    return SIMULATED_DETAIL if simulated else None


@dataclass
class Closing:
    """The succeeded outcome of one event's run, for the run's last write to record."""

    event_id: int
    #: the procrastinate job to finish with it: the one procrastinate handed over (which procrastinate
    #: then does not finish again: worker.handover) or one this worker claimed itself (batch claim)
    job_id: int | None
    simulated: bool
    #: an earlier pipeline of this run was a dry run
    dry_so_far: bool = False
    done: bool = False
    #: the run's claim (worker.outcomes.claim_of): the write finishes the event only while that claim is
    #: current (migrations 0047, 0048); None: no such test
    claim: int | None = None

    def params(self, *, dry: bool = False) -> dict[str, Any]:
        """The finish parameters for the write that carries the outcome."""
        dry = dry or self.dry_so_far
        return {
            "finish_status": EventStatus.SUCCEEDED,
            "finish_dry_run": dry,
            "finish_detail": success_detail(dry=dry, simulated=self.simulated),
            "finish_job_id": self.job_id,
            "finish_claim": self.claim,
        }


def carried(closing: Closing | None) -> None:
    """The write that took ``closing.params`` has succeeded: the event is finished."""
    if closing is not None:
        closing.done = True


def finish_params(closing: Closing | None, *, dry: bool = False) -> dict[str, Any]:
    """``closing.params`` when this write is the run's last, else :data:`NO_FINISH`."""
    return closing.params(dry=dry) if closing is not None else dict(NO_FINISH)
