"""Every named block of sql/queries/admin.sql prepares against the migrated schema (our compile check)."""

from __future__ import annotations

from app.core import db
from app.core.sqlfiles import queries


async def test_every_admin_query_prepares(db_url: str) -> None:
    conn = await db.connect(db_url)
    try:
        for name, sql in queries("admin").items():
            try:
                await conn.prepare(sql)
            except Exception as e:
                raise AssertionError(f"admin.sql {name}: {e}") from e
    finally:
        await conn.close()
