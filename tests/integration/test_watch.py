"""hookline.watch(): business-table row changes become events, as a DBA meets it in psql.

Every test runs against its own migrated database (the ``conn`` fixture is an autocommit session,
like psql). The end-to-end run through the worker is in tests/acceptance/test_watch_pipeline.py.
"""

from __future__ import annotations

import argparse
import json
import uuid
from typing import Any

import psycopg
import pytest
from psycopg import sql
from pydantic import ValidationError

from app.cli import watch as watch_mod
from app.cli.watch import WatchError, apply_watches, format_watched, list_watched, watch_table
from app.core.watchspec import WatchSpec
from tests.harness import make_settings


@pytest.fixture
def orders(conn: psycopg.Connection) -> str:
    conn.execute("""
        CREATE TABLE public.orders (
            id       bigint PRIMARY KEY,
            status   text NOT NULL DEFAULT 'new',
            note     text,
            amount   numeric(10, 2),
            blob     text,
            meta     json
        )""")
    conn.execute("INSERT INTO orders (id, status, note, amount) VALUES (1, 'new', 'first', 10), (2, 'new', NULL, 20)")
    return "public.orders"


def events(conn: psycopg.Connection) -> list[dict[str, Any]]:
    cur = conn.cursor(row_factory=psycopg.rows.dict_row)
    return cur.execute(
        "SELECT id, source, delivery_id, event_type, ordering_key, status, payload, headers, "
        "occurred_at FROM hookline.events ORDER BY id"
    ).fetchall()


def jobs(conn: psycopg.Connection) -> list[tuple[Any, ...]]:
    return conn.execute("SELECT args, lock, status::text FROM procrastinate_jobs ORDER BY id").fetchall()


def triggers(conn: psycopg.Connection, table: str = "public.orders") -> list[tuple[str, str | None]]:
    return conn.execute(
        "SELECT tgname, obj_description(oid, 'pg_trigger') FROM pg_trigger "
        "WHERE tgrelid = %s::regclass AND NOT tgisinternal ORDER BY tgname",
        (table,),
    ).fetchall()


def one(conn: psycopg.Connection, query: str, *params: Any) -> Any:
    row = conn.execute(query, params or None).fetchone()
    assert row is not None
    return row[0]


# --------------------------------------------------------------------------------------------
# the cases
# --------------------------------------------------------------------------------------------


def test_update_of_status_is_one_event_with_its_job(conn: psycopg.Connection, orders: str) -> None:
    assert one(conn, "SELECT hookline.watch('orders', '{update}', columns => '{status}')") == "created"
    conn.execute("UPDATE orders SET status = 'cancelled' WHERE id = 1")
    (ev,) = events(conn)
    txid = ev["payload"]["txid"]
    assert ev["source"] == "db"
    assert ev["event_type"] == "public.orders.update"
    assert ev["delivery_id"] == f'public.orders:{{"id": 1}}:{txid}:update:1'
    assert ev["ordering_key"] == 'public.orders:{"id": 1}'
    assert ev["status"] == "queued" and ev["occurred_at"] is not None
    assert ev["payload"] == {
        "op": "update",
        "table": "public.orders",
        "key": {"id": 1},
        "txid": txid,
        "changed": ["status"],
        "old": {"id": 1, "status": "new", "note": "first", "amount": 10.00, "blob": None, "meta": None},
        "new": {"id": 1, "status": "cancelled", "note": "first", "amount": 10.00, "blob": None, "meta": None},
    }
    assert ev["headers"]["db-user"] == one(conn, "SELECT session_user::text")
    # the job was deferred in the same transaction, locked per row so one row's events run in order
    assert jobs(conn) == [({"event_id": ev["id"]}, 'hookline:db:public.orders:{"id": 1}', "todo")]


def test_update_of_another_column_does_nothing_when_columns_is_set(conn: psycopg.Connection, orders: str) -> None:
    conn.execute("SELECT hookline.watch('orders', '{update}', columns => '{status}')")
    conn.execute("UPDATE orders SET note = 'changed', amount = 99 WHERE id = 1")
    conn.execute("UPDATE orders SET status = status")  # set, but not changed
    assert events(conn) == [] and jobs(conn) == []
    conn.execute("UPDATE orders SET status = 'paid', note = 'both' WHERE id = 2")
    (ev,) = events(conn)
    assert ev["payload"]["changed"] == ["note", "status"]  # every changed column is listed


