"""A changed ``[[watch]]`` entry replaces its triggers (DROP/CREATE TRIGGER: ACCESS EXCLUSIVE and SHARE
ROW EXCLUSIVE locks on the user's table) without queueing the table's writes behind a long transaction.

The release step's lock requests give up after a short ``lock_timeout`` and are tried again, as the
migrations' are (app/core/lockwait.py): a request that waited would hold up every later write to the
table for as long as a DBA's read lasted.
"""

from __future__ import annotations

import argparse
import time
from collections.abc import Iterator
from concurrent.futures import Future, ThreadPoolExecutor

import psycopg
import pytest

from app.cli.release import release
from app.cli.watch import Handler, WatchError, add_cli, apply_watches, list_watched, wait_line
from app.core import lockwait
from app.core.watchspec import WatchSpec
from tests.harness import config_from, make_settings

#: A write that waits longer than this was queued behind the release step's lock request (its
#: lock_timeout is 1 s): without it, the write waits as long as the DBA's transaction.
WRITE_WAIT_LIMIT = "4s"
#: The longest a write may wait: the step's own lock request gives up after 1 s; the rest is slack.
WRITE_SLOWEST = 3.0


@pytest.fixture
def orders(conn: psycopg.Connection) -> str:
    conn.execute("CREATE TABLE public.orders (id bigint PRIMARY KEY, status text NOT NULL DEFAULT 'new')")
    conn.execute("INSERT INTO orders (id) VALUES (1), (2)")
    return "public.orders"


@pytest.fixture
def pool() -> Iterator[ThreadPoolExecutor]:
    with ThreadPoolExecutor(max_workers=1) as ex:
        yield ex


def write(db_url: str, status: str) -> float:
    """One UPDATE of the watched table, as the business application makes it; returns its duration.
    Its own lock_timeout makes a queued write an error instead of a hung test."""
    with psycopg.connect(db_url, autocommit=True) as app:
        app.execute(f"SET lock_timeout = '{WRITE_WAIT_LIMIT}'")
        start = time.monotonic()
        app.execute("UPDATE orders SET status = %s WHERE id = 1", (status,))
        return time.monotonic() - start


def cli(argv: list[str]) -> tuple[argparse.Namespace, Handler]:
    parser = argparse.ArgumentParser(prog="hookline")
    handlers = add_cli(parser.add_subparsers(dest="command", required=True))
    args = parser.parse_args(argv)
    return args, handlers[args.command]


def watch_operations(db_url: str) -> tuple[str, ...]:
    (w,) = list_watched(db_url)
    return w.operations


def test_a_changed_watch_waiting_for_its_lock_does_not_block_writes(
    db_url: str, orders: str, pool: ThreadPoolExecutor
) -> None:
    """A DBA's long read of the watched table is open when the release step replaces the table's
    triggers (the [[watch]] entry gained insert). Writes to the table go through while the step waits;
    once the read ends, the step replaces the triggers."""
    assert apply_watches(db_url, [WatchSpec(table=orders, on=("update",))]) == [
        "public.orders: created (events public.orders.update)"
    ]
    config = config_from({"watch": [{"table": orders, "on": ["insert", "update"]}]})
    out: list[str] = []
    with psycopg.connect(db_url) as dba:
        dba.execute("SELECT count(*) FROM orders").fetchone()  # ACCESS SHARE, held until commit
        step: Future[object] = pool.submit(release, db_url, config, out.append)
        time.sleep(1.5)  # the step has asked for its lock (and given up at least once)
        durations = []
        for i in range(4):
            durations.append(write(db_url, f"paid-{i}"))
            time.sleep(0.4)
        assert not step.done(), out
        assert "watch public.orders: the table is locked by another transaction; trying again …" in out
        assert watch_operations(db_url) == ("update",)
        dba.commit()  # the read ends
    step.result(timeout=30)
    assert max(durations) < WRITE_SLOWEST, durations
    assert "watch public.orders: replaced (events public.orders.insert, public.orders.update)" in out
    assert watch_operations(db_url) == ("insert", "update")


def test_a_first_watch_with_a_condition_waits_behind_a_long_write(
    db_url: str, orders: str, pool: ThreadPoolExecutor
) -> None:
    """CREATE TRIGGER (SHARE ROW EXCLUSIVE) waits for a long write transaction. The lock timeout inside
    hookline.watch()'s condition check is a busy table to try again, not an invalid condition."""
    spec = WatchSpec(table=orders, on=("update",), when="NEW.status = 'cancelled'")
    waits: list[tuple[str, int]] = []
    with psycopg.connect(db_url) as writer:
        writer.execute("UPDATE orders SET status = 'held' WHERE id = 2")  # ROW EXCLUSIVE, held until commit
        step = pool.submit(apply_watches, db_url, [spec], lambda table, tries: waits.append((table, tries)))
        time.sleep(2.0)
        assert not step.done()
        assert waits and waits[0] == (orders, 1)
        assert write(db_url, "other") < WRITE_SLOWEST
        writer.commit()
    assert step.result(timeout=30) == ["public.orders: created (events public.orders.update)"]


def test_the_release_step_gives_up_with_a_clear_error(
    db_url: str, orders: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Past the retry time, nothing of the [[watch]] entries is changed and the error says why."""
    apply_watches(db_url, [WatchSpec(table=orders, on=("update",))])
    monkeypatch.setattr(lockwait, "LOCK_RETRY_SECONDS", 1.5)
    with psycopg.connect(db_url) as dba:
        dba.execute("SELECT count(*) FROM orders").fetchone()
        with pytest.raises(WatchError) as err:
            apply_watches(db_url, [WatchSpec(table=orders, on=("insert", "update"))])
    assert str(err.value) == (
        "public.orders: the table stayed locked by another transaction for 2 s "
        "(a long transaction on it: see pg_stat_activity); no [[watch]] entry was changed"
    )
    assert watch_operations(db_url) == ("update",)


def test_hookline_watch_and_unwatch_wait_for_a_busy_table(
    db_url: str, orders: str, pool: ThreadPoolExecutor, capsys: pytest.CaptureFixture[str]
) -> None:
    """``hookline watch`` (a changed watch) and ``hookline unwatch`` behind a DBA's long read: they say
    so, the table's writes go through, and they finish once the read ends."""
    settings = make_settings(db_url)
    apply_watches(db_url, [WatchSpec(table=orders, on=("update",))])
    for argv in (["watch", "orders", "--on", "insert,update"], ["unwatch", "orders"]):
        args, handler = cli(argv)
        with psycopg.connect(db_url) as dba:
            dba.execute("SELECT count(*) FROM orders").fetchone()
            step = pool.submit(handler, settings, args)
            time.sleep(1.5)
            assert write(db_url, "paid") < WRITE_SLOWEST
            assert not step.done()
            dba.commit()
        assert step.result(timeout=30) == 0
        out = capsys.readouterr().out
        assert out.startswith("orders: the table is locked by another transaction; trying again …\n"), out
    assert list_watched(db_url) == []


def test_wait_lines_are_the_first_and_every_tenth() -> None:
    said = [tries for tries in range(1, 31) if wait_line("t", tries) is not None]
    assert said == [1, 10, 20, 30]
