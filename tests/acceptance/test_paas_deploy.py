"""Deploying on a PaaS: the DATABASE_URL a platform hands out, and a rolling deploy's readiness.

Real Postgres, real uvicorn serving the app, the real worker: nothing of hookline's is mocked.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import hashlib
import json
import logging
import os
import ssl
import subprocess
import sys
import time
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from urllib.parse import quote, urlencode, urlsplit

import httpx
import psycopg
import pytest

from app.core.config import Config
from app.core.db import connect
from app.core.migrations import Migration, discover, migrate
from app.signatures import sign
from tests.acceptance.test_admin_api import insert_event
from tests.conftest import PgServer
from tests.harness import ROOT, config_from, free_port, make_settings, wait_for_status, web_server, worker_task
from worker.main import run_worker

SECRET = "whsec_" + base64.b64encode(b"hookline-paas-test-secret-32-byt").decode()

#: libpq connection options that managed Postgres providers put in the URLs they give (Neon's carries
#: channel_binding, others keepalives or gssencmode), and that asyncpg does not know: none is a server
#: setting, so none may reach the server as one.
CLIENT_OPTIONS = (
    "channel_binding=prefer&keepalives=1&keepalives_idle=30&keepalives_interval=10&keepalives_count=3"
    "&gssencmode=disable&sslnegotiation=postgres&fallback_application_name=render"
    "&load_balance_hosts=disable&connect_timeout=10"
)


@pytest.fixture
def env(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HL_PAAS_SECRET", SECRET)


def paas_config() -> Config:
    return config_from(
        {
            "sources": {"hooks": {"provider": "standard_webhooks", "secrets_env": ["HL_PAAS_SECRET"]}},
            "pipelines": {
                "p": {
                    "source": "hooks",
                    "events": ["*"],
                    "model": "claude-haiku-5-5",
                    "instructions": "Summarize.",
                    "output_schema": {"type": "object", "properties": {"s": {"type": "string"}}},
                    "actions": [{"type": "log"}],
                }
            },
        }
    )


async def post_ping(client: httpx.AsyncClient, base: str, delivery_id: str) -> httpx.Response:
    """A ping signed with the source's secret, POSTed to the source ``hooks``."""
    body = b'{"type": "ping"}'
    return await client.post(
        f"{base}/webhooks/hooks",
        content=body,
        headers=sign("standard_webhooks", secret=SECRET, body=body, delivery_id=delivery_id),
    )


async def post_accepted(client: httpx.AsyncClient, base: str, delivery_id: str) -> int:
    """:func:`post_ping`, which must be answered 200 ``accepted``; returns the event's id."""
    resp = await post_ping(client, base, delivery_id)
    assert resp.status_code == 200 and resp.json()["status"] == "accepted", resp.text
    return int(resp.json()["event_id"])


async def test_web_and_worker_use_a_url_with_libpq_client_options(db_url: str, env: None) -> None:
    """Web (asyncpg) and worker (psycopg) both accept what libpq accepts: the web process stores the
    event (it used to send each option to the server as a setting, which refused to start the session:
    every webhook was a 503 and /readyz said the database was unreachable) and the worker runs it."""
    url = db_url + ("&" if "?" in db_url else "?") + CLIENT_OPTIONS
    settings = make_settings(url)
    config = paas_config()
    async with (
        web_server(settings, config) as base,
        worker_task(settings, config),
        httpx.AsyncClient() as client,
    ):
        ready = await client.get(f"{base}/readyz")
        assert ready.status_code == 200, ready.text
        event_id = await post_accepted(client, base, "msg_paas_1")
        row = await wait_for_status(db_url, event_id)
    assert row["status"] == "succeeded", row


#: libpq's ``options`` in both of the server's forms (``-c name=value``, ``--name=value``), a dash in a
#: name, a name that contains "-c" once cut short, a backslash-escaped space in a value, and the server's
#: own switches that set one (they were left out by the web).
SERVER_OPTIONS = (
    r"-c statement_timeout=4321 --lock-timeout=1234 --client_min_messages=warning -csearch_path=a,\ b"
    " -S 8MB -eP"  # the server's own switches for work_mem, DateStyle and ignore_system_indexes
)


