"""The worker's group commit (``worker/callwriter.py``): model calls stored by concurrent jobs share one
statement and one commit, each finishing its own event, and a row Postgres rejects fails alone."""

from __future__ import annotations

import asyncio
import json
from decimal import Decimal
from typing import Any

import psycopg
import pytest

from app.core.status import CallStatus
from tests.harness import make_settings, rows
from tests.worker.test_pipeline import insert_event
from worker.callwriter import CallWriter, rows_json
from worker.closing import Closing
from worker.db import Q, WorkerDB
from worker.llm import CallRecord, call_row

REQUEST = {"model": "claude-haiku-4-5", "max_tokens": 64, "messages": [{"role": "user", "content": "hi"}]}


def _record(status: str = CallStatus.SUCCEEDED, **over: Any) -> CallRecord:
    return CallRecord(
        model="claude-haiku-4-5",
        status=status,  # type: ignore[arg-type]
        request=REQUEST,
        response={"id": "msg_1", "stop_reason": "end_turn"},
        output={"label": "ok", "n": [1, 2]},
        usage={"input_tokens": 10, "output_tokens": 3},
        cost_usd=Decimal("0.00001"),
        latency_ms=12,
        request_id="req_1",
        **over,
    )


@pytest.fixture
async def db(db_url: str) -> Any:
    wdb = WorkerDB(make_settings(db_url).dsn() or db_url, max_size=4)
    await wdb.open()
    try:
        yield wdb
    finally:
        await wdb.close()


async def test_concurrent_calls_share_a_statement_and_each_finishes_its_event(db_url: str, db: WorkerDB) -> None:
    ids = [insert_event(db_url, f"evt_g{i}") for i in range(12)]
    closings = [Closing(i, None, simulated=False) for i in ids]
    got = await asyncio.gather(*(db.store_call(call_row(c.event_id, "p", _record(), c), c) for c in closings))
    assert all(r is not None and r["id"] is not None for r in got)
    assert all(c.done for c in closings)
    # the first row went alone (nothing else was waiting yet); the other eleven shared a flush
    assert db.calls.stats["rows"] == 12 and db.calls.stats["flushes"] < 12
    assert db.calls.stats["max_batch_seen"] > 1
    stored = rows(
        db_url,
        "SELECT c.event_id, c.status, c.output, c.cost_usd, c.input_tokens, e.status, e.detail "
        "FROM hookline.llm_calls c JOIN hookline.events e ON e.id = c.event_id ORDER BY c.event_id",
    )
    assert [r[0] for r in stored] == ids
    expected = ("succeeded", Decimal("0.00001"), 10, "succeeded", None)
    assert {(r[1], r[3], r[4], r[5], r[6]) for r in stored} == {expected}
    assert all(r[2] == {"label": "ok", "n": [1, 2]} for r in stored)
    # a second succeeded call of the same event and pipeline is not stored twice: id is None
    again = await asyncio.gather(*(db.store_call(call_row(i, "p", _record())) for i in ids[:3]))
    assert [r["id"] if r else "none" for r in again] == [None, None, None]
    # the /metrics totals count each stored call once, whether it came alone or in a batch (migration
    # 0014 counts per statement), and nothing for the three that were not stored
    totals = {
        tuple(r[:4]): r[4]
        for r in rows(
            db_url,
            "SELECT metric, model, kind, status, sum(value) FROM hookline.metric_totals "
            "WHERE metric <> 'events_finished' GROUP BY 1, 2, 3, 4",
        )
    }
    m = "claude-haiku-4-5"
    assert totals == {
        ("model_calls", m, "", "succeeded"): 12,
        ("tokens", m, "input", ""): 120,
        ("tokens", m, "output", ""): 36,
        ("cost_usd", m, "", ""): Decimal("0.00012"),
    }


async def test_a_rejected_row_fails_alone_and_the_others_commit(db_url: str, db: WorkerDB) -> None:
    ids = [insert_event(db_url, f"evt_r{i}") for i in range(6)]
    # a first row keeps the flush busy so the next five queue up and go together
    first = asyncio.create_task(db.store_call(call_row(ids[0], "p", _record())))
    await asyncio.sleep(0)
    closings = {i: Closing(i, None, simulated=False) for i in ids[1:]}
    bad = ids[3]
    results = await asyncio.gather(
        *(
            db.store_call(call_row(i, "p", _record("no-such-status" if i == bad else CallStatus.SUCCEEDED), c), c)
            for i, c in closings.items()
        ),
        return_exceptions=True,
    )
    await first
    errors = [r for r in results if isinstance(r, BaseException)]
    assert len(errors) == 1 and isinstance(errors[0], psycopg.errors.CheckViolation)
    assert db.calls.stats["fallbacks"] == 1
    assert not closings[bad].done and all(c.done for i, c in closings.items() if i != bad)
    finished = {r[0]: r[1] for r in rows(db_url, "SELECT id, status FROM hookline.events")}
    assert finished[bad] == "queued"  # left to the failure path
    assert [finished[i] for i in ids[1:] if i != bad] == ["succeeded"] * 4
    assert {r[0] for r in rows(db_url, "SELECT event_id FROM hookline.llm_calls")} == set(ids) - {bad}


async def test_a_caller_cancelled_mid_write_still_learns_its_event_was_finished(db_url: str, db: WorkerDB) -> None:
    event_id = insert_event(db_url, "evt_c")
    closing = Closing(event_id, None, simulated=False)
    task = asyncio.create_task(db.store_call(call_row(event_id, "p", _record(), closing), closing))
    await asyncio.sleep(0)  # queued, and its flush started
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    # the write went through before the cancellation reached the caller: it knows, and hands nothing back
    assert closing.done
    assert rows(db_url, "SELECT status FROM hookline.events WHERE id = %s", event_id) == [("succeeded",)]


