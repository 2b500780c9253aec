"""The schema as a DBA meets it: comments everywhere, the enqueue trigger, NOTIFY, named queries."""

from __future__ import annotations

import json
import re
import select
from pathlib import Path
from typing import get_args

import asyncpg
import psycopg
import pytest

from app.core import jobs as jobnames
from app.core import querynames
from app.core.sqlfiles import queries, sql_dir


def test_every_hookline_object_has_a_comment(conn: psycopg.Connection) -> None:
    missing = conn.execute("""
        SELECT 'table ' || c.relname FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
        WHERE n.nspname = 'hookline' AND c.relkind IN ('r', 'v', 'm', 'i')
          AND obj_description(c.oid, 'pg_class') IS NULL
          AND NOT EXISTS (SELECT 1 FROM pg_constraint k WHERE k.conindid = c.oid)  -- documented on the constraint
        UNION ALL
        SELECT 'column ' || c.relname || '.' || a.attname
        FROM pg_attribute a JOIN pg_class c ON c.oid = a.attrelid JOIN pg_namespace n ON n.oid = c.relnamespace
        WHERE n.nspname = 'hookline' AND c.relkind IN ('r', 'v', 'm') AND a.attnum > 0 AND NOT a.attisdropped
          AND col_description(c.oid, a.attnum) IS NULL
        UNION ALL
        SELECT 'function ' || p.proname FROM pg_proc p JOIN pg_namespace n ON n.oid = p.pronamespace
        WHERE n.nspname = 'hookline' AND obj_description(p.oid, 'pg_proc') IS NULL
        UNION ALL
        SELECT 'trigger ' || t.tgname FROM pg_trigger t JOIN pg_class c ON c.oid = t.tgrelid
        JOIN pg_namespace n ON n.oid = c.relnamespace
        WHERE n.nspname = 'hookline' AND NOT t.tgisinternal AND obj_description(t.oid, 'pg_trigger') IS NULL
        UNION ALL
        SELECT 'constraint ' || co.conname FROM pg_constraint co JOIN pg_namespace n ON n.oid = co.connamespace
        WHERE n.nspname = 'hookline' AND co.contype IN ('c', 'u', 'x', 'p', 'f')
          AND obj_description(co.oid, 'pg_constraint') IS NULL
    """).fetchall()
    assert missing == []


def _insert(conn: psycopg.Connection, delivery: str, ordering_key: str | None = None) -> int:
    row = conn.execute(
        "INSERT INTO hookline.events (source, delivery_id, event_type, ordering_key, payload) "
        "VALUES ('stripe', %s, 'invoice.paid', %s, '{}') RETURNING id",
        (delivery, ordering_key),
    ).fetchone()
    assert row is not None
    return int(row[0])


def test_insert_defers_exactly_one_job_in_the_same_transaction(conn: psycopg.Connection) -> None:
    event_id = _insert(conn, "evt_1", ordering_key="cus_42")
    jobs = conn.execute("SELECT queue_name, task_name, args, lock, status::text FROM procrastinate_jobs").fetchall()
    assert jobs == [(jobnames.QUEUE, jobnames.PROCESS_EVENT, {"event_id": event_id}, "hookline:stripe:cus_42", "todo")]
    # a duplicate delivery is no new row and no new job
    conn.execute(
        "INSERT INTO hookline.events (source, delivery_id) VALUES ('stripe', 'evt_1') "
        "ON CONFLICT (source, delivery_id) DO NOTHING"
    )
    assert conn.execute("SELECT count(*) FROM procrastinate_jobs").fetchone() == (1,)


def test_rolled_back_insert_leaves_neither_event_nor_job(conn: psycopg.Connection) -> None:
    conn.autocommit = False
    _insert(conn, "evt_rb")
    assert conn.execute("SELECT count(*) FROM procrastinate_jobs").fetchone() == (1,)
    conn.rollback()
    conn.autocommit = True
    assert conn.execute("SELECT count(*) FROM hookline.events").fetchone() == (0,)
    assert conn.execute("SELECT count(*) FROM procrastinate_jobs").fetchone() == (0,)


