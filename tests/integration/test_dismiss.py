"""Dismissing dead letters (migration 0046; README "Dead letters"): hookline.dismiss from psql, what it
takes out of hookline.dead_letters and the dead-letter counts, what stays (the status), the timeline, a
replay clearing it, and `hookline dismiss`."""

from __future__ import annotations

from pathlib import Path

import asyncpg
import psycopg
import pytest

from app.cli.main import main
from app.core.sqlfiles import queries
from app.web.admin import data
from tests.acceptance.test_admin_api import insert_event
from tests.harness import config_from
from tests.integration.test_dead_letters import READ

OBSERVE = queries("observe")


def _counts(conn: psycopg.Connection) -> tuple[int, int]:
    """hookline.dead_letter_counts (the trigger-kept counts), checked against a scan of the events."""
    kept = conn.execute("SELECT open, dismissed FROM hookline.dead_letter_counts").fetchone()
    scanned = conn.execute(
        "SELECT count(*) FILTER (WHERE dismissed_at IS NULL), count(*) FILTER (WHERE dismissed_at IS NOT NULL) "
        "FROM hookline.events WHERE status = 'dead'"
    ).fetchone()
    assert kept == scanned, (kept, scanned)
    assert kept is not None
    return int(kept[0]), int(kept[1])


def _listed(conn: psycopg.Connection) -> list[int]:
    return [int(r[0]) for r in conn.execute("SELECT event_id FROM hookline.dead_letters ORDER BY event_id")]


def test_a_dismissed_dead_letter_leaves_the_view_and_the_counts_and_stays_dead(conn: psycopg.Connection) -> None:
    """Handled by hand, or pruned (never replayable): it stayed in hookline.dead_letters and every count
    for good. Dismissed, it leaves them; its status, and hookline.events_by_status, stay as they were."""
    handled = insert_event(conn, "stripe", "handled", status="dead")
    pruned = insert_event(conn, "stripe", "pruned", status="dead")
    other = insert_event(conn, "stripe", "other", status="dead")
    conn.execute("UPDATE hookline.events SET body = NULL, payload = NULL WHERE id = %s", (pruned,))
    assert _counts(conn) == (3, 0)
    got = conn.execute(
        "SELECT event_id FROM hookline.dismiss(ARRAY[%s, %s]::bigint[], p_reason => 'refunded by hand')",
        (handled, pruned),
    ).fetchall()
    assert sorted(r[0] for r in got) == [handled, pruned]
    assert _listed(conn) == [other]
    assert _counts(conn) == (1, 2)
    assert conn.execute(OBSERVE["dead_letters_count"]).fetchone() == (1,)
    assert conn.execute("SELECT n FROM hookline.events_by_status WHERE status = 'dead'").fetchone() == (3,)
    row = conn.execute(
        "SELECT status, dismissed_by, dismissed_reason FROM hookline.events WHERE id = %s", (handled,)
    ).fetchone()
    assert row == ("dead", conn.info.user, "refunded by hand")  # p_by defaults to the database role
    # the timeline tells it, after the finish
    steps = conn.execute(
        "SELECT step, name, detail FROM hookline.event_timeline WHERE event_id = %s ORDER BY at, step_rank, ref_id",
        (handled,),
    ).fetchall()
    assert steps[-1] == ("dismissed", conn.info.user, "refunded by hand"), steps
    # dismissing again changes nothing and returns nothing
    again = conn.execute("SELECT * FROM hookline.dismiss(ARRAY[%s]::bigint[], p_reason => 'x')", (handled,))
    assert again.fetchall() == []
    assert conn.execute("SELECT dismissed_reason FROM hookline.events WHERE id = %s", (handled,)).fetchone() == (
        "refunded by hand",
    )
    # the recount agrees with the triggers
    conn.execute("SELECT hookline.recount_events_by_status()")
    assert _counts(conn) == (1, 2)


def test_a_replay_clears_the_dismissal_and_the_bulk_replay_leaves_dismissed_ones_out(
    conn: psycopg.Connection,
) -> None:
    """A dismissed event was handled by hand: `hookline replay --status dead` after a fix must not run it
    again. Replayed by its id, it is no longer dead, so no longer dismissed; should it die again, it is a
    dead letter again."""
    dismissed = insert_event(conn, "stripe", "dismissed", status="dead")
    open_one = insert_event(conn, "stripe", "open", status="dead")
    conn.execute("SELECT hookline.dismiss(ARRAY[%s]::bigint[])", (dismissed,))
    bulk = conn.execute("SELECT event_id FROM hookline.replay(p_status => 'dead')").fetchall()
    assert [r[0] for r in bulk] == [open_one]
    assert _counts(conn) == (0, 1)
    conn.execute("SELECT hookline.replay(%s::bigint)", (dismissed,))
    row = conn.execute(
        "SELECT status, dismissed_at, dismissed_by, dismissed_reason FROM hookline.events WHERE id = %s",
        (dismissed,),
    ).fetchone()
    assert row == ("queued", None, None, None)
    assert _counts(conn) == (0, 0)
    conn.execute("UPDATE hookline.events SET status = 'dead', finished_at = now() WHERE id = %s", (dismissed,))
    assert _listed(conn) == [dismissed] and _counts(conn) == (1, 0)


