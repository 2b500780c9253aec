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

The connector also spares the fetch that finds nothing. procrastinate's worker fetches one job per
statement and, after each job it gets, fetches again at once, until a fetch comes back empty: an
event arriving alone costs two fetches, the second of them empty. The connector sends its own fetch
(``fetch_job`` in ``sql/queries/worker.sql``: procrastinate's function and columns, and whether any
other job is runnable now). When the fetch found a job and nothing else was runnable, and no
notification reached the worker since that fetch was sent, the fetch procrastinate asks for next (at
once, within ``QUIET_SECONDS``) is answered "no job" without a statement. A job committed meanwhile
NOTIFYs after its commit, so either the fetch saw it or its notification comes: one that arrives
before the next fetch makes it a real fetch, one that arrives after wakes procrastinate's loop as
usual; a job that becomes due by its schedule waits for the next poll, as it would have.

When the fetched job is a lone event's (nothing else runnable, not a replay) and the worker has a free
slot, the same fetch claims its event (``claimed`` in ``fetch_job``; migration 0019): the task then
starts from that claim (:meth:`Handover.claimed`) without a ``start_events`` round trip. With a
backlog, the task's ``start_events`` claims its event and a batch of others, as before. Should the
claiming fetch fail (a lock timeout, an event Postgres cannot update), it is sent again without the
claim, and the task claims its event itself.

It also closes two gaps in procrastinate's loop, where a job waited for the next poll
(``HOOKLINE_WORKER_POLL_INTERVAL``):

- a job announced while a fetch is on its way may have committed after that fetch's snapshot, and
  procrastinate clears its wake-up when the fetch returns. An empty fetch during which a notification
  arrived is sent again (up to ``REFETCHES`` times);
- a job committed while the worker was not listening yet (its start-up: procrastinate fetches, then
  LISTENs), or not any more (its LISTEN connection died and is being opened again), sent its NOTIFY
  to nobody. Each time the LISTENs are in place, the connector wakes procrastinate's loop once, as a
  ``job_inserted`` notification would.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Iterable
from typing import Any, LiteralString

import procrastinate
import psycopg
from procrastinate import connector, sql

from app.core.jobs import PROCESS_EVENT
from app.core.querynames import WorkerQuery
from app.core.records import StartRow
from app.core.sqlfiles import NamedQueries

log = logging.getLogger("hookline.worker")

Q: NamedQueries[WorkerQuery] = NamedQueries("worker", WorkerQuery)
#: procrastinate's fetch, and ours sent in its place (same function and columns, plus more_waiting)
_FETCH, _OUR_FETCH = sql.queries["fetch_job"], Q["fetch_job"]
#: the row procrastinate reads as "no job"
_NO_JOB: dict[str, Any] = dict.fromkeys(
    [
        "id",
        "status",
        "task_name",
        "priority",
        "lock",
        "queueing_lock",
        "args",
        "scheduled_at",
        "queue_name",
        "attempts",
        "worker_id",
    ]
)
#: how soon after a fetch that left nothing runnable the next fetch is answered without a statement
QUIET_SECONDS = 0.05
#: how many times in a row an empty fetch is sent again because a job was announced while it ran
REFETCHES = 3

#: the prefix of the fetch's columns that carry the event it claimed (start_events' columns)
_CLAIM = "claim_"

#: the wake-up the connector gives procrastinate's loop once its LISTENs are in place
_WAKE = '{"type": "job_inserted"}'

#: procrastinate's statements that settle a job it handed over
_SETTLING: frozenset[str] = frozenset({sql.queries["finish_job"], sql.queries["retry_job"]})


