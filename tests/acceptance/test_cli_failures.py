"""The CLI when things go wrong: a database that is down or never migrated, a server that is not
running, a missing file, a signal from the terminal. One clear line and a non-zero exit, never a
traceback or a password; the embedded Postgres never left running."""

from __future__ import annotations

import contextlib
import json
import os
import signal
import socket
import stat
import subprocess
import sys
import time
from collections.abc import Iterator, Mapping
from pathlib import Path

import httpx
import psycopg
import pytest

from tests.acceptance.test_admin_api import insert_event
from tests.conftest import PgServer
from tests.harness import ROOT, free_port

PASSWORD = "s3cret-pw-never-shown"


def _env(**over: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k != "DATABASE_URL"}
    env.update({"HOOKLINE_CONFIG": str(ROOT / "hookline.toml"), "GITHUB_WEBHOOK_SECRET": "x", **over})
    return env


def _default_signals() -> None:
    """In the child: the signals the test sends act as in a terminal, even when this run inherited them
    ignored (``nohup`` ignores SIGHUP, a shell's background job SIGINT)."""
    for sig in (signal.SIGINT, signal.SIGHUP, signal.SIGTERM, signal.SIGQUIT):
        signal.signal(sig, signal.SIG_DFL)


def hookline(
    *args: str, env: Mapping[str, str], timeout: float = 60, stdout: int = subprocess.PIPE
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "app.cli", *args],
        env=dict(env),
        cwd=ROOT,
        stdout=stdout,
        stderr=subprocess.PIPE,
        text=True,
        timeout=timeout,
    )


@pytest.mark.parametrize(
    "args", [["status"], ["status", "--json"], ["events", "show", "1"], ["replay", "1"], ["migrate"]]
)
def test_a_database_that_is_down_is_one_line_without_the_password(args: list[str]) -> None:
    env = _env(DATABASE_URL=f"postgresql://nobody:{PASSWORD}@127.0.0.1:{free_port()}/x")
    done = hookline(*args, env=env)
    assert done.returncode == 1, done.stderr
    assert "Traceback" not in done.stderr and PASSWORD not in done.stderr + done.stdout
    assert done.stderr.count("\n") == 1 and "cannot reach the database" in done.stderr, done.stderr


@pytest.mark.parametrize(
    ("args", "over", "line"),
    [
        (["check"], {"HOOKLINE_LOG_LEVEL": "verbose"}, "HOOKLINE_LOG_LEVEL: one of DEBUG, INFO, WARNING, ERROR"),
        (["status"], {"HOOKLINE_WORKER_CONCURRENCY": "abc"}, "HOOKLINE_WORKER_CONCURRENCY: a valid integer"),
        (["check"], {"PORT": "abc"}, "PORT: a valid integer"),
        (["check"], {"HOOKLINE_SHUTDOWN_TIMEOUT": "-5"}, "HOOKLINE_SHUTDOWN_TIMEOUT: greater than or equal to 0"),
        (["check"], {"HOOKLINE_WORKER_POLL_INTERVAL": "0"}, "HOOKLINE_WORKER_POLL_INTERVAL: greater than 0"),
        (["status"], {"DATABASE_URL": f"mysql://bob:{PASSWORD}@db/x"}, "DATABASE_URL: must start with postgresql://"),
    ],
)
def test_a_bad_environment_variable_is_one_line_naming_it(args: list[str], over: dict[str, str], line: str) -> None:
    done = hookline(*args, env=_env(**over))
    assert done.returncode == 2, done.stderr
    assert "Traceback" not in done.stderr and done.stdout == "" and PASSWORD not in done.stderr
    assert done.stderr.count("\n") == 1 and done.stderr.startswith(f"hookline {args[0]}: {line}"), done.stderr


