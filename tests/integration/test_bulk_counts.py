"""The counts of hookline.events in a transaction of many statements (migration 0054).

A bulk UPDATE of a watched table inserts one event per row, each in a statement of its own, so the
statement triggers that keep hookline.event_status_counts, hookline.dismissed_counts and the
events_finished totals of hookline.metric_totals fire once per row. They upserted the backend's slot
every time: the same row updated again and again in one transaction, each time stepping over every
version the transaction left (O(N²) in all). Past its 32nd firing a transaction now moves to a slot of
its own every 32 firings, and the worker's maintenance folds those slots back. These tests hold the
counts to count(*) through such transactions and the fold, and check that no count row takes more than
32 updates in one of them.
"""

from __future__ import annotations

import logging

import psycopg
import pytest
from psycopg import sql

from tests.harness import config_from, make_settings
from tests.integration.test_status_counts import assert_exact
from worker.maintenance import fold_counts, fold_counts_quietly
from worker.runtime import Runtime

#: Firings of the count triggers one slot takes in one transaction (hookline.count_slot).
PER_SLOT = 32
#: Every count table, and its count column.
TABLES = {"event_status_counts": "n", "dismissed_counts": "n", "metric_totals": "value"}

#: In one transaction: single-row INSERTs of events (queued, then some dead and dismissed), and
#: single-row UPDATEs that finish some (succeeded), as many statements as a bulk UPDATE of a watched
#: table makes, one per row.
BULK = """
DO $$
BEGIN
    FOR i IN 1..{n} LOOP
        INSERT INTO hookline.events (source, delivery_id, status, payload, dismissed_at)
        VALUES ('db', {prefix} || i, CASE WHEN i % 10 = 0 THEN 'dead' ELSE 'queued' END, '{{}}',
                CASE WHEN i % 20 = 0 THEN now() END);
    END LOOP;
    FOR i IN 1..{finished} LOOP
        UPDATE hookline.events SET status = 'succeeded', finished_at = now()
        WHERE source = 'db' AND delivery_id = {prefix} || i AND status = 'queued';
    END LOOP;
END
$$
"""


def _bulk(conn: psycopg.Connection, prefix: str, n: int = 2000, finished: int = 400) -> None:
    conn.execute(sql.SQL(BULK).format(n=n, prefix=sql.Literal(prefix), finished=finished))


def assert_all_exact(conn: psycopg.Connection) -> None:
    """Every trigger-kept count equals what a scan of hookline.events says."""
    assert_exact(conn)
    open_, dismissed = conn.execute("SELECT open, dismissed FROM hookline.dead_letter_counts").fetchone() or (0, 0)
    scanned = conn.execute(
        "SELECT count(*) FILTER (WHERE dismissed_at IS NULL), count(*) FILTER (WHERE dismissed_at IS NOT NULL) "
        "FROM hookline.events WHERE status = 'dead'"
    ).fetchone()
    assert (open_, dismissed) == scanned
    totals = conn.execute(
        "SELECT status, sum(value)::bigint FROM hookline.metric_totals WHERE metric = 'events_finished' "
        "GROUP BY status HAVING sum(value) <> 0"
    ).fetchall()
    finished = conn.execute(
        "SELECT status, count(*) FROM hookline.events WHERE finished_at IS NOT NULL GROUP BY status"
    ).fetchall()
    assert dict(totals) == dict(finished)


def _written_here(conn: psycopg.Connection) -> dict[str, tuple[int, int]]:
    """Per count table: the row writes (inserts + updates) of this transaction so far, and the rows
    it wrote (their xmin is this transaction)."""
    out = {}
    for table in TABLES:
        writes = conn.execute(
            "SELECT n_tup_ins + n_tup_upd FROM pg_stat_xact_user_tables WHERE relid = %s::regclass",
            (f"hookline.{table}",),
        ).fetchone()
        rows = conn.execute(
            f"SELECT count(*) FROM hookline.{table} WHERE xmin::text::bigint = txid_current() % 4294967296"
        ).fetchone()
        assert writes is not None and rows is not None
        out[table] = (int(writes[0]), int(rows[0]))
    return out


def test_no_count_row_takes_more_than_32_updates_in_one_transaction(conn: psycopg.Connection) -> None:
    with conn.transaction():
        _bulk(conn, "a")
        written = _written_here(conn)
        # one row per status slot per 32 firings at most: writes ≤ 32 × the rows written
        for table, (writes, rows) in written.items():
            assert writes <= PER_SLOT * rows, (table, writes, rows)
        # the statuses took a slot of this transaction's own for each further 32 firings
        assert written["event_status_counts"][1] > (2000 + 400) // PER_SLOT
        assert_all_exact(conn)
    assert_all_exact(conn)


