"""hookline.watch(): a DBA's own INSERT/UPDATE/DELETE on a watched table never fails because of
hookline, and a watch keeps its meaning across column renames (migration 0032).

Like tests/integration/test_watch.py, every test runs in its own migrated database through an
autocommit session (``conn``), as a DBA in psql would.
"""

from __future__ import annotations

from typing import Any

import psycopg
import pytest
from psycopg.types.json import Jsonb

from app.cli.watch import apply_watches, format_watched, list_watched
from app.core.watchspec import WatchSpec


def events(conn: psycopg.Connection) -> list[dict[str, Any]]:
    cur = conn.cursor(row_factory=psycopg.rows.dict_row)
    return cur.execute(
        "SELECT id, delivery_id, event_type, ordering_key, payload FROM hookline.events ORDER BY id"
    ).fetchall()


def one(conn: psycopg.Connection, query: str, *params: Any) -> Any:
    row = conn.execute(query, params or None).fetchone()
    assert row is not None
    return row[0]


def watched(conn: psycopg.Connection) -> dict[str, Any]:
    cur = conn.cursor(row_factory=psycopg.rows.dict_row)
    (row,) = cur.execute("SELECT * FROM hookline.watched").fetchall()
    return row


# --------------------------------------------------------------------------------------------
# values jsonb refuses
# --------------------------------------------------------------------------------------------


@pytest.mark.parametrize("value", ['{"s": "a\\u0000b"}', '"\\ud83d"', "1e200000"])
def test_a_json_value_jsonb_refuses_never_fails_the_write(conn: psycopg.Connection, value: str) -> None:
    conn.execute("CREATE TABLE raw_hooks (id int PRIMARY KEY, body json, note text)")
    conn.execute("INSERT INTO raw_hooks VALUES (1, %s, 'old')", (value,))  # json takes it, jsonb would not
    conn.execute("SELECT hookline.watch('raw_hooks', exclude_columns => '{body}')")
    conn.execute("INSERT INTO raw_hooks VALUES (2, %s, 'x')", (value,))
    conn.execute("UPDATE raw_hooks SET note = 'new' WHERE id = 1")
    conn.execute("UPDATE raw_hooks SET body = '{\"ok\": 1}' WHERE id = 2")
    conn.execute("DELETE FROM raw_hooks WHERE id = 1")
    ins, upd, upd_body, dele = (e["payload"] for e in events(conn))
    # excluded: never converted, never in the payload, and no "truncated" either
    assert ins["new"] == {"id": 2, "note": "x"} and "truncated" not in ins
    assert upd["old"] == {"id": 1, "note": "old"} and upd["new"] == {"id": 1, "note": "new"}
    assert upd["changed"] == ["note"] and upd["key"] == {"id": 1}
    assert upd_body["changed"] == ["body"]  # an excluded column's change is still named
    assert dele["old"] == {"id": 1, "note": "new"} and dele["key"] == {"id": 1}

    # not excluded: the value becomes null and is named in "truncated"; the rest of the row is there
    conn.execute("SELECT hookline.watch('raw_hooks')")
    conn.execute("INSERT INTO raw_hooks VALUES (3, %s, 'y')", (value,))
    conn.execute("UPDATE raw_hooks SET note = 'z' WHERE id = 3")
    ins, upd = (e["payload"] for e in events(conn)[4:])
    assert ins["new"] == {"id": 3, "body": None, "note": "y"} and ins["truncated"] == ["body"]
    assert upd["old"]["body"] is None and upd["new"] == {"id": 3, "body": None, "note": "z"}
    assert upd["changed"] == ["note"] and upd["truncated"] == ["body"] and upd["key"] == {"id": 3}