@pytest.mark.parametrize(
    ("over", "toml", "line"),
    [
        ({"HOOKLINE_WORKER_CONCURRENCY": "abc"}, None, "HOOKLINE_WORKER_CONCURRENCY: a valid integer"),
        ({"DATABASE_URL": f"mysql://bob:{PASSWORD}@db/x"}, None, "DATABASE_URL: must start with postgresql://"),
        ({}, "[sources.x", "configuration error\n"),
    ],
)
def test_python_m_worker_refuses_a_bad_setting_as_hookline_worker_does(
    over: dict[str, str], toml: str | None, line: str, tmp_path: Path
) -> None:
    """What ``hookline worker`` execs, started by hand (or by a Procfile that names it): the same lines
    and exit 2, not pydantic's traceback."""
    if toml is not None:
        (tmp_path / "hookline.toml").write_text(toml)
        # a DATABASE_URL, so that hookline worker gets past its own check of it (it is read first)
        over = {"HOOKLINE_CONFIG": str(tmp_path / "hookline.toml"), "DATABASE_URL": "postgresql://bob@127.0.0.1:1/x"}
    done = subprocess.run(
        [sys.executable, "-m", "worker"], env=_env(**over), cwd=ROOT, capture_output=True, text=True, timeout=60
    )
    assert done.returncode == 2, done.stderr
    assert "Traceback" not in done.stderr and done.stdout == "" and PASSWORD not in done.stderr
    assert done.stderr.startswith(f"hookline worker: {line}"), done.stderr
    assert hookline("worker", env=_env(**over)).stderr == done.stderr


FORMS = "use ISO-8601 (2026-11-22T10:00Z) or a duration ago: 30m / 2h / 7d"


@pytest.mark.parametrize("command", ["replay", "dismiss"])
@pytest.mark.parametrize(
    ("flag", "given", "reason"),
    [
        ("--since", "yesterday", f"cannot read 'yesterday' as a time: {FORMS}"),
        ("--until", "2026-13-01", f"cannot read '2026-13-01' as a time: {FORMS}"),
        ("--since", "99999999d", "'99999999d' reaches further back than a date can (year 1)"),
    ],
)
def test_a_time_flag_it_cannot_read_is_a_usage_error_naming_the_flag(
    command: str, flag: str, given: str, reason: str
) -> None:
    """``replay --since yesterday`` exited 1, as a failure does, where every other bad option value
    (``--processes 0``, ``--next 0``, ``--status bogus``) is argparse's exit 2 naming the option; it is
    refused before anything is read or started (a database that is down is never reached)."""
    env = _env(DATABASE_URL=f"postgresql://nobody:{PASSWORD}@127.0.0.1:{free_port()}/x")
    done = hookline(command, flag, given, env=env)
    assert done.returncode == 2 and done.stdout == "" and "Traceback" not in done.stderr, done.stderr
    last = done.stderr.splitlines()[-1]
    assert last == f"hookline {command}: error: argument {flag}: {reason}", done.stderr


def test_a_worker_metrics_port_in_use_stops_the_worker_in_one_line(db_url: str) -> None:
    """Another process listens on HOOKLINE_WORKER_METRICS_PORT: the worker says so and exits 2 before it
    opens anything. It hung instead, deaf to SIGTERM: the failed bind left its database pool open, and
    asyncio.run waited on the pool's tasks forever (the run's timeout is the guard against that)."""
    with socket.socket() as holder:
        holder.bind(("127.0.0.1", 0))
        holder.listen(1)
        port = holder.getsockname()[1]
        env = _env(DATABASE_URL=db_url, HOOKLINE_HOST="127.0.0.1", HOOKLINE_WORKER_METRICS_PORT=str(port))
        done = hookline("worker", env=env)
    assert done.returncode == 2 and "Traceback" not in done.stderr, done.stderr
    errors = [line for line in done.stderr.splitlines() if " ERROR " in line]
    assert len(errors) == 1, done.stderr
    assert errors[0].endswith(
        f"HOOKLINE_WORKER_METRICS_PORT: cannot listen on 127.0.0.1:{port} (Address already in use); "
        "stop what holds it, or set another port"
    )
    assert "hookline worker starting" not in done.stderr


