"""The ``hookline`` command: dev, migrate, web, worker, check, send, status, replay, dismiss (and more per issue).

``hookline worker`` execs ``python -m worker``: the app package never imports the worker.
"""

from __future__ import annotations

import argparse
import os
import shutil
import sys
import tempfile
from pathlib import Path
from typing import Any

from pydantic import ValidationError

from app.cli import bench as benchmark
from app.cli import dismiss, embedded
from app.cli import schedules as scheduling
from app.cli import watch as watching
from app.cli.args import at_least_one, when
from app.cli.check import summary
from app.cli.failures import _without_secrets, database_problem, output_closed, quiet_exit
from app.cli.release import release
from app.core import migrations
from app.core.config import environment_problems, load_config
from app.core.errors import ConfigError, HooklineError
from app.core.heap import freeze_startup_heap
from app.core.logs import setup_logging
from app.core.settings import Settings, settings_problems, weak_tokens


def _db_url(settings: Settings) -> str:
    url, _server = embedded.resolve_database_url(settings.dsn(), settings.home)
    return url


def cmd_migrate(settings: Settings, args: argparse.Namespace) -> int:
    url = _db_url(settings)
    config = load_config(settings.config)
    applied = release(url, config)
    st = migrations.status(url)
    print(f"schema is current (version {max(st.applied, default=0):04d}); {len(applied)} migration(s) applied now")
    return 0


def _needs_database_url(settings: Settings) -> None:
    if not settings.dsn():
        raise HooklineError("DATABASE_URL is not set (`hookline dev` runs web and worker on an embedded Postgres)")


def cmd_web(settings: Settings, args: argparse.Namespace) -> int:
    import uvicorn

    _needs_database_url(settings)  # never an embedded Postgres: every webhook would be a 503
    setup_logging(settings.log_level, settings.log_format, process="web")
    load_config(settings.config)  # refuse to start on a broken file, with the key that is wrong
    from app.web.server import server_config

    options: dict[str, Any] = {
        "host": args.host or settings.host,
        "port": args.port or settings.port,
        "access_log": args.access_log,
        "timeout_graceful_shutdown": settings.shutdown_timeout,  # an asyncio.timeout: int() made 0.5 s no drain
    }
    processes = args.processes or settings.web_processes
    if processes > 1:
        return _serve_processes(settings, processes, options)
    config = server_config("app.web.app:create_app", settings, factory=True, **options)
    config.load()  # the app, its config and its templates: then out of the collector's full passes
    freeze_startup_heap()
    uvicorn.Server(config).run()
    return 0


def _serve_processes(settings: Settings, processes: int, options: dict[str, Any]) -> int:
    """``processes`` web processes on one listening socket, under uvicorn's supervisor: it restarts a
    process that dies, and on SIGTERM or SIGINT stops them all, each finishing the requests it holds.
    Their counters meet in prometheus-client's multiprocess files, in a directory of this run's own
    (made inside ``PROMETHEUS_MULTIPROC_DIR`` if it is set, else in the system's temporary directory,
    and removed at exit), so any of them can answer /metrics for all, and two runs given the same
    directory never mix or clear each other's files."""
    from app.web.metrics import forget_process
    from app.web.server import Supervisor, server_config

    given = os.environ.get("PROMETHEUS_MULTIPROC_DIR")
    if given:
        Path(given).mkdir(parents=True, exist_ok=True)
    metrics_dir = tempfile.mkdtemp(prefix="hookline-metrics-", dir=given or None)
    os.environ["PROMETHEUS_MULTIPROC_DIR"] = metrics_dir  # read by prometheus-client in each child
    config = server_config("app.web.app:served_app", settings, factory=True, workers=processes, **options)
    try:
        Supervisor(config, [config.bind_socket()], on_exit=forget_process).run()
    finally:
        shutil.rmtree(metrics_dir, ignore_errors=True)
        if given:
            os.environ["PROMETHEUS_MULTIPROC_DIR"] = given
    return 0


def cmd_worker(settings: Settings, args: argparse.Namespace) -> int:
    _needs_database_url(settings)  # never an embedded Postgres, as the web process
    load_config(settings.config)
    extra = ["--simulate-model"] if args.simulate_model else []
    os.execv(sys.executable, [sys.executable, "-m", "worker", *extra])  # noqa: S606 - our own module


def cmd_dev(settings: Settings, args: argparse.Namespace) -> int:
    from app.cli.dev import run_dev

    return run_dev(settings, dict(settings.environ), simulate_model=args.simulate_model)


