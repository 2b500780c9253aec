"""The running pipeline's deadline, shared by the model call (worker.gate) and its actions
(worker.action_runs) without either importing the other."""

from __future__ import annotations

from contextvars import ContextVar

#: The loop time at which the running pipeline's ``timeout_seconds`` fires (set by the task around
#: each pipeline): tells its timeout from a worker shutdown, the other cancellation a call can meet,
#: and ends its actions a little before it (worker.action_runs).
PIPELINE_DEADLINE: ContextVar[float | None] = ContextVar("hookline_pipeline_deadline", default=None)