def test_the_log_level_is_read_in_any_case() -> None:
    done = hookline("check", env=_env(HOOKLINE_LOG_LEVEL="info"))
    assert done.returncode == 0 and "Traceback" not in done.stderr, done.stderr


def test_a_bad_secret_variable_is_named_never_shown(monkeypatch: pytest.MonkeyPatch) -> None:
    from pydantic import ValidationError

    from app.core.settings import Settings, settings_problems

    monkeypatch.setenv("DATABASE_URL", f"postgresql://bob:{PASSWORD}@db.example/app")
    monkeypatch.setenv("HOOKLINE_WORKER_CONCURRENCY", "many")
    with pytest.raises(ValidationError) as e:
        Settings(database_url=42)  # type: ignore[arg-type]  # no string from the environment fails; this does
    problems = settings_problems(e.value)
    assert [p.split(":")[0] for p in problems] == ["DATABASE_URL", "HOOKLINE_WORKER_CONCURRENCY"], problems
    assert PASSWORD not in "".join(problems) and "'many'" in problems[1]


def test_a_database_never_migrated_is_reported_not_crashed(empty_db_url: str) -> None:
    env = _env(DATABASE_URL=empty_db_url)
    human = hookline("status", env=env)
    assert human.returncode == 1 and "Traceback" not in human.stderr, human.stderr
    assert "NOT current" in human.stdout and "hookline migrate" in human.stdout
    doc = hookline("status", "--json", env=env)
    assert doc.returncode == 1 and "Traceback" not in doc.stderr, doc.stderr
    data = json.loads(doc.stdout)
    assert data["schema_current"] is False and data["pending_migrations"][0] == 1
    for args in (["events", "show", "1"], ["replay", "1"]):
        done = hookline(*args, env=env)
        assert done.returncode == 1 and "Traceback" not in done.stderr, done.stderr
        assert "not migrated" in done.stderr


def test_send_without_a_server_or_file_is_one_line() -> None:
    url = f"http://127.0.0.1:{free_port()}"
    down = hookline("send", "github", "--url", url, env=_env())
    assert down.returncode == 1 and "Traceback" not in down.stderr, down.stderr
    assert "cannot post" in down.stderr and down.stderr.count("\n") == 1
    missing = hookline("send", "github", "--url", url, "--file", "/nonexistent/payload.json", env=_env())
    assert missing.returncode == 1 and "Traceback" not in missing.stderr, missing.stderr
    assert "/nonexistent/payload.json" in missing.stderr and missing.stderr.count("\n") == 1


def test_psql_gets_the_password_in_its_environment_not_its_command_line(tmp_path: Path) -> None:
    seen = tmp_path / "seen.json"
    fake = tmp_path / "bin" / "psql"
    fake.parent.mkdir()
    fake.write_text(
        f"#!{sys.executable}\nimport json, os, sys\n"
        f"json.dump({{'argv': sys.argv[1:], 'password': os.environ.get('PGPASSWORD')}}, open({str(seen)!r}, 'w'))\n"
    )
    fake.chmod(fake.stat().st_mode | stat.S_IXUSR)
    env = _env(DATABASE_URL=f"postgresql://bob:{PASSWORD}@db.example:5432/app?sslmode=require")
    env["PATH"] = f"{fake.parent}{os.pathsep}{env.get('PATH', '')}"
    done = hookline("psql", "-c", "SELECT 1", env=env)
    assert done.returncode == 0, done.stderr
    got = json.loads(seen.read_text())
    assert got["password"] == PASSWORD
    assert not any(PASSWORD in a for a in got["argv"]), got["argv"]
    assert got["argv"] == ["postgresql://bob@db.example:5432/app?sslmode=require", "-c", "SELECT 1"]