def test_rolled_back_transaction_leaves_nothing_and_committed_one_always_has_its_job(
    conn: psycopg.Connection, orders: str
) -> None:
    conn.execute("SELECT hookline.watch('orders')")
    with pytest.raises(RuntimeError), conn.transaction():
        conn.execute("UPDATE orders SET status = 'paid' WHERE id = 1")
        conn.execute("INSERT INTO orders (id) VALUES (3)")
        conn.execute("DELETE FROM orders WHERE id = 2")
        assert len(events(conn)) == 3  # visible inside the transaction …
        raise RuntimeError("business logic fails")
    assert events(conn) == [] and jobs(conn) == []  # … and gone with it
    # a savepoint rolled back takes its events with it; the rest of the transaction keeps theirs
    with conn.transaction():
        conn.execute("UPDATE orders SET status = 'a' WHERE id = 1")
        with pytest.raises(RuntimeError), conn.transaction():
            conn.execute("UPDATE orders SET status = 'b' WHERE id = 1")
            raise RuntimeError("savepoint rolled back")
        conn.execute("UPDATE orders SET status = 'c' WHERE id = 1")
    got = events(conn)
    assert [e["payload"]["new"]["status"] for e in got] == ["a", "c"]
    assert len({e["delivery_id"] for e in got}) == 2
    assert [j[0] for j in jobs(conn)] == [{"event_id": e["id"]} for e in got]  # nobody listened: the jobs wait


def test_a_row_changed_twice_in_one_transaction_gives_two_ordered_events(conn: psycopg.Connection, orders: str) -> None:
    conn.execute("SELECT hookline.watch('orders')")
    with conn.transaction():
        conn.execute("UPDATE orders SET status = 'paid' WHERE id = 1")
        conn.execute("UPDATE orders SET status = 'new' WHERE id = 1")
        conn.execute("UPDATE orders SET status = 'paid' WHERE id = 1")  # same row version as the first
    got = events(conn)
    txid = got[0]["payload"]["txid"]
    assert [e["delivery_id"] for e in got] == [f'public.orders:{{"id": 1}}:{txid}:update:{n}' for n in (1, 2, 3)]
    assert {e["ordering_key"] for e in got} == {'public.orders:{"id": 1}'}
    assert [(e["payload"]["old"]["status"], e["payload"]["new"]["status"]) for e in got] == [
        ("new", "paid"),
        ("paid", "new"),
        ("new", "paid"),
    ]
    # the next transaction starts counting again, with its own txid
    conn.execute("UPDATE orders SET status = 'x' WHERE id = 1")
    last = events(conn)[-1]
    assert last["delivery_id"].endswith(":update:1") and last["payload"]["txid"] != txid


def test_insert_and_delete_events(conn: psycopg.Connection, orders: str) -> None:
    conn.execute("SELECT hookline.watch('orders', '{insert,delete}')")
    conn.execute("INSERT INTO orders (id, status) VALUES (7, 'new')")
    conn.execute("UPDATE orders SET status = 'ignored'")  # update is not watched
    conn.execute("DELETE FROM orders WHERE id = 7")
    ins, dele = events(conn)
    assert ins["event_type"] == "public.orders.insert" and dele["event_type"] == "public.orders.delete"
    assert ins["payload"]["old"] is None and ins["payload"]["new"]["id"] == 7 and ins["payload"]["changed"] is None
    assert dele["payload"]["new"] is None and dele["payload"]["old"]["status"] == "ignored"
    assert dele["payload"]["key"] == {"id": 7} and dele["ordering_key"] == ins["ordering_key"]


def test_thousand_rows_in_one_statement_are_a_thousand_events_and_jobs(conn: psycopg.Connection, orders: str) -> None:
    conn.execute("INSERT INTO orders (id) SELECT g FROM generate_series(3, 1000) g")
    conn.execute("SELECT hookline.watch('orders', '{update}', columns => '{status}')")
    conn.execute("UPDATE orders SET status = 'shipped'")
    assert one(conn, "SELECT count(*) FROM hookline.events") == 1000
    assert one(conn, "SELECT count(DISTINCT delivery_id) FROM hookline.events") == 1000
    assert one(conn, "SELECT count(DISTINCT payload->'key') FROM hookline.events") == 1000
    assert one(conn, "SELECT count(*) FROM procrastinate_jobs") == 1000
    assert one(conn, "SELECT count(DISTINCT args) FROM procrastinate_jobs") == 1000


