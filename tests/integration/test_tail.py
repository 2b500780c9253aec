"""`hookline tail`'s follower: one line per new event and per status change, read through LISTEN."""

from __future__ import annotations

import asyncio

import psycopg

from app.cli.tail import follow


async def test_follow_prints_each_transition(conn: psycopg.Connection, db_url: str) -> None:
    lines: list[str] = []
    stop = asyncio.Event()
    task = asyncio.create_task(follow(db_url, lines.append, stop=stop))
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
    task = asyncio.create_task(follow(db_url, lines.append, stop=stop))
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