class Handover:
    """The handed-over jobs running in this process, and those of them a write of ours finished."""

    def __init__(self) -> None:
        self._running: set[int] = set()
        self._finished: set[int] = set()
        #: procrastinate statements not sent because the event's write had finished the job
        self.skipped = 0
        self._claims: dict[int, StartRow] = {}
        #: whether a fetch may claim the event of the job it hands over: the worker has a free slot
        #: (the runtime's, set by :meth:`claim_with`; never without it)
        self._may_claim: Callable[[], bool] = lambda: False
        self._pickup: Callable[[], bool] = lambda: False

    def claim_with(self, *, free: Callable[[], bool], pickup: Callable[[], bool]) -> None:
        """Let the fetch claim a lone event when ``free()`` (a slot is free); with ``pickup()`` it also
        measures the job's pickup delay, as ``start_events`` does."""
        self._may_claim, self._pickup = free, pickup

    def fetch_arguments(self) -> dict[str, Any]:
        """The claim's parameters of ``fetch_job`` for the fetch about to be sent."""
        return {"claim": self._may_claim(), "task": PROCESS_EVENT, "pickup": self._pickup()}

    def keep_claim(self, job_id: int, row: StartRow) -> None:
        """The fetch that got job ``job_id`` claimed its event: ``row`` is what start_events gives."""
        self._claims[job_id] = row

    def claimed(self, job_id: int) -> StartRow | None:
        """The event claim the fetch of job ``job_id`` made, once (None: the task claims it itself)."""
        return self._claims.pop(job_id, None)

    def begin(self, job_id: int) -> None:
        """procrastinate handed job ``job_id`` to :func:`worker.tasks.process_event`."""
        self._running.add(job_id)

    def end(self, job_id: int) -> None:
        """The task of job ``job_id`` is returning; procrastinate settles the job next."""
        self._running.discard(job_id)
        self._claims.pop(job_id, None)

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
    finished is not finished (or retried) a second time, and a fetch that could only come back empty
    is not sent."""

    def __init__(self, *, handover: Handover | None = None, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.handover = handover
        #: fetches answered "no job" without a statement (nothing was runnable, nothing notified since)
        self.fetches_spared = 0
        #: empty fetches sent again because a job was announced while they ran
        self.refetches = 0
        #: times the LISTENs were put in place (start-up, reconnections), each followed by a wake-up
        self.listens = 0
        #: fetches that claimed the event of the job they got (the task sent no start_events)
        self.fetch_claims = 0
        #: claiming fetches that failed and were sent again without the claim
        self.fetch_claim_failures = 0
        self._quiet_since: float | None = None  # the last fetch got a job and left nothing runnable
        self._notified = False  # a notification arrived since the last fetch was sent
        self._channel = ""  # a channel procrastinate listens on, named in the wake-up

    async def execute_query_async(self, query: LiteralString, **arguments: Any) -> None:
        if self.handover is not None and query in _SETTLING and self.handover.take(arguments.get("job_id")):
            return
        await super().execute_query_async(query, **arguments)

    async def execute_query_one_async(self, query: LiteralString, **arguments: Any) -> dict[str, Any]:
        if query != _FETCH:
            row: dict[str, Any] = await super().execute_query_one_async(query, **arguments)
            return row
        quiet, self._quiet_since = self._quiet_since, None
        if quiet is not None and not self._notified and time.monotonic() - quiet < QUIET_SECONDS:
            self.fetches_spared += 1
            return dict(_NO_JOB)
        for _ in range(REFETCHES + 1):
            self._notified = False
            sent = time.monotonic()
            row = await self._fetch(arguments)
            more = row.pop("more_waiting", True)
            if row.get("id") is not None:
                if more is False:
                    self._quiet_since = sent
                return row
            if not self._notified:
                break
            # Empty, but a job was announced while this fetch ran: it may have committed after the
            # fetch's snapshot. procrastinate clears its wake-up once the fetch returns, so that job
            # would wait for the next poll; fetch again instead.
            self.refetches += 1
        return row

    async def _fetch(self, arguments: dict[str, Any]) -> dict[str, Any]:
        """One ``fetch_job``; a claim it made is kept for the task, and its columns removed."""
        claim = self.handover.fetch_arguments() if self.handover is not None else None
        if claim is None or not claim["claim"]:
            row: dict[str, Any] = await super().execute_query_one_async(
                _OUR_FETCH, **arguments, claim=False, task=PROCESS_EVENT, pickup=False
            )
        else:
            try:
                row = await super().execute_query_one_async(_OUR_FETCH, **arguments, **claim)
            except Exception as e:
                # Rolled back: the job is todo again. A fetch that cannot claim must not stop the queue.
                self.fetch_claim_failures += 1
                log.warning("a fetch could not claim its event (%s); fetching without the claim", e.__class__.__name__)
                row = await super().execute_query_one_async(_OUR_FETCH, **arguments, **{**claim, "claim": False})
        fields = {k[len(_CLAIM) :]: row.pop(k) for k in [k for k in row if k.startswith(_CLAIM)]}
        if row.pop("claimed", False) and row.get("id") is not None and self.handover is not None:
            self.fetch_claims += 1
            start: dict[str, Any] = {
                "event_id": int(row["args"]["event_id"]),
                "job_id": None,
                "job_attempts": None,
                **fields,
            }
            self.handover.keep_claim(int(row["id"]), start)  # type: ignore[arg-type]
        return row

    async def listen_notify(self, on_notification: connector.Notify, channels: Iterable[str]) -> None:
        async def noted(*, channel: str, payload: str) -> None:
            self._notified = True
            await on_notification(channel=channel, payload=payload)

        channels = list(channels)
        self._channel = channels[0] if channels else ""
        await super().listen_notify(noted, channels)

    async def _loop_notify(
        self,
        on_notification: connector.Notify,
        connection: psycopg.AsyncConnection,
        timeout: float = connector.LISTEN_TIMEOUT,
    ) -> None:
        # procrastinate calls this right after its LISTENs, on a new connection each time (start-up, or
        # the last one died): a job committed before that notified nobody, so fetch once.
        self.listens += 1
        await on_notification(channel=self._channel, payload=_WAKE)
        await super()._loop_notify(on_notification=on_notification, connection=connection, timeout=timeout)