# --------------------------------------------------------------------------------------------
# injection: the table is a regclass, the condition one expression Postgres parses
# --------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "condition",
    [
        "true; DROP TABLE orders",
        "NEW.status = 'x'; DELETE FROM orders",
        "true) EXECUTE FUNCTION hookline.row_event('x', '{id}', '{}', '') --",
        "true /* sneaky */",
        "true) EXECUTE FUNCTION hookline.enqueue_event(",
        "EXISTS (SELECT 1 FROM pg_class)",
        "NEW.status IN (SELECT status FROM orders)",
        "NEW.no_such_column = 1",
        "count(*) > 1",
        "NEW.status =",
    ],
)
def test_an_injected_or_invalid_condition_is_refused(conn: psycopg.Connection, orders: str, condition: str) -> None:
    with pytest.raises(psycopg.errors.InvalidParameterValue) as info:
        conn.execute("SELECT hookline.watch('orders', condition => %s)", (condition,))
    assert "hookline.watch" in str(info.value)
    assert one(conn, "SELECT count(*) FROM orders") == 2  # still there
    assert triggers(conn) == [] and one(conn, "SELECT count(*) FROM hookline.watches") == 0


def test_subqueries_are_refused_by_postgres_itself(conn: psycopg.Connection, orders: str) -> None:
    with pytest.raises(psycopg.errors.InvalidParameterValue, match="cannot use subquery in trigger WHEN condition"):
        conn.execute("SELECT hookline.watch('orders', '{update}', condition => '(SELECT true)')")


@pytest.mark.parametrize(
    "table",
    [
        "orders; DROP TABLE orders",
        'orders"; DROP TABLE orders; --',
        "orders WHERE false",
        "pg_sleep(1)",
        "no_such_table",
    ],
)
def test_an_injected_table_name_is_refused(conn: psycopg.Connection, db_url: str, orders: str, table: str) -> None:
    with pytest.raises(psycopg.Error):
        conn.execute("SELECT hookline.watch(%s)", (table,))
    assert one(conn, "SELECT count(*) FROM orders") == 2
    with pytest.raises(WatchError) as info:
        apply_watches(db_url, [WatchSpec(table=table)])
    assert "\n" not in str(info.value)
    assert one(conn, "SELECT count(*) FROM orders") == 2


def test_quoted_identifiers_are_handled(conn: psycopg.Connection) -> None:
    conn.execute('CREATE SCHEMA "Sales Dept"')
    conn.execute('CREATE TABLE "Sales Dept"."Order Lines" ("Line Id" int PRIMARY KEY, "Status""s" text)')
    conn.execute("""SELECT hookline.watch('"Sales Dept"."Order Lines"', '{update}', columns => '{"Status\\"s"}',
                                          condition => 'NEW."Status""s" <> ''skip''')""")
    conn.execute("INSERT INTO \"Sales Dept\".\"Order Lines\" VALUES (1, 'a'), (2, 'a')")
    conn.execute(
        'UPDATE "Sales Dept"."Order Lines" SET "Status""s" = CASE "Line Id" WHEN 1 THEN \'b\' ELSE \'skip\' END'
    )
    (ev,) = events(conn)
    assert ev["event_type"] == "Sales Dept.Order Lines.update"
    assert ev["payload"]["key"] == {"Line Id": 1} and ev["payload"]["changed"] == ['Status"s']


# --------------------------------------------------------------------------------------------
# options: condition, keys, wide rows
# --------------------------------------------------------------------------------------------


def test_condition_on_old_and_new(conn: psycopg.Connection, orders: str) -> None:
    conn.execute("""SELECT hookline.watch('orders', '{update}',
                        condition => 'NEW.status = ''cancelled'' AND OLD.status <> ''cancelled''')""")
    conn.execute("UPDATE orders SET status = 'paid' WHERE id = 1")
    conn.execute("UPDATE orders SET status = 'cancelled' WHERE id = 2")
    conn.execute("UPDATE orders SET note = 'still cancelled' WHERE id = 2")
    (ev,) = events(conn)
    assert ev["payload"]["key"] == {"id": 2}
    # NEW does not exist for DELETE: Postgres says so, watch() passes it on with a hint
    with pytest.raises(
        psycopg.errors.InvalidParameterValue, match="DELETE trigger's WHEN condition cannot reference NEW"
    ):
        conn.execute("SELECT hookline.watch('orders', '{update,delete}', condition => 'NEW.status = ''x''')")