def test_a_wide_excluded_value_is_never_converted(conn: psycopg.Connection) -> None:
    """bytea of 140 MB: its JSON text (hex) is over jsonb's 256 MB string limit."""
    conn.execute("CREATE TABLE documents (id int PRIMARY KEY, title text, body_pdf bytea)")
    conn.execute("INSERT INTO documents VALUES (1, 'big', decode(repeat('ab', 140000000), 'hex'))")
    conn.execute("SELECT hookline.watch('documents', exclude_columns => '{body_pdf}', max_value_bytes => 2048)")
    conn.execute("UPDATE documents SET title = 'renamed' WHERE id = 1")
    conn.execute("UPDATE documents SET body_pdf = body_pdf || '\\x00'::bytea WHERE id = 1")
    renamed, new_pdf = (e["payload"] for e in events(conn))
    assert renamed["old"] == {"id": 1, "title": "big"} and renamed["new"] == {"id": 1, "title": "renamed"}
    assert renamed["changed"] == ["title"] and "truncated" not in renamed
    assert new_pdf["changed"] == ["body_pdf"] and new_pdf["new"] == {"id": 1, "title": "renamed"}

    # not excluded, with max_value_bytes: cut before it is converted
    conn.execute("SELECT hookline.watch('documents', max_value_bytes => 2048)")
    conn.execute("UPDATE documents SET title = 'cut' WHERE id = 1")
    cut = events(conn)[-1]["payload"]
    assert cut["new"]["body_pdf"] == "\\x" + "ab" * 1023 and cut["truncated"] == ["body_pdf"]
    assert cut["new"]["title"] == "cut" and cut["changed"] == ["title"]

    # not excluded, no limit: too big for a payload, so null and named
    conn.execute("SELECT hookline.watch('documents')")
    conn.execute("UPDATE documents SET title = 'nulled' WHERE id = 1")
    nulled = events(conn)[-1]["payload"]
    assert nulled["new"] == {"id": 1, "title": "nulled", "body_pdf": None} and nulled["truncated"] == ["body_pdf"]
    assert nulled["changed"] == ["title"] and nulled["key"] == {"id": 1}


# --------------------------------------------------------------------------------------------
# keys the table takes but a B-tree index row of hookline's cannot
# --------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("ddl", "value"),
    [
        ("k text PRIMARY KEY", "SELECT left(string_agg(md5(g::text), ''), 2690) FROM generate_series(1, 90) g"),
        ("k bytea PRIMARY KEY", "SELECT decode(string_agg(md5(g::text), ''), 'hex') FROM generate_series(1, 88) g"),
    ],
)
def test_a_long_key_goes_by_its_hash(conn: psycopg.Connection, ddl: str, value: str) -> None:
    conn.execute(f"CREATE TABLE keyed ({ddl}, v int)")
    conn.execute("SELECT hookline.watch('keyed')")
    conn.execute(f"INSERT INTO keyed SELECT ({value}), 1")
    conn.execute("UPDATE keyed SET v = 2")
    conn.execute("INSERT INTO keyed VALUES ('short', 1)")
    ins, upd, short = events(conn)
    full_key = one(conn, f"SELECT jsonb_build_object('k', ({value}))")
    assert ins["payload"]["key"] == full_key == upd["payload"]["key"]  # the payload keeps the whole key
    digest = one(conn, "SELECT encode(sha256(convert_to(%s::jsonb::text, 'UTF8')), 'hex')", Jsonb(full_key))
    assert ins["ordering_key"] == upd["ordering_key"] == f"public.keyed:sha256:{digest}"  # same key, same hash
    assert ins["delivery_id"].startswith(f"public.keyed:sha256:{digest}:") and ins["delivery_id"].endswith(":insert:1")
    locks = [r[0] for r in conn.execute("SELECT lock FROM procrastinate_jobs ORDER BY id").fetchall()]
    assert locks[:2] == [f"hookline:db:public.keyed:sha256:{digest}"] * 2
    assert "sha256" not in short["ordering_key"] and short["ordering_key"].startswith('public.keyed:{"k": ')


# --------------------------------------------------------------------------------------------
# renamed columns
# --------------------------------------------------------------------------------------------


