"""What a worker waits for before it takes jobs: a database that answers, with this release's schema.

The supervisor in :mod:`worker.main` waits here at start and after every end of the worker loop that
was not a requested shutdown (a database restart), so a worker never runs this code's SQL on a
database it cannot reach, or on an older schema.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time

import psycopg

from app.core import migrations
from app.core.db import libpq_dsn

log = logging.getLogger("hookline.worker")


async def wait_for_database(dsn: str, stop: asyncio.Event) -> bool:
    """Block until Postgres accepts a connection (True) or a stop is requested (False)."""
    delay = 0.5
    while not stop.is_set():
        try:
            conn = await psycopg.AsyncConnection.connect(libpq_dsn(dsn), connect_timeout=5)
            await conn.close()
            return True
        except (psycopg.OperationalError, OSError) as e:
            log.warning("database unreachable (%s); retrying in %.1fs", e.__class__.__name__, delay)
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), delay)
            delay = min(delay * 2, 10.0)
    return False


#: How often a worker waiting for the release step checks the schema again, and how often it says so.
SCHEMA_RECHECK_SECONDS = 2.0
SCHEMA_WARN_EVERY = 60.0


def _versions(versions: list[int]) -> str:
    shown = [f"{v:04d}" for v in versions]
    return ", ".join(shown) if len(shown) <= 4 else f"{shown[0]} … {shown[-1]} ({len(shown)})"


async def wait_for_schema(dsn: str, stop: asyncio.Event, expected: list[migrations.Migration]) -> bool:
    """Block until the database has every migration of this code, as it is (True; a newer release's
    besides is fine), or a stop is requested (False). Until then no job is taken: a worker started before
    its release step ran (or after it failed) would run this code's SQL on an older schema, and each event
    would use up its attempts on "function … does not exist". A database that goes away meanwhile is left
    to the worker loop (True)."""
    warned = 0.0
    while not stop.is_set():
        try:
            st = await asyncio.to_thread(migrations.status, dsn, expected)
        except (psycopg.OperationalError, OSError):
            return True
        if st.current:
            if warned:
                log.info("the database schema is current now: taking jobs")
            return True
        if time.monotonic() - warned >= SCHEMA_WARN_EVERY:
            warned = time.monotonic()
            problems = [f"migration(s) {_versions([m.version for m in st.pending])} not applied"] if st.pending else []
            if st.mismatched:
                problems.append(f"migration(s) {_versions(st.mismatched)} changed since they were applied")
            log.warning(
                "the database schema is not this release's: %s; run `hookline migrate` (the release step). "
                "No jobs are taken until it is",
                "; ".join(problems),
            )
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(stop.wait(), SCHEMA_RECHECK_SECONDS)
    return False