def test_a_table_without_primary_key_is_refused_unless_key_columns_are_given(conn: psycopg.Connection) -> None:
    conn.execute("CREATE TABLE audit_log (tenant text, seq int, what text)")
    with pytest.raises(psycopg.errors.InvalidTableDefinition, match="has no primary key") as info:
        conn.execute("SELECT hookline.watch('audit_log')")
    assert info.value.diag.message_hint is not None and "key_columns" in info.value.diag.message_hint
    with pytest.raises(psycopg.errors.UndefinedColumn, match="no column"):
        conn.execute("SELECT hookline.watch('audit_log', key_columns => '{nope}')")
    conn.execute("SELECT hookline.watch('audit_log', key_columns => '{tenant,seq}')")
    conn.execute("INSERT INTO audit_log VALUES ('acme', 1, 'login')")
    (ev,) = events(conn)
    assert ev["payload"]["key"] == {"tenant": "acme", "seq": 1}
    assert ev["ordering_key"] == 'public.audit_log:{"seq": 1, "tenant": "acme"}'


def test_key_columns_override_the_primary_key(conn: psycopg.Connection, orders: str) -> None:
    conn.execute("SELECT hookline.watch('orders', key_columns => '{note}')")
    conn.execute("UPDATE orders SET status = 'x' WHERE id = 1")
    assert events(conn)[0]["payload"]["key"] == {"note": "first"}


def test_wide_values_are_excluded_or_truncated(conn: psycopg.Connection, orders: str) -> None:
    conn.execute("SELECT hookline.watch('orders', '{update}', exclude_columns => '{note}', max_value_bytes => 10)")
    conn.execute("""UPDATE orders SET blob = repeat('é', 100), note = 'secret', meta = '{"k": "0123456789"}',
                    status = 'ok' WHERE id = 1""")
    (ev,) = events(conn)
    new, old = ev["payload"]["new"], ev["payload"]["old"]
    assert "note" not in new and "note" not in old  # excluded: no value …
    assert "note" in ev["payload"]["changed"]  # … but the change is still named
    assert new["blob"] == "é" * 5 and len(new["blob"].encode()) <= 10  # cut on a character boundary
    assert new["meta"] is None  # not a string: nulled
    assert new["status"] == "ok" and new["amount"] == 10
    assert ev["payload"]["truncated"] == ["blob", "meta"]
    assert old == {"id": 1, "status": "new", "amount": 10, "blob": None, "meta": None}


def test_types_without_equality_can_be_watched_columns(conn: psycopg.Connection, orders: str) -> None:
    conn.execute("SELECT hookline.watch('orders', '{update}', columns => '{meta}')")  # json has no '='
    conn.execute("""UPDATE orders SET meta = '{"a": 1}' WHERE id = 1""")
    conn.execute("""UPDATE orders SET meta = '{"a": 1}' WHERE id = 1""")
    assert len(events(conn)) == 1


def test_writers_need_no_rights_on_hookline_nor_any_search_path(conn: psycopg.Connection, orders: str) -> None:
    role = f"hl_clerk_{uuid.uuid4().hex[:8]}"
    conn.execute(sql.SQL("CREATE ROLE {} NOLOGIN").format(sql.Identifier(role)))
    try:
        conn.execute(sql.SQL("GRANT SELECT, UPDATE ON orders TO {}").format(sql.Identifier(role)))
        conn.execute("SELECT hookline.watch('orders', '{update}')")
        with pytest.raises(psycopg.errors.InsufficientPrivilege), conn.transaction():
            conn.execute(sql.SQL("SET LOCAL ROLE {}").format(sql.Identifier(role)))
            conn.execute("SELECT 1 FROM hookline.events")
        with conn.transaction():
            conn.execute(sql.SQL("SET LOCAL ROLE {}").format(sql.Identifier(role)))
            conn.execute("SET LOCAL search_path = pg_catalog")
            conn.execute("UPDATE public.orders SET status = 'by clerk' WHERE id = 1")
        (ev,) = events(conn)
        assert ev["payload"]["new"]["status"] == "by clerk"
        assert len(jobs(conn)) == 1
    finally:
        conn.execute(sql.SQL("DROP OWNED BY {}").format(sql.Identifier(role)))
        conn.execute(sql.SQL("DROP ROLE {}").format(sql.Identifier(role)))