def test_renamed_key_and_excluded_columns_keep_their_meaning(conn: psycopg.Connection) -> None:
    conn.execute("CREATE TABLE cust (id int PRIMARY KEY, email text, card_token text)")
    conn.execute("INSERT INTO cust VALUES (1, 'a@x', 'tok_SECRET1')")
    conn.execute("SELECT hookline.watch('cust', exclude_columns => '{card_token}')")
    conn.execute("ALTER TABLE cust RENAME COLUMN card_token TO card_tok")
    conn.execute("ALTER TABLE cust RENAME COLUMN id TO cust_id")
    conn.execute("INSERT INTO cust VALUES (2, 'b@x', 'tok_SECRET2')")
    conn.execute("UPDATE cust SET email = 'c@x', card_tok = 'tok_SECRET3' WHERE cust_id = 1")
    ins, upd = events(conn)
    assert ins["payload"]["key"] == {"cust_id": 2} and ins["payload"]["new"] == {"cust_id": 2, "email": "b@x"}
    assert ins["ordering_key"] == 'public.cust:{"cust_id": 2}'
    assert upd["payload"]["key"] == {"cust_id": 1} and upd["payload"]["changed"] == ["card_tok", "email"]
    assert "SECRET" not in str([e["payload"] for e in events(conn)])
    row = watched(conn)
    assert row["key_columns"] == ["cust_id"] and row["exclude_columns"] == ["card_tok"] and row["active"] is True
    assert "renamed" in row["attention"]

    # "rename away, add a new column of the old name": both stay out of the payload
    conn.execute("ALTER TABLE cust RENAME COLUMN card_tok TO card_token_v1")
    conn.execute("ALTER TABLE cust ADD COLUMN card_token text")
    conn.execute("INSERT INTO cust VALUES (4, 'd@x', 'tok_SECRET4', 'tok_SECRET5')")
    assert events(conn)[-1]["payload"]["new"] == {"cust_id": 4, "email": "d@x"}
    assert watched(conn)["exclude_columns"] == ["card_token_v1", "card_token"]

    # re-running watch() with the names as they are now settles it
    assert one(conn, "SELECT hookline.watch('cust', exclude_columns => '{card_token_v1,card_token}')") == "replaced"
    row = watched(conn)
    assert row["attention"] is None and row["key_columns"] == ["cust_id"]
    conn.execute("UPDATE cust SET email = 'e@x' WHERE cust_id = 4")
    assert events(conn)[-1]["payload"]["new"] == {"cust_id": 4, "email": "e@x"}
    assert one(conn, "SELECT hookline.watch('cust', exclude_columns => '{card_token_v1,card_token}')") == "unchanged"


def test_renames_on_a_partitioned_table_reach_its_partitions(conn: psycopg.Connection) -> None:
    conn.execute(
        "CREATE TABLE m (id int, region text, secret text, PRIMARY KEY (id, region)) PARTITION BY LIST (region)"
    )
    conn.execute("CREATE TABLE m_eu PARTITION OF m FOR VALUES IN ('eu')")
    conn.execute("SELECT hookline.watch('m', '{insert}', exclude_columns => '{secret}')")
    conn.execute("ALTER TABLE m RENAME COLUMN secret TO hidden")
    conn.execute("ALTER TABLE m RENAME COLUMN id TO m_id")
    conn.execute("INSERT INTO m VALUES (1, 'eu', 'SECRET')")
    (ev,) = events(conn)
    assert ev["payload"]["key"] == {"m_id": 1, "region": "eu"} and ev["payload"]["new"] == {"m_id": 1, "region": "eu"}


def test_a_dropped_key_column_shows_in_watched(conn: psycopg.Connection, db_url: str) -> None:
    conn.execute("CREATE TABLE audit (tenant text, seq int, what text)")
    conn.execute("SELECT hookline.watch('audit', key_columns => '{tenant,seq}')")
    conn.execute("ALTER TABLE audit DROP COLUMN seq")
    notices: list[str] = []
    conn.add_notice_handler(lambda d: notices.append(d.message_primary or ""))
    conn.execute("INSERT INTO audit VALUES ('acme', 'login')")  # still an event, never an error
    assert events(conn)[0]["payload"]["key"] == {"tenant": "acme"}
    assert any("key column" in n for n in notices)
    row = watched(conn)
    assert row["active"] is False and "key column" in row["attention"]
    (item,) = list_watched(db_url)
    assert item.active is False and item.attention == row["attention"]
    listing = format_watched([item])
    assert "NO" in listing.splitlines()[1] and listing.splitlines()[-1] == f"public.audit: {row['attention']}"