def cmd_check(settings: Settings, args: argparse.Namespace) -> int:
    path = settings.config
    if not path.exists():
        print(f"{path}: no such file (HOOKLINE_CONFIG)", file=sys.stderr)
        return 1
    config = load_config(path)
    problems = environment_problems(config, settings.environ, settings.public_url) + weak_tokens(settings)
    head, *lines = summary(config)
    print(f"{path}: OK — {head}")
    for line in lines:
        print(line)
    for problem in problems:
        print(f"warning: {problem}", file=sys.stderr)
    return 1 if problems and args.strict else 0


def cmd_send(settings: Settings, args: argparse.Namespace) -> int:
    import httpx

    from app.cli.send import send

    config = load_config(settings.config)
    base = args.url or f"http://127.0.0.1:{settings.port}"
    try:
        sent = send(
            config,
            args.source,
            environ=settings.environ,
            base_url=base,
            public_url=settings.public_url,
            file=Path(args.file) if args.file else None,
            event_type=args.type,
            delivery_id=args.delivery_id,
        )
    except OSError as e:  # --file missing or unreadable
        print(f"hookline send: cannot read {e.filename or args.file}: {e.strerror or e}", file=sys.stderr)
        return 1
    except httpx.HTTPError as e:
        print(
            f"hookline send: cannot post to {base} ({e.__class__.__name__}: {e}); is the server running?",
            file=sys.stderr,
        )
        return 1
    print(f"POST {sent.url} (delivery {sent.delivery_id}) → {sent.status} {sent.body}")
    return 0 if 200 <= sent.status < 300 else 1


def cmd_status(settings: Settings, args: argparse.Namespace) -> int:
    from app.cli.observe import status

    url = _db_url(settings)
    return status(url, as_json=args.json, caps=lambda: _spend(url, settings))


def cmd_events(settings: Settings, args: argparse.Namespace) -> int:
    from app.cli.observe import show_event

    return show_event(_db_url(settings), args.event_id, config=load_config(settings.config), as_json=args.json)


def cmd_tail(settings: Settings, args: argparse.Namespace) -> int:
    from app.cli.tail import run_tail

    config = load_config(settings.config)  # its sources' redact paths are masked in the stories printed
    url, server = embedded.resolve_database_url(settings.dsn(), settings.home)
    try:
        return run_tail(url, config=config, as_json=args.json)
    finally:
        if server is not None:
            embedded.stop(server)


def cmd_psql(settings: Settings, args: argparse.Namespace) -> int:
    from app.cli.observe import psql

    return psql(settings.dsn(), settings.home, args.psql_args)


def _spend(url: str, settings: Settings) -> list[dict[str, Any]]:
    """Today's spend per tenant against its [tenants] caps (app/cli/spend.py)."""
    import psycopg

    from app.cli.spend import spend_today
    from app.core.db import libpq_dsn

    try:
        config = load_config(settings.config)
    except ConfigError:
        return []  # `hookline check` reports the file; status still shows the counts
    with psycopg.connect(libpq_dsn(url)) as conn:
        return spend_today(conn, config)