def test_partitioned_tables_report_the_parent(conn: psycopg.Connection) -> None:
    conn.execute("CREATE TABLE metrics (id int, day date, v int, PRIMARY KEY (id, day)) PARTITION BY RANGE (day)")
    conn.execute("CREATE TABLE metrics_2024 PARTITION OF metrics FOR VALUES FROM ('2024-01-01') TO ('2025-01-01')")
    conn.execute("SELECT hookline.watch('metrics', '{insert}')")
    conn.execute("INSERT INTO metrics VALUES (1, '2024-05-01', 3)")
    (ev,) = events(conn)
    assert ev["event_type"] == "public.metrics.insert" and ev["payload"]["key"] == {"id": 1, "day": "2024-05-01"}


@pytest.mark.parametrize(
    ("table_sql", "message"),
    [
        ("CREATE VIEW v AS SELECT 1 AS id", "is not a table"),
        ("CREATE TEMP TABLE v (id int PRIMARY KEY)", "temporary"),
    ],
)
def test_what_cannot_be_watched(conn: psycopg.Connection, table_sql: str, message: str) -> None:
    conn.execute(table_sql)
    with pytest.raises(psycopg.Error, match=message):
        conn.execute("SELECT hookline.watch('v')")
    for own in ("hookline.events", "procrastinate_jobs"):
        with pytest.raises(psycopg.Error, match="feed events into themselves"):
            conn.execute("SELECT hookline.watch(%s)", (own,))


def test_operations_are_checked(conn: psycopg.Connection, orders: str) -> None:
    with pytest.raises(psycopg.errors.InvalidParameterValue, match=r"unknown operation.*truncate"):
        conn.execute("SELECT hookline.watch('orders', '{update,truncate}')")
    with pytest.raises(psycopg.errors.InvalidParameterValue, match="at least one"):
        conn.execute("SELECT hookline.watch('orders', '{}')")
    with pytest.raises(psycopg.errors.InvalidParameterValue, match="columns only filters UPDATE"):
        conn.execute("SELECT hookline.watch('orders', '{insert}', columns => '{status}')")


# --------------------------------------------------------------------------------------------
# managing watches: idempotent watch, unwatch, the view, comments
# --------------------------------------------------------------------------------------------


def test_watch_again_is_a_no_op_and_a_change_replaces_the_triggers(conn: psycopg.Connection, orders: str) -> None:
    q = "SELECT hookline.watch('orders', '{UPDATE, insert}', columns => '{status}')"
    assert one(conn, q) == "created"
    before = conn.execute("SELECT oid FROM pg_trigger WHERE tgrelid = 'orders'::regclass ORDER BY oid").fetchall()
    assert one(conn, q) == "unchanged"
    assert one(conn, "SELECT hookline.watch('public.orders', '{insert,update}', columns => '{status}')") == "unchanged"
    after = conn.execute("SELECT oid FROM pg_trigger WHERE tgrelid = 'orders'::regclass ORDER BY oid").fetchall()
    assert after == before
    assert one(conn, "SELECT hookline.watch('orders', '{update}')") == "replaced"
    assert [t[0] for t in triggers(conn)] == ["hookline_watch_update"]
    conn.execute("UPDATE orders SET note = 'any column now' WHERE id = 1")
    assert len(events(conn)) == 1
    # a trigger dropped by hand is noticed and put back
    conn.execute("DROP TRIGGER hookline_watch_update ON orders")
    assert one(conn, "SELECT active FROM hookline.watched") is False
    assert one(conn, "SELECT hookline.watch('orders', '{update}')") == "replaced"
    assert one(conn, "SELECT active FROM hookline.watched") is True


def test_unwatch_removes_the_triggers_and_keeps_the_events(conn: psycopg.Connection, orders: str) -> None:
    conn.execute("SELECT hookline.watch('orders')")
    conn.execute("UPDATE orders SET status = 'paid' WHERE id = 1")
    assert len(triggers(conn)) == 3
    assert one(conn, "SELECT hookline.unwatch('orders')") is True
    assert triggers(conn) == []
    assert one(conn, "SELECT count(*) FROM hookline.watched") == 0
    conn.execute("UPDATE orders SET status = 'refunded' WHERE id = 1")
    assert len(events(conn)) == 1
    assert one(conn, "SELECT hookline.unwatch('orders')") is False


