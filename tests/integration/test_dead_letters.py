"""The dead letters as the admin API and the dashboard list them (GET /admin/api/dead-letters, the overview):
newest first, a page at a time, reading the dead letters of the page, not the events table (migration
0041). Measured in rows read (the session's own statistics), never in time."""

from __future__ import annotations

import asyncpg
import psycopg

from app.web.admin import data
from tests.harness import config_from

#: Rows of hookline.events read by this session's scans so far (pg_stat_xact_user_tables, as
#: tests.harness.scans_and_reads reads it for psycopg).
READ = (
    "SELECT seq_tup_read + coalesce(idx_tup_fetch, 0) FROM pg_stat_xact_user_tables "
    "WHERE relid = 'hookline.events'::regclass"
)


async def test_a_page_of_dead_letters_reads_the_page_not_every_event(db_url: str, conn: psycopg.Connection) -> None:
    """Dead letters of an incident a while ago, 30,000 events since: the list read hookline.events
    backwards by id from the newest event until it had a page of dead ones, and then all of it again to
    join each one's tenant (every overview load, every page of the API: 120 ms at 300,000 events, growing
    with the table). With plans made as the web process's connection makes them (prepared, generic after
    five runs), a page reads its own rows."""
    conn.execute(
        "INSERT INTO hookline.events (source, delivery_id, status, tenant, payload, finished_at) "
        "SELECT 'stripe', 'evt_' || g, CASE WHEN g <= 300 THEN 'dead' ELSE 'succeeded' END, 't' || g % 3, "
        "'{}', now() FROM generate_series(1, 30300) g"
    )
    conn.execute("ANALYZE hookline.events")
    config = config_from({})
    db = await asyncpg.connect(db_url)
    try:
        for _ in range(6):  # asyncpg prepares the statement; from the sixth run on Postgres may keep a generic plan
            await data.dead_letters(db, config, before=None, limit=51)
        async with db.transaction():
            read0 = await db.fetchval(READ)
            first = await data.dead_letters(db, config, before=None, limit=51)
            after = await data.dead_letters(db, config, before=first[-1]["event_id"], limit=51)
            read = await db.fetchval(READ) - read0
    finally:
        await db.close()
    assert [d["event_id"] for d in first + after] == list(range(300, 198, -1))
    assert {d["tenant"] for d in first} == {"t0", "t1", "t2"}
    assert read <= 2 * 102 + 5, read  # each dead letter of the two pages and its tenant, not 30,000 events