def cmd_replay(settings: Settings, args: argparse.Namespace) -> int:
    from app.cli.replay import start_replay, wait_for

    if not (args.event_ids or args.source or args.type or args.status or args.since or args.until):
        print(
            "hookline replay: name event ids or at least one filter (--source, --type, --status, --since, --until)",
            file=sys.stderr,
        )
        return 2
    url = _db_url(settings)
    result = start_replay(
        url,
        event_ids=args.event_ids,
        source=args.source,
        event_type=args.type,
        status=args.status,
        since=args.since,
        until=args.until,
        recompute=args.recompute,
        force=args.force,
    )
    print(f"replaying {len(result.event_ids)} event(s)", file=sys.stderr)
    if args.no_wait or not result.event_ids:
        return 0
    wait_for(url, result, timeout=args.timeout)
    if result.done < len(result.event_ids):
        print(
            f"timed out: {len(result.event_ids) - result.done} event(s) still running (is a worker up?)",
            file=sys.stderr,
        )
        return 1
    return 1 if result.dead else 0


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="hookline", description="Verified webhooks in, Claude-processed actions out.")
    sub = p.add_subparsers(dest="command", required=True)
    for module in (watching, benchmark, scheduling, dismiss):
        COMMANDS.update(module.add_cli(sub))
    dev = sub.add_parser("dev", help="embedded Postgres + migrations + web + worker, in one terminal")
    dev.add_argument(
        "--simulate-model",
        action="store_true",
        help="answer model calls locally from each pipeline's output schema (no API key; stored as simulated)",
    )
    sub.add_parser("migrate", help="apply pending SQL migrations (Procfile release step)")
    web = sub.add_parser("web", help="serve the HTTP API on $PORT")
    web.add_argument("--host")
    web.add_argument("--port", type=int)
    web.add_argument("--access-log", action="store_true", help="log every request (off: the ingest path stays lean)")
    web.add_argument(
        "--processes",
        type=at_least_one("process"),
        metavar="N",
        help="serve from N processes on the one port (default: HOOKLINE_WEB_PROCESSES, 1)",
    )
    worker = sub.add_parser("worker", help="run a worker (procrastinate, async concurrency)")
    worker.add_argument("--simulate-model", action="store_true", help=argparse.SUPPRESS)
    check = sub.add_parser("check", help="validate hookline.toml and the environment it names")
    check.add_argument("--strict", action="store_true", help="exit 1 on environment warnings too")
    send = sub.add_parser("send", help="sign a payload as the source's provider would and post it")
    send.add_argument("source")
    send.add_argument("--file", help="payload file (default: the provider's sample, of --type when one ships)")
    send.add_argument("--type", help="event type to send (header or body field, as the provider does)")
    send.add_argument("--delivery-id", help="delivery id to use (default: a fresh one)")
    send.add_argument("--url", help="base URL of the running server (default: http://127.0.0.1:$PORT)")
    status = sub.add_parser("status", help="queue depth, rates, dead letters and today's spend")
    status.add_argument("--json", action="store_true", help="one JSON document, for scripts")
    tail = sub.add_parser("tail", help="follow events live as they arrive and change status (LISTEN)")
    tail.add_argument("--json", action="store_true", help="one JSON object per line")
    events = sub.add_parser("events", help="look at events")
    events_sub = events.add_subparsers(dest="events_command", required=True)
    show = events_sub.add_parser("show", help="one event's timeline, model calls and actions")
    show.add_argument("event_id", type=int)
    show.add_argument("--json", action="store_true", help="the event, timeline, calls and actions as JSON")
    psql = sub.add_parser("psql", help="open psql on the configured (or embedded) database")
    psql.add_argument("psql_args", nargs=argparse.REMAINDER, help="passed to psql (e.g. -c 'SELECT 1')")
    replay = sub.add_parser("replay", help="re-run finished events (reusing stored answers unless --recompute)")
    replay.add_argument("event_ids", nargs="*", type=int, metavar="EVENT_ID")
    replay.add_argument("--source")
    replay.add_argument("--type", help="event type")
    replay.add_argument("--status", choices=["succeeded", "dead", "skipped"])
    replay.add_argument("--since", type=when, help="received at or after: ISO-8601 time, or 30m / 2h / 7d ago")
    replay.add_argument("--until", type=when, help="received before: ISO-8601 time, or 30m / 2h / 7d ago")
    replay.add_argument("--recompute", action="store_true", help="call the model again instead of reusing its answer")
    replay.add_argument("--force", action="store_true", help="run actions again even where they succeeded")
    replay.add_argument("--no-wait", action="store_true", help="defer the jobs and return")
    replay.add_argument("--timeout", type=float, default=600.0, help="seconds to wait for the replays to finish")
    return p


COMMANDS = {
    "dev": cmd_dev,
    "migrate": cmd_migrate,
    "web": cmd_web,
    "worker": cmd_worker,
    "check": cmd_check,
    "send": cmd_send,
    "status": cmd_status,
    "events": cmd_events,
    "tail": cmd_tail,
    "psql": cmd_psql,
    "replay": cmd_replay,
}


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if argv[:1] == ["psql"] and not {"-h", "--help"} & set(argv[1:2]):  # psql's own options pass through as is
        args = argparse.Namespace(command="psql", psql_args=[a for a in argv[1:2] if a != "--"] + argv[2:])
    else:
        args = build_parser().parse_args(argv)
    settings: Settings | None = None
    try:
        settings = Settings()
    except ValidationError as e:  # a bad HOOKLINE_* (or PORT, …) variable: refused like a bad hookline.toml
        for line in settings_problems(e):
            print(f"hookline {args.command}: {line}", file=sys.stderr)
        return 2
    try:
        code = COMMANDS[args.command](settings, args)
        sys.stdout.flush()  # a reader gone (`| head`) is found here, not by the interpreter's last flush
        return code
    except ConfigError as e:
        print(f"hookline {args.command}: configuration error\n{e}", file=sys.stderr)
        return 2
    except HooklineError as e:
        print(f"hookline {args.command}: {e}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 130
    except Exception as e:
        if output_closed(e):
            return quiet_exit()
        problem = database_problem(e)
        if problem is None:
            raise
        print(f"hookline {args.command}: {_without_secrets(problem, settings)}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