def test_watched_view_and_comments(conn: psycopg.Connection, orders: str) -> None:
    conn.execute("""SELECT hookline.watch('orders', '{update,delete}', columns => '{status}',
                        condition => 'OLD.amount > 0', exclude_columns => '{blob}', max_value_bytes => 4096)""")
    cur = conn.cursor(row_factory=psycopg.rows.dict_row)
    (row,) = cur.execute("SELECT * FROM hookline.watched").fetchall()
    assert row["table_name"] == "public.orders"
    assert row["event_types"] == ["public.orders.update", "public.orders.delete"]
    assert row["operations"] == ["update", "delete"] and row["columns"] == ["status"]
    assert row["condition"] == "OLD.amount > 0" and row["key_columns"] == ["id"]
    assert row["exclude_columns"] == ["blob"] and row["max_value_bytes"] == 4096 and row["active"] is True
    comments = dict(triggers(conn))
    assert set(comments) == {"hookline_watch_update", "hookline_watch_delete"}
    assert all(c and "hookline.watch()" in c for c in comments.values())
    assert "public.orders.update" in str(comments["hookline_watch_update"])
    # the table's rename keeps the watch (oid); the event types keep the name it was watched under
    conn.execute("ALTER TABLE orders RENAME TO purchase_orders")
    assert one(conn, "SELECT table_name FROM hookline.watched") == "public.purchase_orders"
    conn.execute("UPDATE purchase_orders SET status = 'x' WHERE id = 1")
    assert events(conn)[0]["event_type"] == "public.orders.update"
    # dropping the table drops its triggers; the watch disappears from the view
    conn.execute("DROP TABLE purchase_orders")
    assert one(conn, "SELECT count(*) FROM hookline.watched") == 0


# --------------------------------------------------------------------------------------------
# Python side: WatchSpec, apply_watches, the CLI handlers
# --------------------------------------------------------------------------------------------


def test_watch_spec_parses_toml_shapes() -> None:
    spec = WatchSpec.model_validate(
        {
            "table": " public.orders ",
            "on": "Update, insert",
            "columns": ["status"],
            "when": " NEW.status = 'x' ",
            "exclude_columns": "a, b",
            "max_value_bytes": 10,
        }
    )
    assert spec.table == "public.orders" and spec.on == ("insert", "update") and spec.columns == ("status",)
    assert spec.when == "NEW.status = 'x'" and spec.exclude_columns == ("a", "b")
    assert WatchSpec(table="t").on == ("insert", "update", "delete")
    assert WatchSpec.model_validate({"table": "t", "columns": [], "when": " "}).params()["columns"] is None
    for bad in (
        {"table": "t", "on": ["truncate"]},
        {"table": "t", "on": []},
        {"table": ""},
        {"table": "t", "when": "true; drop table t"},
        {"table": "t", "max_value_bytes": 0},
        {"table": "t", "on": ["insert"], "columns": ["a"]},
        {"table": "t", "nope": 1},
    ):
        with pytest.raises(ValueError):
            WatchSpec.model_validate(bad)
    with pytest.raises(ValidationError):
        spec.table = "other"  # frozen


def test_apply_watches_is_idempotent_and_leaves_other_watches_alone(
    conn: psycopg.Connection, db_url: str, orders: str
) -> None:
    url = db_url
    conn.execute("CREATE TABLE customers (id int PRIMARY KEY, email text)")
    conn.execute("SELECT hookline.watch('customers')")  # a DBA's own watch, not in the file
    specs = [WatchSpec(table="orders", on=("update",), columns=("status",), when="NEW.status <> 'draft'")]
    assert apply_watches(url, specs) == ["public.orders: created (events public.orders.update)"]
    assert apply_watches(url, specs) == ["public.orders: unchanged (events public.orders.update)"]
    changed = [specs[0].model_copy(update={"on": ("insert", "update")})]
    assert apply_watches(url, changed) == [
        "public.orders: replaced (events public.orders.insert, public.orders.update)"
    ]
    assert apply_watches(url, []) == []
    assert sorted(w.table for w in list_watched(url)) == ["public.customers", "public.orders"]
    conn.execute("UPDATE orders SET status = 'paid' WHERE id = 1")
    conn.execute("UPDATE orders SET status = 'draft' WHERE id = 2")
    assert [e["payload"]["new"]["status"] for e in events(conn)] == ["paid"]


