"""`hookline tail`'s follower: one line per new event and per status change, read through LISTEN."""

from __future__ import annotations

import asyncio

import asyncpg
import psycopg
import pytest
from psycopg.conninfo import conninfo_to_dict

from app.cli.tail import follow
from app.core.config import Config
from tests.conftest import PgServer
from tests.harness import free_port


async def test_follow_prints_each_transition(conn: psycopg.Connection, db_url: str) -> None:
    lines: list[str] = []
    stop = asyncio.Event()
    task = asyncio.create_task(follow(db_url, lines.append, config=Config(), stop=stop))
    await asyncio.sleep(0.5)  # LISTEN is up
    row = conn.execute(
        "INSERT INTO hookline.events (source, delivery_id, event_type, tenant) "
        "VALUES ('stripe', 'evt_tail', 'invoice.paid', 'acme') RETURNING id"
    ).fetchone()
    assert row is not None
    event_id = row[0]
    conn.execute("UPDATE hookline.events SET status = 'processing' WHERE id = %s", (event_id,))
    conn.execute(
        "INSERT INTO hookline.llm_calls (event_id, pipeline, model, status, request, input_tokens, output_tokens, "
        "cost_usd) VALUES (%s, 'recovery', 'claude-haiku-5-5', 'succeeded', '{}', 10, 2, 0.000002)",
        (event_id,),
    )
    conn.execute("UPDATE hookline.events SET status = 'succeeded', finished_at = now() WHERE id = %s", (event_id,))
    for _ in range(100):
        if len(lines) >= 3:
            break
        await asyncio.sleep(0.05)
    stop.set()
    await asyncio.wait_for(task, 5)
    name = f"event {event_id} stripe/invoice.paid"
    assert lines == [
        f"{name} (tenant acme) → received",
        f"{name} (tenant acme) → processing",
        f"{name} → recovery → claude-haiku-5-5 (10+2 tokens, $0.000002) → succeeded",
    ]


async def test_an_event_in_two_insert_notices_ranges_is_printed_once(conn: psycopg.Connection, db_url: str) -> None:
    """Batches committed at the same time draw ids from one sequence, so their ranges interleave: a batch
    of ids 1 and 3 notifies 1 .. 3, which holds the other batch's 2 (already printed from its own notice)."""
    lines: list[str] = []
    stop = asyncio.Event()
    task = asyncio.create_task(follow(db_url, lines.append, config=Config(), stop=stop))
    await asyncio.sleep(0.5)  # LISTEN is up
    insert = (
        "INSERT INTO hookline.events (id, source, delivery_id) OVERRIDING SYSTEM VALUE "
        "SELECT i, 'stripe', 'evt_range_' || i FROM unnest(%s::bigint[]) AS i"
    )
    base = 10_000_000
    conn.execute(insert, ([base + 2],))  # its notice: base+2 .. base+2
    conn.execute(insert, ([base + 1, base + 3],))  # its notice: base+1 .. base+3, which holds base+2
    for _ in range(100):
        if len(lines) >= 3:
            break
        await asyncio.sleep(0.05)
    await asyncio.sleep(0.3)  # a duplicate, if any, would follow at once
    stop.set()
    await asyncio.wait_for(task, 5)
    assert lines == [
        f"event {base + 2} stripe → received",
        f"event {base + 1} stripe → received",
        f"event {base + 3} stripe → received",
    ]


async def test_tail_reconnects_after_a_session_was_up_and_stops_at_a_refusal(
    empty_db_url: str, pg_server: PgServer
) -> None:
    """Once LISTEN was up, a dropped connection is retried; a database that is gone ends the follower
    (``hookline tail`` then prints the one line every command prints and exits 1)."""
    warnings: asyncio.Queue[str] = asyncio.Queue()
    listening: asyncio.Queue[None] = asyncio.Queue()
    task = asyncio.create_task(
        follow(
            empty_db_url,
            lambda _line: None,
            config=Config(),
            warn=warnings.put_nowait,
            retry_at_start=False,
            on_listening=lambda: listening.put_nowait(None),
        )
    )
    await asyncio.wait_for(listening.get(), 30)
    name = conninfo_to_dict(empty_db_url)["dbname"]
    with psycopg.connect(pg_server.url("postgres"), autocommit=True) as admin:
        admin.execute(
            "SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
            "WHERE datname = %s AND application_name = 'hookline-tail'",
            (name,),
        )
        warning = await asyncio.wait_for(warnings.get(), 30)
        assert "retrying" in warning or "reconnecting" in warning, warning
        assert not task.done()
        admin.execute(f'DROP DATABASE "{name}" WITH (FORCE)')
    with pytest.raises(asyncpg.InvalidCatalogNameError):
        await asyncio.wait_for(task, 60)


async def test_tail_gives_up_on_a_database_it_never_reached() -> None:
    with pytest.raises(OSError):
        await asyncio.wait_for(
            follow(
                f"postgresql://nobody@127.0.0.1:{free_port()}/x",
                lambda _line: None,
                config=Config(),
                retry_at_start=False,
            ),
            60,
        )
