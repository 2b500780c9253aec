"""The web process's one LISTEN connection: status waiters and subscribers, with real NOTIFYs."""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
from collections.abc import AsyncIterator

import psycopg
import pytest

from app.web import listener as listener_module
from app.web.listener import EventListener
from tests.conftest import PgServer


def _insert(conn: psycopg.Connection, delivery_id: str) -> int:
    row = conn.execute(
        "INSERT INTO hookline.events (source, delivery_id) VALUES ('s', %s) RETURNING id", (delivery_id,)
    ).fetchone()
    assert row is not None
    return int(row[0])


async def test_waiter_wakes_on_its_own_event_only(db_url: str, conn: psycopg.Connection) -> None:
    listener = EventListener(db_url)
    try:
        assert await listener.wait_connected(10)
        first, second = _insert(conn, "a"), _insert(conn, "b")
        async with listener.watch(first) as w1, listener.watch(second) as w2:
            assert listener.waiting() == 2
            await asyncio.to_thread(
                conn.execute, "UPDATE hookline.events SET status = 'succeeded' WHERE id = %s", (first,)
            )
            assert await w1.changed(10)
            assert w1.status == "succeeded"
            assert not await w2.changed(0.3)
            assert w2.status is None
        assert listener.waiting() == 0
    finally:
        await listener.close()


async def test_subscribers_see_one_insert_notice_per_statement(db_url: str, conn: psycopg.Connection) -> None:
    listener = EventListener(db_url)
    try:
        assert await listener.wait_connected(10)
        async with listener.subscribe() as queue:
            await asyncio.to_thread(
                conn.execute,
                "INSERT INTO hookline.events (source, delivery_id) "
                "SELECT 's', 'batch-' || g FROM generate_series(1, 50) g",
            )
            notice = await asyncio.wait_for(queue.get(), 10)
            assert notice.op == "insert"
            assert notice.data["count"] == 50
            assert notice.data["max_id"] - notice.data["min_id"] == 49
            await asyncio.sleep(0.2)
            assert queue.empty()  # one NOTIFY for the whole statement
    finally:
        await listener.close()


async def test_reconnects_and_wakes_waiters(db_url: str, conn: psycopg.Connection) -> None:
    listener = EventListener(db_url, max_backoff=0.5)
    try:
        assert await listener.wait_connected(10)
        event_id = _insert(conn, "c")
        async with listener.watch(event_id) as waiter:
            conn.execute(
                "SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
                "WHERE application_name = 'hookline-web-listen' AND datname = current_database()"
            )
            assert await waiter.changed(15)
            assert waiter.reconnected  # notices may have been missed: the caller re-reads the row
        assert listener.connections_made == 2
    finally:
        await listener.close()


@pytest.mark.parametrize("waiters", [200])
async def test_many_waiters_share_one_connection(db_url: str, conn: psycopg.Connection, waiters: int) -> None:
    listener = EventListener(db_url)
    try:
        ids = [_insert(conn, f"w{i}") for i in range(waiters)]

        async def wait_one(event_id: int) -> str | None:
            async with listener.watch(event_id) as w:
                await w.changed(20)
                return w.status

        tasks = [asyncio.create_task(wait_one(i)) for i in ids]
        assert await listener.wait_connected(10)
        await asyncio.sleep(0.1)
        row = conn.execute(
            "SELECT count(*) FROM pg_stat_activity WHERE application_name = 'hookline-web-listen' "
            "AND datname = current_database()"
        ).fetchone()
        assert row is not None and row[0] == 1
        await asyncio.to_thread(conn.execute, "UPDATE hookline.events SET status = 'dead' WHERE id = ANY(%s)", (ids,))
        assert await asyncio.gather(*tasks) == ["dead"] * waiters
    finally:
        await listener.close()


async def test_a_stored_answer_wakes_its_waiter_before_any_status_change(db_url: str, conn: psycopg.Connection) -> None:
    listener = EventListener(db_url)
    try:
        assert await listener.wait_connected(10)
        event_id = _insert(conn, "answered")
        async with listener.watch(event_id) as waiter:
            await asyncio.to_thread(
                conn.execute,
                "INSERT INTO hookline.llm_calls (event_id, pipeline, model, status, request, output) "
                "VALUES (%s, 'p', 'm', 'invalid_output', '{}', NULL), (%s, 'p', 'm', 'succeeded', '{}', '{}')",
                (event_id, event_id),
            )
            assert await waiter.changed(10)
            assert waiter.answered == {"p"} and waiter.status is None and not waiter.reconnected
    finally:
        await listener.close()


class SilentProxy:
    """A TCP proxy to Postgres whose open connections can all go silent at once, as when a server
    vanishes in a failover or a NAT forgets an idle connection: nothing passes either way, nothing is
    closed. Connections opened afterwards pass as before."""

    def __init__(self, pg: PgServer) -> None:
        self._pg = pg
        self._generation = 0
        self._server: asyncio.Server | None = None

    @property
    def port(self) -> int:
        assert self._server is not None
        return int(self._server.sockets[0].getsockname()[1])

    def silence(self) -> None:
        self._generation += 1

    async def _pipe(self, born: int, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        with contextlib.suppress(OSError):
            while data := await reader.read(65536):
                if born == self._generation:  # else dropped: the peer hears nothing
                    writer.write(data)
                    await writer.drain()
        writer.close()

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        pg = self._pg
        if pg.host.startswith("/"):
            up_r, up_w = await asyncio.open_unix_connection(f"{pg.host}/.s.PGSQL.{pg.port}")
        else:
            up_r, up_w = await asyncio.open_connection(pg.host, pg.port)
        born = self._generation
        await asyncio.gather(self._pipe(born, reader, up_w), self._pipe(born, up_r, writer))

    @contextlib.asynccontextmanager
    async def running(self) -> AsyncIterator[SilentProxy]:
        self._server = await asyncio.start_server(self._serve, "127.0.0.1", 0)
        try:
            yield self
        finally:
            self._server.close()


async def test_a_connection_gone_silent_is_replaced_and_its_waiters_re_read(
    pg_server: PgServer, db_url: str, conn: psycopg.Connection, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A LISTEN connection whose server vanished without a word (no FIN, no RST) never learns it by
    reading: without its check, every NOTIFY was lost for good and every synchronous reply was the
    default. The check finds it silent, and a new connection wakes the waiters to re-read."""
    monkeypatch.setattr(listener_module, "CHECK_EVERY_S", 0.2)
    monkeypatch.setattr(listener_module, "CHECK_TIMEOUT_S", 0.5)
    async with SilentProxy(pg_server).running() as proxy:
        proxied = dataclasses.replace(pg_server, host="127.0.0.1", port=proxy.port).url(str(conn.info.dbname))
        listener = EventListener(proxied, max_backoff=0.5)
        try:
            assert await listener.wait_connected(10)
            event_id = _insert(conn, "silent")
            async with listener.watch(event_id) as waiter:
                proxy.silence()
                assert await waiter.changed(15), "the silent connection was never replaced"
                assert waiter.reconnected
                await asyncio.to_thread(
                    conn.execute, "UPDATE hookline.events SET status = 'succeeded' WHERE id = %s", (event_id,)
                )
                assert await waiter.changed(10)
                assert waiter.status == "succeeded"  # the new connection hears the NOTIFYs
            assert listener.connections_made == 2
        finally:
            await listener.close()
