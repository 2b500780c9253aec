"""watch() refuses to install its SECURITY DEFINER trigger where another role could plant code."""

from __future__ import annotations

import psycopg
import pytest


def test_watch_is_refused_while_public_may_create_in_the_queue_schema(conn: psycopg.Connection) -> None:
    conn.execute("CREATE TABLE public.orders (id int PRIMARY KEY, status text)")
    conn.execute("GRANT CREATE ON SCHEMA public TO PUBLIC")  # Postgres 14's default
    try:
        with pytest.raises(psycopg.errors.InsufficientPrivilege, match="PUBLIC may CREATE in schema public") as exc:
            conn.execute("SELECT hookline.watch('public.orders')")
        hint = exc.value.diag.message_hint or ""
        assert "REVOKE CREATE ON SCHEMA public FROM PUBLIC" in hint
        assert conn.execute("SELECT count(*) FROM hookline.unsafe_schema_creators()").fetchone() == (1,)
    finally:
        conn.execute("REVOKE CREATE ON SCHEMA public FROM PUBLIC")
    assert conn.execute("SELECT hookline.watch('public.orders')").fetchone() == ("created",)