def test_commit_notifies_listening_workers(conn: psycopg.Connection, db_url: str) -> None:
    with psycopg.connect(db_url, autocommit=True) as listener:
        listener.execute(f'LISTEN "procrastinate_queue_v1#{jobnames.QUEUE}"')
        event_id = _insert(conn, "evt_notify")
        ready = select.select([listener.fileno()], [], [], 5)[0]
        assert ready, "no NOTIFY within 5 s of the commit"
        notes = list(listener.notifies(timeout=1, stop_after=1))
    assert notes and json.loads(notes[0].payload)["type"] == "job_inserted"
    job_id = json.loads(notes[0].payload)["job_id"]
    job = conn.execute("SELECT args FROM procrastinate_jobs WHERE id = %s", (job_id,)).fetchone()
    assert job == ({"event_id": event_id},)


def test_status_is_constrained(conn: psycopg.Connection) -> None:
    with pytest.raises(psycopg.errors.CheckViolation):
        conn.execute("INSERT INTO hookline.events (source, delivery_id, status) VALUES ('x', 'y', 'lost')")


def test_trigger_names_the_worker_task() -> None:
    """The task name in SQL and the task the worker registers are one constant."""
    from worker.main import build_app

    sql = "\n".join(p.read_text() for p in (sql_dir() / "migrations").glob("*.sql"))
    assert f"'{jobnames.PROCESS_EVENT}'" in sql
    app = build_app("postgresql://unused@/x?host=/nonexistent", pool_size=2)
    assert jobnames.PROCESS_EVENT in app.tasks
    assert jobnames.MAINTENANCE in app.tasks
    assert app.tasks[jobnames.PROCESS_EVENT].queue == jobnames.QUEUE


async def test_every_named_query_prepares(db_url: str) -> None:
    """Our compile-time check: each block in sql/queries is valid against the migrated schema."""
    conn = await asyncpg.connect(db_url)
    try:
        names: list[str] = []
        for path in sorted((sql_dir() / "queries").glob("*.sql")):
            for name, text in queries(path.stem).items():
                counter = iter(range(1, 100))
                as_dollar = re.sub(r"%\((\w+)\)s", lambda m, c=counter: f"${next(c)}", text)  # type: ignore[misc]
                await conn.prepare(as_dollar)
                names.append(f"{path.stem}.{name}")
    finally:
        await conn.close()
    assert "ingest.store_event" in names and "worker.start_events" in names


def test_every_query_file_has_its_typed_names() -> None:
    """Each sql/queries file is reached through a Literal of exactly its block names."""
    files = {p.stem for p in (sql_dir() / "queries").glob("*.sql")}
    assert files == set(querynames.BY_FILE), "register each sql/queries file in app.core.querynames.BY_FILE"
    for stem, names in querynames.BY_FILE.items():
        assert set(get_args(names)) == set(queries(stem)), stem


def test_sql_stays_out_of_python() -> None:
    """Runtime SQL lives in sql/queries; Python files name blocks instead of embedding DML."""
    root = Path(__file__).resolve().parents[2]
    offenders = []
    for path in [*root.joinpath("app").rglob("*.py"), *root.joinpath("worker").rglob("*.py")]:
        text = path.read_text()
        allowed = path.name in ("migrations.py", "sqlfiles.py")
        if re.search(r"\b(INSERT INTO|UPDATE hookline|DELETE FROM)\b", text) and not allowed:
            offenders.append(path.name)
    assert offenders == []


def test_insert_enqueues_whatever_the_writers_search_path(conn: psycopg.Connection) -> None:
    conn.execute("SET search_path = pg_catalog")
    conn.execute("INSERT INTO hookline.events (source, delivery_id) VALUES ('psql', 'by-hand')")
    assert conn.execute("SELECT count(*) FROM public.procrastinate_jobs").fetchone() == (1,)