def test_triggers_from_before_0032_keep_working_and_watch_replaces_them(conn: psycopg.Connection) -> None:
    conn.execute("CREATE TABLE raw_hooks (id int PRIMARY KEY, body json, note text)")
    conn.execute("SELECT hookline.watch('raw_hooks', '{insert}', exclude_columns => '{body}')")
    # what 0003's watch() installed: four arguments, names only, and no attnums in hookline.watches
    conn.execute("DROP TRIGGER hookline_watch_insert ON raw_hooks")
    conn.execute(
        "CREATE TRIGGER hookline_watch_insert AFTER INSERT ON raw_hooks FOR EACH ROW "
        "EXECUTE FUNCTION hookline.row_event('public.raw_hooks', '{id}', '{body}', '')"
    )
    conn.execute("UPDATE hookline.watches SET table_columns = NULL, key_attnums = NULL, exclude_attnums = NULL")
    conn.execute("""INSERT INTO raw_hooks VALUES (1, '{"s": "a\\u0000b"}', 'x')""")
    assert events(conn)[0]["payload"]["new"] == {"id": 1, "note": "x"}
    assert "before hookline migration 0032" in watched(conn)["attention"]
    assert one(conn, "SELECT hookline.watch('raw_hooks', '{insert}', exclude_columns => '{body}')") == "replaced"
    assert one(conn, "SELECT tgnargs FROM pg_trigger WHERE tgname = 'hookline_watch_insert'") == 8
    assert watched(conn)["attention"] is None


# --------------------------------------------------------------------------------------------
# the writer's session settings (migration 0051)
# --------------------------------------------------------------------------------------------


def test_one_row_has_one_key_whatever_the_writer_s_session_settings(conn: psycopg.Connection) -> None:
    """A table partitioned by time has a timestamptz in its key. Its JSON text followed the writer's
    TimeZone, so a writer in Berlin gave the row another ordering key (and job lock) than one in UTC:
    the row's events could run side by side, out of order."""
    conn.execute(
        "CREATE TABLE readings (id int, taken_at timestamptz, tag bytea, every interval, "
        "PRIMARY KEY (id, taken_at, tag, every)) PARTITION BY RANGE (taken_at)"
    )
    conn.execute("CREATE TABLE readings_2026 PARTITION OF readings FOR VALUES FROM ('2026-01-01') TO ('2027-01-01')")
    conn.execute("SELECT hookline.watch('readings')")
    conn.execute("SET TimeZone = 'UTC'")
    conn.execute("INSERT INTO readings VALUES (1, '2026-06-01 10:00:00+00', '\\x01ff', '1 day')")
    conn.execute("SET TimeZone = 'Europe/Berlin'")
    conn.execute("SET IntervalStyle = 'iso_8601'")
    conn.execute("SET bytea_output = 'escape'")
    conn.execute("UPDATE readings SET id = 1 WHERE id = 1")
    ins, upd = events(conn)
    assert ins["ordering_key"] == upd["ordering_key"]
    assert (
        ins["payload"]["key"]
        == upd["payload"]["key"]
        == {
            "id": 1,
            "taken_at": "2026-06-01T10:00:00+00:00",
            "tag": "\\x01ff",
            "every": "1 day",
        }
    )
    locks = conn.execute("SELECT DISTINCT lock FROM procrastinate_jobs").fetchall()
    assert len(locks) == 1


# --------------------------------------------------------------------------------------------
# a columns filter on types without a usable equality (migration 0050)
# --------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("ddl", "old", "new"),
    [
        ("point[]", "ARRAY[point(1, 2)]", "ARRAY[point(3, 4)]"),
        ("json[]", """ARRAY['{"a": 1}'::json]""", """ARRAY['{"a": 2}'::json]"""),
        ("pair", """ROW(1, '{"a": 1}')""", """ROW(1, '{"a": 2}')"""),  # equal first fields: the json is compared
        ("points", "ARRAY[point(1, 2)]", "ARRAY[point(3, 4)]"),  # a domain over point[]
    ],
)
def test_a_columns_filter_never_fails_the_update(conn: psycopg.Connection, ddl: str, old: str, new: str) -> None:
    conn.execute("CREATE TYPE pair AS (n int, j json)")
    conn.execute("CREATE DOMAIN points AS point[]")
    conn.execute(f"CREATE TABLE shapes (id int PRIMARY KEY, v {ddl}, note text)")
    conn.execute(f"INSERT INTO shapes VALUES (1, {old}, 'a')")
    assert one(conn, "SELECT hookline.watch('shapes', '{update}', columns => '{v}')") == "created"
    conn.execute(f"UPDATE shapes SET v = {new} WHERE id = 1")  # failed: no equality operator for point / json
    conn.execute(f"UPDATE shapes SET v = {new}, note = 'b' WHERE id = 1")  # the same value: no event
    (ev,) = events(conn)
    assert ev["payload"]["changed"] == ["v"]