@pytest.mark.parametrize("args", [["tail"], ["tail", "--json"]])
def test_tail_that_never_reaches_the_database_is_one_line_and_exit_1(args: list[str]) -> None:
    """tail's first connection follows the common rule (it used to say "listening" and retry forever);
    stdout stays for the events (--json: one JSON object per line)."""
    env = _env(DATABASE_URL=f"postgresql://nobody:{PASSWORD}@127.0.0.1:{free_port()}/x")
    done = hookline(*args, env=env)
    assert done.returncode == 1 and done.stdout == "", done.stderr
    assert "Traceback" not in done.stderr and PASSWORD not in done.stderr
    assert done.stderr.count("\n") == 1, done.stderr
    assert done.stderr.startswith("hookline tail: cannot reach the database:"), done.stderr


def test_tail_on_a_database_that_does_not_exist_is_one_line_and_exit_1(pg_server: PgServer) -> None:
    done = hookline("tail", env=_env(DATABASE_URL=pg_server.url("hookline_no_such_database")))
    assert done.returncode == 1 and done.stdout == "" and "Traceback" not in done.stderr, done.stderr
    assert done.stderr.count("\n") == 1 and "cannot reach the database" in done.stderr, done.stderr
    assert "does not exist" in done.stderr, done.stderr


def test_small_refusals(db_url: str, conn: psycopg.Connection) -> None:
    env = _env(DATABASE_URL=db_url)
    missing = hookline("events", "show", "999999", "--json", env=env)
    assert missing.returncode == 1 and missing.stdout == "" and "999999" in missing.stderr
    event = insert_event(conn, "github", "twice-1")
    twice = hookline("replay", str(event), str(event), "--no-wait", env=env)
    assert twice.returncode == 0, twice.stderr
    assert "replaying 1 event(s)" in twice.stderr
    never = hookline("schedules", "--next", "0", env=env)
    assert never.returncode == 2 and "--next" in never.stderr


def _postmaster_gone(home: Path, within: float = 15) -> bool:
    deadline = time.monotonic() + within
    while time.monotonic() < deadline:
        if not (home / "pg" / "postmaster.pid").exists():
            return True
        time.sleep(0.2)
    return False


def _wait_for_line(stream: object, text: str, within: float = 60) -> None:
    import select

    assert hasattr(stream, "readline") and hasattr(stream, "fileno")
    deadline = time.monotonic() + within
    while time.monotonic() < deadline:
        ready, _, _ = select.select([stream], [], [], 1)
        if ready and text in stream.readline():
            return
    raise AssertionError(f"no line with {text!r}")


@contextlib.contextmanager
def tail_listening(env: Mapping[str, str], stdout: int = subprocess.DEVNULL) -> Iterator[subprocess.Popen[str]]:
    """``hookline tail`` on ``env``'s embedded Postgres, with signals as in a terminal (whatever this run
    inherited), once it listens; killed on the way out if the test did not stop it."""
    tail = subprocess.Popen(
        [sys.executable, "-m", "app.cli", "tail"],
        env=env,
        cwd=ROOT,
        stdout=stdout,
        stderr=subprocess.PIPE,
        text=True,
        preexec_fn=_default_signals,
    )
    try:
        _wait_for_line(tail.stderr, "listening")
        yield tail
    finally:
        if tail.poll() is None:
            tail.kill()
            tail.wait()


@pytest.mark.skipif(bool(os.environ.get("DATABASE_URL")), reason="exercises the embedded Postgres")
@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGHUP, signal.SIGQUIT])
def test_a_signalled_command_stops_the_embedded_postgres(tmp_path: Path, sig: signal.Signals) -> None:
    home = tmp_path / "home"
    env = _env(HOOKLINE_HOME=str(home))
    with tail_listening(env) as tail:
        assert (home / "pg" / "postmaster.pid").exists()
        tail.send_signal(sig)
        tail.wait(30)
    assert _postmaster_gone(home), "the embedded Postgres was left running"
    assert json.loads((home / "pg" / ".handle_pids.json").read_text() or "[]") == []