def test_dismiss_refuses_what_is_not_a_dead_letter_and_takes_filters(conn: psycopg.Connection) -> None:
    done = insert_event(conn, "stripe", "done", status="succeeded")
    dead_stripe = [insert_event(conn, "stripe", f"s{i}", status="dead") for i in range(3)]
    dead_github = insert_event(conn, "github", "g", status="dead")
    with pytest.raises(psycopg.errors.ObjectNotInPrerequisiteState, match="not dead"):
        conn.execute("SELECT hookline.dismiss(ARRAY[%s, %s]::bigint[])", (dead_stripe[0], done))
    with pytest.raises(psycopg.errors.NoDataFound, match="no event with id 999999"):
        conn.execute("SELECT hookline.dismiss(ARRAY[999999]::bigint[])")
    with pytest.raises(psycopg.errors.InvalidParameterValue, match="name event ids"):
        conn.execute("SELECT hookline.dismiss(p_reason => 'all of them?')")
    assert _counts(conn) == (4, 0)  # a refused call dismissed nothing
    got = conn.execute("SELECT event_id FROM hookline.dismiss(p_source => 'stripe') ORDER BY 1").fetchall()
    assert [r[0] for r in got] == dead_stripe
    assert _listed(conn) == [dead_github]
    assert conn.execute("SELECT dismissed_at FROM hookline.events WHERE id = %s", (done,)).fetchone() == (None,)


async def test_a_page_of_dead_letters_reads_past_no_dismissed_one(db_url: str, conn: psycopg.Connection) -> None:
    """Thousands of dismissed dead letters newer than the open ones: the list's page still reads its own
    rows (the index holds the undismissed dead letters only), not every dismissed one before them."""
    conn.execute(
        "INSERT INTO hookline.events (source, delivery_id, status, payload, finished_at, dismissed_at) "
        "SELECT 'stripe', 'evt_' || g, 'dead', '{}', now(), CASE WHEN g > 60 THEN now() END "
        "FROM generate_series(1, 5060) g"
    )
    conn.execute("ANALYZE hookline.events")
    db = await asyncpg.connect(db_url)
    try:
        for _ in range(6):  # past the generic plan's switch, as in test_dead_letters
            await data.dead_letters(db, config_from({}), before=None, limit=51)
        async with db.transaction():
            read0 = await db.fetchval(READ)
            page = await data.dead_letters(db, config_from({}), before=None, limit=51)
            read = await db.fetchval(READ) - read0
        assert await data.dead_letter_counts(db) == {"open": 60, "dismissed": 5000}
    finally:
        await db.close()
    assert [d["event_id"] for d in page] == list(range(60, 9, -1))
    assert read <= 2 * 51 + 5, read


def test_hookline_dismiss_by_id_and_by_filter(
    db_url: str, conn: psycopg.Connection, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str],
    tmp_path: Path,
) -> None:  # fmt: skip
    monkeypatch.setenv("DATABASE_URL", db_url)
    monkeypatch.setenv("HOOKLINE_CONFIG", str(tmp_path / "none.toml"))
    first = insert_event(conn, "stripe", "a", status="dead")
    second = insert_event(conn, "github", "b", status="dead")
    done = insert_event(conn, "github", "c", status="succeeded")
    capsys.readouterr()
    assert main(["dismiss", str(first), str(first), "--reason", "answered the ticket"]) == 0
    assert capsys.readouterr().out == f"dismissed 1 dead letter(s): {first}\n"
    row = conn.execute("SELECT dismissed_by, dismissed_reason FROM hookline.events WHERE id = %s", (first,))
    by, reason = row.fetchone() or (None, None)
    assert str(by).startswith("hookline dismiss") and reason == "answered the ticket"
    assert main(["dismiss", str(done)]) == 1
    assert "not dead" in capsys.readouterr().err
    assert main(["dismiss"]) == 2
    assert "name event ids or at least one filter" in capsys.readouterr().err
    assert main(["dismiss", "--source", "github", "--since", "1h"]) == 0
    assert capsys.readouterr().out == f"dismissed 1 dead letter(s): {second}\n"
    assert _listed(conn) == [] and _counts(conn) == (0, 2)