async def test_the_web_process_sets_the_server_options_libpq_sets(db_url: str) -> None:
    """``options`` in DATABASE_URL: the web process (asyncpg) starts its sessions with the settings the
    worker's (libpq's) have. ``--name=value`` was left out, and ``--client_min_messages`` was sent as
    "lient_min_messages", which the server refuses (every webhook a 503)."""
    url = db_url + ("&" if "?" in db_url else "?") + urlencode({"options": SERVER_OPTIONS}, quote_via=quote)
    names = ["statement_timeout", "lock_timeout", "client_min_messages", "search_path", "work_mem", "DateStyle"]
    names.append("ignore_system_indexes")
    query = "SELECT " + ", ".join(f"current_setting('{n}')" for n in names)
    with psycopg.connect(url) as libpq:
        row = libpq.execute(query).fetchone()
        assert row is not None
        by_libpq = tuple(row)
    web = await connect(url)
    try:
        by_web = tuple(await web.fetchrow(query) or ())
    finally:
        await web.close()
    assert by_libpq == ("4321ms", "1234ms", "warning", "a, b", "8MB", "ISO, DMY", "on")
    assert by_web == by_libpq


async def test_an_old_web_process_stays_ready_once_the_release_step_applied_a_newer_migration(
    db_url: str, env: None
) -> None:
    """Rolling deploy: the new release's `hookline migrate` runs while the old release's web processes
    still serve, and a platform health check (Render, Fly.io) on /readyz must not take them out of
    rotation before the new ones are up. They still store events; a migration missing or changed
    under them still makes them unready."""
    config = paas_config()
    async with web_server(make_settings(db_url), config) as base, httpx.AsyncClient() as client:
        assert (await client.get(f"{base}/readyz")).status_code == 200
        with psycopg.connect(db_url, autocommit=True) as conn:  # what the next release's migrate adds
            conn.execute(
                "INSERT INTO hookline.schema_migrations (version, name, checksum) "
                "SELECT max(version) + 1, 'next_release', 'abc' FROM hookline.schema_migrations"
            )
        ready = await client.get(f"{base}/readyz")
        assert ready.status_code == 200, ready.text
        await post_accepted(client, base, "msg_paas_old")
        with psycopg.connect(db_url, autocommit=True) as conn:  # a file this code knows, changed
            conn.execute("UPDATE hookline.schema_migrations SET checksum = 'changed' WHERE version = 1")
        changed = await client.get(f"{base}/readyz")
    assert changed.status_code == 503 and changed.json()["database"] == "schema not current", changed.text


def _cli(*args: str, cwd: Path, **env: str) -> subprocess.CompletedProcess[str]:
    base = {k: v for k, v in os.environ.items() if k not in ("DATABASE_URL", "HOOKLINE_HOME")}
    base.update({"HOOKLINE_CONFIG": str(ROOT / "hookline.toml"), "PYTHONPATH": str(ROOT), **env})
    return subprocess.run(
        [sys.executable, "-m", "app.cli", *args], env=base, cwd=cwd, capture_output=True, text=True, timeout=60
    )


@pytest.mark.parametrize("marker", ["DYNO=release.4821", "RENDER=true", "FLY_APP_NAME=hooks", "RAILWAY_PROJECT_ID=p1"])
def test_the_release_step_without_database_url_on_a_paas_fails_instead_of_migrating_a_throwaway_database(
    tmp_path: Path, marker: str
) -> None:
    """DATABASE_URL forgotten (or not yet attached) on a platform: `hookline migrate` used to start an
    embedded Postgres in the dyno's working directory, migrate it and exit 0; the deploy went on, and
    that database vanished with the release dyno. Now the release step fails, saying why."""
    name, _, value = marker.partition("=")
    done = _cli("migrate", cwd=tmp_path, **{name: value})
    assert done.returncode == 1, (done.returncode, done.stdout, done.stderr)
    assert done.stderr.startswith("hookline migrate: DATABASE_URL is not set"), done.stderr
    assert name in done.stderr and "Traceback" not in done.stderr
    assert not (tmp_path / ".hookline").exists()


def test_the_web_process_without_database_url_refuses_to_start(tmp_path: Path) -> None:
    """`hookline web` never starts an embedded Postgres: without DATABASE_URL it used to start, log
    nothing and answer every webhook 503. It stops at once with one line, as `hookline worker` does."""
    done = _cli("web", "--host", "127.0.0.1", "--port", str(free_port()), cwd=tmp_path)
    assert done.returncode != 0, (done.stdout, done.stderr)
    assert "DATABASE_URL is not set" in done.stderr and "Traceback" not in done.stderr, done.stderr


def test_the_worker_without_database_url_says_so_as_the_web_process_does(tmp_path: Path) -> None:
    """`hookline worker` never starts an embedded Postgres either, but said only `DATABASE_URL is not
    set`, without the command's name or what to run instead, where the web process says both."""
    done = _cli("worker", cwd=tmp_path)
    assert done.returncode == 1, (done.stdout, done.stderr)
    assert done.stderr.startswith("hookline worker: DATABASE_URL is not set (`hookline dev` runs"), done.stderr
    assert done.stderr.count("\n") == 1 and not (tmp_path / ".hookline").exists()