@pytest.mark.skipif(bool(os.environ.get("DATABASE_URL")), reason="exercises the embedded Postgres")
def test_a_dead_holder_does_not_keep_the_embedded_postgres_up(tmp_path: Path) -> None:
    home = tmp_path / "home"
    env = _env(HOOKLINE_HOME=str(home))
    assert hookline("migrate", env=env).returncode == 0
    dead = subprocess.Popen(["true"])
    dead.wait()
    (home / "pg" / ".handle_pids.json").write_text(json.dumps([dead.pid]))  # as a SIGKILLed command leaves it
    assert hookline("status", env=env).returncode == 0
    assert _postmaster_gone(home), "a dead pid in .handle_pids.json kept the embedded Postgres running"


@pytest.mark.skipif(bool(os.environ.get("DATABASE_URL")), reason="exercises the embedded Postgres")
def test_hookline_dev_stops_everything_when_its_terminal_closes(tmp_path: Path) -> None:
    port = free_port()
    home = tmp_path / "home"
    env = _env(PORT=str(port), HOOKLINE_HOME=str(home), HOOKLINE_SHUTDOWN_TIMEOUT="5")
    env.pop("ANTHROPIC_API_KEY", None)
    dev = subprocess.Popen(
        [sys.executable, "-m", "app.cli", "dev", "--simulate-model"],
        env=env,
        cwd=ROOT,  # the code under test (with another cwd, the installed package would run)
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        preexec_fn=_default_signals,  # signals as in a terminal, whatever this run inherited
    )
    try:
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline and dev.poll() is None:
            try:
                if httpx.get(f"http://127.0.0.1:{port}/readyz", timeout=1).status_code == 200:
                    break
            except httpx.HTTPError:
                time.sleep(0.3)
        else:
            raise AssertionError("hookline dev did not become ready")
        dev.send_signal(signal.SIGHUP)
        out, _ = dev.communicate(timeout=40)
    finally:
        if dev.poll() is None:
            dev.kill()
            out, _ = dev.communicate()
    assert _postmaster_gone(home, within=5), "the embedded Postgres was left running\n" + out
    with pytest.raises(httpx.HTTPError):
        httpx.get(f"http://127.0.0.1:{port}/healthz", timeout=1)


MALFORMED_URLS = {
    "percent": (f"postgresql://u:{PASSWORD}%ZZ@127.0.0.1:5432/db", "has a bad percent-escape"),
    "ipv6": (f"postgresql://u:{PASSWORD}@[::1/db", "has an IPv6 host without its closing ]"),
    "port": (f"postgresql://u:{PASSWORD}@127.0.0.1:abc/db", "port must be a number from 1 to 65535"),
    "space": (f"postgresql://u:{PASSWORD} x@127.0.0.1/db", "has a space"),
    "sslmode": (f"postgresql://u:{PASSWORD}@127.0.0.1/db?sslmode=always", "sslmode must be one of"),
    "options": (  # the server refuses it; the web left it out, the worker failed at its first connection
        f"postgresql://u:{PASSWORD}@127.0.0.1:{free_port()}/db?options=-c%20statement_timeout",
        "options has a setting without its value",
    ),
}


@pytest.mark.parametrize(
    ("args", "kind"),
    [(args, "percent") for args in (["worker"], ["status"], ["web"], ["dev"], ["tail"], ["events", "show", "1"])]
    + [(["migrate"], kind) for kind in sorted(MALFORMED_URLS)]
    + [(args, "options") for args in (["worker"], ["web"])],
)
def test_a_malformed_database_url_is_one_line_naming_the_rule_not_the_url(args: list[str], kind: str) -> None:
    """libpq and asyncpg quote a URL they cannot parse, password included, in their error (`hookline
    migrate` is the release phase: its output goes to the platform's logs). The URL is checked where it
    is read, and the one line names DATABASE_URL and the rule broken, never the value."""
    url, rule = MALFORMED_URLS[kind]
    done = hookline(*args, env=_env(DATABASE_URL=url), timeout=30)
    assert PASSWORD not in done.stderr + done.stdout, done.stderr
    assert done.returncode == 2 and "Traceback" not in done.stderr, done.stderr
    assert done.stderr.startswith(f"hookline {args[0]}: DATABASE_URL: {rule}"), done.stderr
    assert done.stderr.count("\n") == 1, done.stderr