def test_apply_watches_is_all_or_nothing_with_one_line_errors(
    conn: psycopg.Connection, db_url: str, orders: str
) -> None:
    url = db_url
    conn.execute("CREATE TABLE nokey (a int)")
    with pytest.raises(WatchError) as info:
        apply_watches(url, [WatchSpec(table="orders"), WatchSpec(table="nokey")])
    msg = str(info.value)
    assert msg.startswith("hookline.watch: table public.nokey has no primary key") and "(hint: " in msg
    assert "\n" not in msg
    assert list_watched(url) == []  # orders was rolled back too
    with pytest.raises(WatchError, match="twice"):
        apply_watches(url, [WatchSpec(table="orders"), WatchSpec(table="public.orders", on=("update",))])
    with pytest.raises(WatchError, match=r"^hookline\.watch: invalid condition .*column new\.nope does not exist"):
        watch_table(url, WatchSpec(table="orders", when="NEW.nope = 1"))
    with pytest.raises(WatchError, match="cannot reach the database"):
        apply_watches("postgresql://nobody@/nowhere?host=/nonexistent", [WatchSpec(table="orders")])


def _cli(argv: list[str]) -> tuple[argparse.Namespace, Any]:
    parser = argparse.ArgumentParser(prog="hookline")
    sub = parser.add_subparsers(dest="command", required=True)
    handlers = watch_mod.add_cli(sub)
    args = parser.parse_args(argv)
    return args, handlers[args.command]


def test_cli_watch_watched_unwatch(
    conn: psycopg.Connection, db_url: str, orders: str, capsys: pytest.CaptureFixture[str]
) -> None:
    settings = make_settings(db_url)
    args, handler = _cli(
        [
            "watch",
            "orders",
            "--on",
            "update",
            "--columns",
            "status,note",
            "--when",
            "NEW.status <> 'draft'",
            "--exclude",
            "blob",
            "--max-value-bytes",
            "100",
        ]
    )
    assert handler(settings, args) == 0
    out = capsys.readouterr().out
    assert out.startswith("public.orders: created (events public.orders.update)") and 'source = "db"' in out
    args, handler = _cli(["watched"])
    assert handler(settings, args) == 0
    listing = capsys.readouterr().out
    assert "public.orders" in listing and "status,note" in listing and "NEW.status <> 'draft'" in listing
    conn.execute("UPDATE orders SET note = 'n' WHERE id = 1")
    assert events(conn)[0]["payload"]["changed"] == ["note"]
    args, handler = _cli(["unwatch", "orders"])
    assert handler(settings, args) == 0
    assert "no longer watched" in capsys.readouterr().out
    assert handler(settings, args) == 0
    assert "was not watched" in capsys.readouterr().out
    args, handler = _cli(["watched"])
    handler(settings, args)
    assert "no table is watched" in capsys.readouterr().out
    # errors: a flag pydantic refuses, then one Postgres refuses, each one line
    args, handler = _cli(["watch", "orders", "--on", "truncate"])
    with pytest.raises(WatchError, match=r"^--on: ") as info:
        handler(settings, args)
    assert "\n" not in str(info.value)
    args, handler = _cli(["watch", "orders", "--columns", "nope"])
    with pytest.raises(WatchError, match="has no column"):
        handler(settings, args)


def test_format_watched_lists_inactive_watches() -> None:
    text = format_watched(
        [watch_mod.Watched("public.t", ("public.t.insert",), ("insert",), None, None, ("id",), (), None, False)]
    )
    assert "public.t" in text and "NO" in text.splitlines()[1]


def test_payload_is_plain_json_for_the_worker(conn: psycopg.Connection, orders: str) -> None:
    conn.execute("SELECT hookline.watch('orders', '{insert}')")
    conn.execute("""INSERT INTO orders (id, amount, meta) VALUES (9, 12.5, '{"x": [1, 2]}')""")
    (ev,) = events(conn)
    body = json.loads(json.dumps(ev["payload"]))
    assert body["new"]["meta"] == {"x": [1, 2]} and body["new"]["amount"] == 12.5
    assert one(conn, "SELECT content_type FROM hookline.events") == "application/json"
