"""The job procrastinate hands over is finished by its event's own last write.

procrastinate finishes (or retries) every job it handed to a task once the task returns: one more
statement, and one more commit, for every event. hookline's last write of an event (the statement that
stores the answer, or ``hookline.finish_event``) finishes a procrastinate job in the same statement,
as it does for the jobs a batch claim took. For the job procrastinate handed over it does so too;
:class:`Handover` remembers which of those a committed write finished, and :class:`QueueConnector`,
the connector procrastinate runs its statements through, then answers procrastinate's own
``finish_job`` for such a job without a statement. So does a ``retry_job``: a run interrupted (a
shutdown) after its outcome was recorded has nothing left to retry.

A job whose write failed, or that ended any other way (retry, throttle, an event already terminal),
is finished or retried by procrastinate as before.
"""

from __future__ import annotations

from typing import Any, LiteralString

import procrastinate
from procrastinate import sql

#: procrastinate's statements that settle a job it handed over
_SETTLING: frozenset[str] = frozenset({sql.queries["finish_job"], sql.queries["retry_job"]})


class Handover:
    """The handed-over jobs running in this process, and those of them a write of ours finished."""

    def __init__(self) -> None:
        self._running: set[int] = set()
        self._finished: set[int] = set()
        #: procrastinate statements not sent because the event's write had finished the job
        self.skipped = 0

    def begin(self, job_id: int) -> None:
        """procrastinate handed job ``job_id`` to :func:`worker.tasks.process_event`."""
        self._running.add(job_id)

    def end(self, job_id: int) -> None:
        """The task of job ``job_id`` is returning; procrastinate settles the job next."""
        self._running.discard(job_id)

    def finished(self, job_id: int | None) -> None:
        """A write that finished procrastinate job ``job_id`` has committed. Jobs this process claimed
        itself (batch claim) are not procrastinate's to settle, and are not remembered."""
        if job_id is not None and job_id in self._running:
            self._finished.add(job_id)

    def take(self, job_id: Any) -> bool:
        """procrastinate is about to settle ``job_id``: True when a write of ours already finished it."""
        if job_id in self._finished:
            self._finished.discard(job_id)
            self.skipped += 1
            return True
        return False

    def __len__(self) -> int:
        return len(self._finished)


class QueueConnector(procrastinate.PsycopgConnector):
    """procrastinate's psycopg connector, except that a handed-over job the event's write already
    finished is not finished (or retried) a second time."""

    def __init__(self, *, handover: Handover | None = None, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.handover = handover

    async def execute_query_async(self, query: LiteralString, **arguments: Any) -> None:
        if self.handover is not None and query in _SETTLING and self.handover.take(arguments.get("job_id")):
            return
        await super().execute_query_async(query, **arguments)