async def _heard(listener: psycopg.AsyncConnection[Any]) -> list[dict[str, Any]]:
    """The notifications that arrive within half a second of quiet, in order."""
    return [json.loads(n.payload) async for n in listener.notifies(timeout=0.5)]


async def test_listeners_hear_of_a_batch_right_after_its_commit_not_from_inside_it(db_url: str, db: WorkerDB) -> None:
    """Migration 0015: ``insert_calls`` keeps its status and answer NOTIFYs out of its durable commit
    (which would hold Postgres's notification queue lock through its WAL flush); the writer sends the
    same payloads right after it, statuses before answers as the triggers did."""
    ids = [insert_event(db_url, f"evt_n{i}") for i in range(6)]
    listener = await psycopg.AsyncConnection.connect(db_url, autocommit=True)
    try:
        await listener.execute("LISTEN hookline_events")
        # the statement on its own is silent; any other writer still notifies inside its transaction
        alone = rows_json([call_row(ids[0], "p", _record(), Closing(ids[0], None, simulated=False))])
        with psycopg.connect(db_url, autocommit=True) as conn:
            conn.execute(Q["insert_calls"], {"rows": alone, "notify": "after_commit"})
            conn.execute("UPDATE hookline.events SET status = 'dead' WHERE id = %s", (ids[4],))
        assert await _heard(listener) == [{"op": "status", "id": ids[4], "status": "dead"}]
        # through the writer: every finished event's status, then its answer
        closings = [Closing(i, None, simulated=False) for i in ids[1:4]]
        await asyncio.gather(*(db.store_call(call_row(c.event_id, "p", _record(), c), c) for c in closings))
        heard = await _heard(listener)
        statuses = [{"op": "status", "id": i, "status": "succeeded"} for i in ids[1:4]]
        answers = [{"op": "answer", "id": i, "pipeline": "p"} for i in ids[1:4]]
        assert sorted(heard, key=str) == sorted(statuses + answers, key=str)
        assert all(heard.index(s) < heard.index(a) for s, a in zip(statuses, answers, strict=True))
        # a dry run stores no answer and finishes its event: its status only
        dry = Closing(ids[5], None, simulated=False)
        await db.store_call(call_row(ids[5], "p", _record(CallStatus.DRY_RUN), dry, dry=True), dry)
        assert await _heard(listener) == [{"op": "status", "id": ids[5], "status": "succeeded"}]
        assert db.calls.stats["notify_failures"] == 0
    finally:
        await listener.close()


async def test_a_synchronous_request_s_answer_is_announced_inside_its_commit(db_url: str, db: WorkerDB) -> None:
    """A flush holding the answer a synchronous request waits for (``inline``) notifies inside its
    transaction, so the request hears of it as the commit ends; the writer sends nothing after it. Shown
    with the after-commit statement broken: the inline rows are still heard, the ordinary ones are not,
    alone, in a shared flush and through the one-row-at-a-time fallback."""
    ids = [insert_event(db_url, f"evt_i{i}") for i in range(9)]
    writer = CallWriter(db, Q["insert_calls"], "SELECT hookline.no_such_function()", max_flushes=1)
    listener = await psycopg.AsyncConnection.connect(db_url, autocommit=True)

    def told(*event_ids: int) -> list[dict[str, Any]]:
        return sorted(
            [m for i in event_ids for m in ({"op": "status", "id": i, "status": "succeeded"}, _answer(i))], key=str
        )

    def store(i: int, *, inline: bool, status: str = CallStatus.SUCCEEDED) -> Any:
        c = Closing(i, None, simulated=False)
        return writer.store(call_row(i, "p", _record(status), c), c, inline=inline)

    try:
        await listener.execute("LISTEN hookline_events")
        # alone
        await store(ids[0], inline=True)
        assert sorted(await _heard(listener), key=str) == told(ids[0])
        assert writer.stats["notified_after"] == writer.stats["notify_failures"] == 0
        await store(ids[1], inline=False)
        assert await _heard(listener) == []  # its after-commit statement failed
        assert writer.stats["notified_after"] == writer.stats["notify_failures"] == 1
        # one synchronous row in a shared flush: the whole statement notifies inside its transaction
        busy = asyncio.create_task(store(ids[2], inline=False))  # keeps the one flush busy: the rest queue
        await asyncio.sleep(0)
        await asyncio.gather(store(ids[3], inline=False), store(ids[4], inline=True), store(ids[5], inline=False))
        await busy
        assert writer.stats["max_batch_seen"] == 3
        assert sorted(await _heard(listener), key=str) == told(ids[3], ids[4], ids[5])
        assert writer.stats["notified_after"] == writer.stats["notify_failures"] == 2  # ids[2]'s alone
        # a rejected row: one statement per row, each synchronous one notifying inside its own
        busy = asyncio.create_task(store(ids[2], inline=False))  # already answered: nothing to announce
        await asyncio.sleep(0)
        results = await asyncio.gather(
            store(ids[6], inline=True),
            store(ids[7], inline=False, status="no-such-status"),
            store(ids[8], inline=False),
            return_exceptions=True,
        )
        await busy
        assert isinstance(results[1], psycopg.errors.CheckViolation) and writer.stats["fallbacks"] == 1
        assert sorted(await _heard(listener), key=str) == told(ids[6])
        assert writer.stats["notified_after"] == writer.stats["notify_failures"] == 4  # ids[2] again, ids[8]
    finally:
        await listener.close()


def _answer(event_id: int) -> dict[str, Any]:
    return {"op": "answer", "id": event_id, "pipeline": "p"}