def test_a_rollback_runs_the_older_release_step_against_the_newer_schema(db_url: str, tmp_path: Path) -> None:
    """Heroku runs the release phase on a rollback too: the older release's `hookline migrate` meets
    the migrations the newer one applied. It used to refuse (exit 1), so the rollback failed and the
    bad release stayed. It applies nothing and succeeds; a history that diverged (the database lacks a
    migration this code has, and has one it does not know) is still refused."""
    with psycopg.connect(db_url, autocommit=True) as conn:
        conn.execute(
            "INSERT INTO hookline.schema_migrations (version, name, checksum) "
            "SELECT max(version) + 1, 'next_release', 'abc' FROM hookline.schema_migrations"
        )
    done = _cli("migrate", cwd=tmp_path, DATABASE_URL=db_url)
    assert done.returncode == 0, (done.stdout, done.stderr)
    assert "newer" in done.stdout, done.stdout
    status = _cli("status", "--json", cwd=tmp_path, DATABASE_URL=db_url)  # the older release's status
    assert status.returncode == 0, (status.stdout, status.stderr)
    got = json.loads(status.stdout)
    assert got["schema_current"] is True and got["newer_migrations"] == [discover()[-1].version + 1], got
    with psycopg.connect(db_url, autocommit=True) as conn:
        conn.execute("DELETE FROM hookline.schema_migrations WHERE version = %s", (discover()[-1].version,))
    diverged = _cli("migrate", cwd=tmp_path, DATABASE_URL=db_url)
    assert diverged.returncode == 1 and "does not know" in diverged.stderr, (diverged.stdout, diverged.stderr)


def _tls_files(tmp_path: Path) -> tuple[Path, Path, Path]:
    """A test CA (the "system" roots of this test, through SSL_CERT_FILE) and a server certificate
    for localhost that it signed."""
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    now = datetime.now(UTC)
    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca_name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "hookline test CA")])
    ca = (
        x509.CertificateBuilder()
        .subject_name(ca_name)
        .issuer_name(ca_name)
        .public_key(ca_key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - timedelta(days=1))
        .not_valid_after(now + timedelta(days=1))
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .add_extension(x509.KeyUsage(False, False, False, False, False, True, True, False, False), critical=True)
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(ca_key.public_key()), critical=False)
        .sign(ca_key, hashes.SHA256())
    )
    key = ec.generate_private_key(ec.SECP256R1())
    cert = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "localhost")]))
        .issuer_name(ca_name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - timedelta(days=1))
        .not_valid_after(now + timedelta(days=1))
        .add_extension(x509.SubjectAlternativeName([x509.DNSName("localhost")]), critical=False)
        .add_extension(x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_key.public_key()), critical=False)
        .sign(ca_key, hashes.SHA256())
    )
    paths = (tmp_path / "ca.pem", tmp_path / "server.pem", tmp_path / "server.key")
    paths[0].write_bytes(ca.public_bytes(serialization.Encoding.PEM))
    paths[1].write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    paths[2].write_bytes(
        key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption())
    )
    return paths