def test_a_settings_error_printed_whole_shows_no_value(monkeypatch: pytest.MonkeyPatch) -> None:
    """`python -m worker` and uvicorn's factory let a ValidationError go as a traceback: no value in it."""
    from pydantic import ValidationError

    from app.core.settings import Settings

    monkeypatch.setenv("DATABASE_URL", f"postgresql://u:{PASSWORD}@127.0.0.1:abc/db")
    with pytest.raises(ValidationError) as e:
        Settings()
    assert "DATABASE_URL" in str(e.value) and PASSWORD not in str(e.value), str(e.value)


def test_a_database_url_a_client_cannot_parse_is_reported_without_its_password(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Second line of defence, behind the check of DATABASE_URL: a client's own refusal of a URL is one
    line that quotes no part of the URL."""
    from app.cli.failures import _without_secrets, database_problem

    for url in (f"postgresql://u:{PASSWORD}%ZZ@h/db", f"postgresql://u:{PASSWORD}@[::1/db"):
        with pytest.raises(psycopg.ProgrammingError) as e:
            psycopg.connect(url)
        assert PASSWORD in str(e.value)  # what libpq says, and what used to be printed
        problem = database_problem(e.value)
        assert problem is not None and PASSWORD not in problem and problem.startswith("the database URL "), problem
        monkeypatch.setenv("DATABASE_URL", url)
        assert PASSWORD not in _without_secrets(str(e.value), None), str(e.value)
    monkeypatch.setenv("DATABASE_URL", f"postgresql://u:{PASSWORD}@h/db?user=a@b&sslpassword={PASSWORD}2")
    assert _without_secrets(f"x {PASSWORD} y {PASSWORD}2", None) == "x *** y ***"


@contextlib.contextmanager
def reader_gone() -> Iterator[int]:
    """The write end of a pipe whose reader has gone, as ``| head`` leaves it after its last line."""
    read, write = os.pipe()
    os.close(read)
    try:
        yield write
    finally:
        os.close(write)


@pytest.mark.parametrize("args", [["check"], ["status", "--json"], ["events", "show", "{id}", "--json"]])
def test_a_reader_that_goes_away_ends_a_command_quietly(db_url: str, conn: psycopg.Connection, args: list[str]) -> None:
    """`hookline events show 1 --json | head` (or `hookline check | head -0`, which reads no database)
    used to end with `cannot reach the database: [Errno 32] Broken pipe`, exit 1. The reader going away
    ends the command without a word, with 141 as a writer killed by SIGPIPE would."""
    event_id = insert_event(conn, "github", "big", payload={"blob": "x" * 100_000})  # more than a pipe holds
    with reader_gone() as stdout:
        env = _env(DATABASE_URL=db_url, STRIPE_WEBHOOK_SECRET="x")  # check: no warning on stderr
        done = hookline(*[a.format(id=event_id) for a in args], env=env, stdout=stdout)
    assert (done.returncode, done.stderr) == (141, ""), done.stderr


def test_tail_ends_when_its_reader_goes_away(db_url: str, conn: psycopg.Connection) -> None:
    """`hookline tail | head -2` never ended: each line it could not write was taken for the database
    going away ("tail: database unreachable (BrokenPipeError); retrying"), forever."""
    with reader_gone() as stdout, tail_listening(_env(DATABASE_URL=db_url), stdout=stdout) as tail:
        insert_event(conn, "github", "to-nobody")
        tail.wait(60)
        assert tail.stderr is not None
        said = tail.stderr.read()
    assert tail.returncode == 141 and "retrying" not in said and "Traceback" not in said, said