def test_a_rolled_back_savepoint_takes_its_counts_with_it(conn: psycopg.Connection) -> None:
    with conn.transaction():
        _bulk(conn, "kept-", n=100, finished=20)
        try:
            with conn.transaction():
                _bulk(conn, "gone-", n=100, finished=20)
                raise LookupError
        except LookupError:
            pass
        _bulk(conn, "after-", n=100, finished=20)
    assert_all_exact(conn)
    assert conn.execute("SELECT count(*) FROM hookline.events").fetchone() == (200,)


async def test_the_fold_keeps_the_counts_and_empties_the_overflow_slots(conn: psycopg.Connection, db_url: str) -> None:
    _bulk(conn, "a")
    _bulk(conn, "b", n=300, finished=300)
    overflow = " + ".join(f"(SELECT count(*) FROM hookline.{t} WHERE shard > 16)" for t in TABLES)
    before = conn.execute(f"SELECT {overflow}").fetchone()
    assert before is not None and before[0] > 3 * 10  # more slots than one fold batch below
    rt = Runtime.build(make_settings(db_url), config_from({}))
    await rt.open()
    try:
        assert await fold_counts(rt.db, batch=10) == before[0]
        assert await fold_counts(rt.db) == 0
    finally:
        await rt.close()
    assert conn.execute(f"SELECT {overflow}").fetchone() == (0,)
    assert_all_exact(conn)
    # the counts go on from the folded slot
    _bulk(conn, "c", n=100, finished=50)
    assert_all_exact(conn)


def _other_slot(db_url: str, pid: int) -> psycopg.Connection:
    """A connection whose backend's slots (pid % 16, and pid % 8 for metric_totals) are not ``pid``'s."""
    spare: list[psycopg.Connection] = []
    while True:
        c = psycopg.connect(db_url, autocommit=True)
        if c.info.backend_pid % 8 != pid % 8:
            for s in spare:
                s.close()
            return c
        spare.append(c)


def test_two_bulk_transactions_never_wait_for_each_other(conn: psycopg.Connection, db_url: str) -> None:
    """Two transactions of many statements, interleaved on one thread: had either to wait for a row the
    other holds, lock_timeout would fail it (no two share an overflow slot)."""
    with psycopg.connect(db_url, autocommit=True) as a, _other_slot(db_url, a.info.backend_pid) as b:
        for c in (a, b):
            c.execute("SET lock_timeout = '5s'")
            c.execute("BEGIN")
        for round_ in range(10):
            for name, c in (("a", a), ("b", b)):
                _bulk(c, f"{name}{round_}-", n=100, finished=30)
        assert conn.execute(
            "SELECT count(*) FROM pg_locks WHERE NOT granted AND pid = ANY (%s)",
            ([a.info.backend_pid, b.info.backend_pid],),
        ).fetchone() == (0,)
        a.execute("COMMIT")
        b.execute("COMMIT")
    assert_all_exact(conn)
    assert conn.execute("SELECT count(*) FROM hookline.events").fetchone() == (2000,)


async def test_a_fold_that_fails_leaves_the_retention_after_it_to_run(
    conn: psycopg.Connection, db_url: str, caplog: pytest.LogCaptureFixture
) -> None:
    """The fold runs in the maintenance before retention; one that keeps failing (here its function is
    gone, as a grant missing or a timeout would fail it) failed the whole maintenance every minute, and
    jobs, payloads and alert claims were never pruned again. It is logged and left to the next minute."""
    _bulk(conn, "a")
    conn.execute("ALTER FUNCTION hookline.fold_count_slots(integer) RENAME TO fold_count_slots_gone")
    rt = Runtime.build(make_settings(db_url), config_from({}))
    await rt.open()
    try:
        with caplog.at_level(logging.WARNING, logger="hookline.maintenance"):
            assert await fold_counts_quietly(rt.db) == 0
        assert "folding the count slots failed (UndefinedFunction, SQLSTATE 42883)" in caplog.text
    finally:
        await rt.close()
        conn.execute("ALTER FUNCTION hookline.fold_count_slots_gone(integer) RENAME TO fold_count_slots")
    assert_all_exact(conn)