def test_watch_replaces_an_update_trigger_that_compares_such_a_column_natively(conn: psycopg.Connection) -> None:
    conn.execute("CREATE TABLE shapes (id int PRIMARY KEY, v point[])")
    conn.execute("SELECT hookline.watch('shapes', '{update}', columns => '{v}')")
    (args,) = conn.execute("SELECT tgargs FROM pg_trigger WHERE tgname = 'hookline_watch_update'").fetchone() or ()
    # what watch() installed before migration 0050: the same arguments, IS DISTINCT FROM on point[]
    conn.execute("DROP TRIGGER hookline_watch_update ON shapes")
    quoted = ", ".join(psycopg.sql.quote(a) for a in bytes(args).decode().split("\x00")[:-1])
    conn.execute(
        "CREATE TRIGGER hookline_watch_update AFTER UPDATE ON shapes FOR EACH ROW "
        f"WHEN (OLD.v IS DISTINCT FROM NEW.v) EXECUTE FUNCTION hookline.row_event({quoted})"
    )
    assert one(conn, "SELECT hookline.watch('shapes', '{update}', columns => '{v}')") == "replaced"
    conn.execute("INSERT INTO shapes VALUES (1, ARRAY[point(1, 2)])")
    conn.execute("UPDATE shapes SET v = ARRAY[point(3, 4)]")
    assert len(events(conn)) == 1
    assert one(conn, "SELECT hookline.watch('shapes', '{update}', columns => '{v}')") == "unchanged"


# --------------------------------------------------------------------------------------------
# what watch() refuses or warns about
# --------------------------------------------------------------------------------------------


def test_a_virtual_generated_column_must_be_excluded(conn: psycopg.Connection) -> None:
    if conn.info.server_version < 180000:
        pytest.skip("virtual generated columns are Postgres 18+")
    conn.execute("CREATE TABLE gen (id int PRIMARY KEY, price int, total int GENERATED ALWAYS AS (price * 2) VIRTUAL)")
    with pytest.raises(psycopg.errors.FeatureNotSupported, match=r"total of public\.gen are virtual generated") as info:
        conn.execute("SELECT hookline.watch('gen')")
    hint = info.value.diag.message_hint or ""
    assert "exclude_columns => '{total}'" in hint and "STORED" in hint
    assert one(conn, "SELECT count(*) FROM hookline.watches") == 0
    with pytest.raises(psycopg.errors.FeatureNotSupported):
        conn.execute("SELECT hookline.watch('gen', key_columns => '{total}', exclude_columns => '{total}')")
    assert one(conn, "SELECT hookline.watch('gen', exclude_columns => '{total}')") == "created"
    conn.execute("INSERT INTO gen (id, price) VALUES (1, 5)")
    assert events(conn)[0]["payload"]["new"] == {"id": 1, "price": 5}


def test_inheritance_children_are_named_in_a_warning(conn: psycopg.Connection, db_url: str) -> None:
    conn.execute("CREATE TABLE parent (id int PRIMARY KEY, v int)")
    conn.execute("CREATE TABLE child (extra text) INHERITS (parent)")
    notices: list[tuple[str, str]] = []
    conn.add_notice_handler(lambda d: notices.append((d.severity_nonlocalized or "", d.message_primary or "")))
    assert one(conn, "SELECT hookline.watch('parent')") == "created"  # a warning, not an error
    ((severity, message),) = notices
    assert severity == "WARNING" and "watched themselves" in message
    assert "inheritance children (public.child)" in message
    notices.clear()
    conn.execute("CREATE TABLE metrics (id int, day date, PRIMARY KEY (id, day)) PARTITION BY RANGE (day)")
    conn.execute("CREATE TABLE metrics_2024 PARTITION OF metrics FOR VALUES FROM ('2024-01-01') TO ('2025-01-01')")
    conn.execute("SELECT hookline.watch('metrics')")
    assert notices == []  # partitions are watched through their parent: nothing to warn about
    # `hookline migrate` / `hookline watch` print it under the table's line
    conn.execute("SELECT hookline.unwatch('parent')")
    first, warning = apply_watches(db_url, [WatchSpec(table="parent")])
    assert first.startswith("public.parent: created") and warning.startswith("  warning: hookline.watch: ")
    assert "inheritance children (public.child)" in warning