@contextlib.asynccontextmanager
async def _tls_in_front_of(server: PgServer, cert: Path, key: Path) -> AsyncIterator[int]:
    """Postgres behind TLS on a 127.0.0.1 port (direct TLS, sslnegotiation=direct, as a provider's
    proxy or PgBouncer with TLS would be): each connection's plaintext goes to the real server."""
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(cert, key)
    context.set_alpn_protocols(["postgresql"])

    async def pipe(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        with contextlib.suppress(OSError, ConnectionError):
            while data := await reader.read(65536):
                writer.write(data)
                await writer.drain()
        with contextlib.suppress(OSError, ConnectionError):
            writer.close()

    async def serve(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        if server.host.startswith("/"):
            up_r, up_w = await asyncio.open_unix_connection(f"{server.host}/.s.PGSQL.{server.port}")
        else:
            up_r, up_w = await asyncio.open_connection(server.host, server.port)
        await asyncio.gather(pipe(reader, up_w), pipe(up_r, writer))

    proxy = await asyncio.start_server(serve, "127.0.0.1", 0, ssl=context)
    try:
        yield int(proxy.sockets[0].getsockname()[1])
    finally:
        proxy.close()


async def test_sslrootcert_system_verifies_against_the_system_roots_in_web_and_worker(
    db_url: str, pg_server: PgServer, env: None, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """`sslmode=verify-full&sslrootcert=system` (libpq 16+: trust the system's CA store, what provider
    guides give for a managed Postgres with a public CA) works in both processes. asyncpg took "system"
    for a file name: the web process never connected (FileNotFoundError) and answered every webhook 503."""
    ca, cert, key = _tls_files(tmp_path)
    monkeypatch.setenv("SSL_CERT_FILE", str(ca))  # the "system" store of this test, for OpenSSL and libpq
    dbname = urlsplit(db_url).path.lstrip("/")
    async with _tls_in_front_of(pg_server, cert, key) as port:
        url = (
            f"postgresql://{pg_server.user}@localhost:{port}/{dbname}"
            "?sslmode=verify-full&sslrootcert=system&sslnegotiation=direct"
        )
        settings = make_settings(url)
        config = paas_config()
        async with web_server(settings, config) as base, worker_task(settings, config), httpx.AsyncClient() as client:
            ready = await client.get(f"{base}/readyz")
            assert ready.status_code == 200, ready.text
            resp = await post_ping(client, base, "msg_paas_tls")
            assert resp.status_code == 200, resp.text
            row = await wait_for_status(db_url, resp.json()["event_id"])
    assert row["status"] == "succeeded", row


async def test_a_web_pool_of_one_connection_serves(db_url: str, env: None) -> None:
    """`HOOKLINE_DB_POOL_MAX=1`, for a plan with few connections: the pool's minimum (2 by default) is
    held to it. asyncpg refused a minimum above the maximum, and the web process answered every
    webhook 503, its log blaming an unreachable database."""
    config = paas_config()
    async with web_server(make_settings(db_url, db_pool_max=1), config) as base, httpx.AsyncClient() as client:
        assert (await client.get(f"{base}/readyz")).status_code == 200
        await post_accepted(client, base, "msg_paas_pool1")


async def test_a_release_step_waiting_for_a_lock_does_not_stop_ingest(db_url: str, env: None) -> None:
    """A DBA's long read of hookline.events is open when the release step runs a migration that needs
    the table to itself (ALTER TABLE). The migration's lock request used to wait in the queue for as
    long as the read lasted, and every write queued behind it: each webhook answered 503 until the
    read ended. It now gives up its request after a short lock timeout and tries again, so webhooks
    are stored meanwhile; once the read ends, the migration is applied."""
    sql = "ALTER TABLE hookline.events ADD COLUMN paas_probe integer;"
    extra = Migration(discover()[-1].version + 1, "paas_probe", sql, hashlib.sha256(sql.encode()).hexdigest())
    config = paas_config()
    with psycopg.connect(db_url) as dba:
        dba.execute("SELECT count(*) FROM hookline.events").fetchone()  # the read's lock: held to commit
        release = asyncio.create_task(asyncio.to_thread(migrate, db_url, [*discover(), extra]))
        await asyncio.sleep(1.0)  # the migration is waiting for its lock
        async with web_server(make_settings(db_url), config) as base, httpx.AsyncClient(timeout=30) as client:
            answers = []
            for i in range(3):
                resp = await post_ping(client, base, f"msg_paas_lock_{i}")
                answers.append(resp.status_code)
            assert not release.done()
        dba.commit()  # the read ends
    applied = await asyncio.wait_for(release, 60)
    assert [m.name for m in applied] == ["paas_probe"]
    assert answers == [200, 200, 200], answers


async def test_a_worker_started_before_the_release_step_waits_for_it(
    db_url: str, conn: psycopg.Connection, env: None, caplog: pytest.LogCaptureFixture
) -> None:
    """The worker of a release whose `hookline migrate` has not run yet (or failed) took jobs at once and
    ran this code's SQL on the older schema: each event used up its attempts on "does not exist". It
    takes none until every migration of its code is applied, says why, and then starts by itself."""
    last = discover()[-1]
    conn.execute("DELETE FROM hookline.schema_migrations WHERE version = %s", (last.version,))  # not applied yet
    event = insert_event(conn, "hooks", "msg_paas_before_release", status="queued")
    caplog.set_level(logging.INFO, logger="hookline.worker")
    stop = asyncio.Event()
    task = asyncio.create_task(run_worker(make_settings(db_url), paas_config(), install_signals=False, stop=stop))
    try:
        deadline = time.monotonic() + 30
        while "the database schema is not this release's" not in caplog.text:
            assert not task.done() and time.monotonic() < deadline, "the worker never said why it waits"
            status = conn.execute("SELECT status FROM hookline.events WHERE id = %s", (event,)).fetchone()
            assert status == ("queued",), f"the worker ran the event on the older schema: {status}"
            await asyncio.sleep(0.05)
        assert f"migration(s) {last.version:04d} not applied; run `hookline migrate`" in caplog.text
        conn.execute(  # the release step ran
            "INSERT INTO hookline.schema_migrations (version, name, checksum) VALUES (%s, %s, %s)",
            (last.version, last.name, last.checksum),
        )
        assert (await wait_for_status(db_url, event, timeout=30))["status"] == "succeeded"
        assert "the database schema is current now" in caplog.text
    finally:
        stop.set()
        await asyncio.wait_for(task, 20)
