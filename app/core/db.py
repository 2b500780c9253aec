"""Database URLs and the asyncpg pool of the web process.

``DATABASE_URL`` is any libpq URI: ``postgresql://u:p@host:5432/db?sslmode=require``, ``postgres://…``
(Heroku style), a SQLAlchemy-style ``postgresql+psycopg://…``, or a Unix-socket host
(``postgresql://user@/db?host=/run/pg``) as the embedded server and some managed Postgres give.
"""

from __future__ import annotations

import json
import re
import ssl
from urllib.parse import parse_qsl, quote, urlencode, urlsplit, urlunsplit

import asyncpg

from app.core import jsonvalues

_SCHEME = re.compile(r"^(postgres|postgresql)(\+[a-z0-9_]+)?://", re.IGNORECASE)

#: URI query keys asyncpg understands itself; anything else would be sent as a server setting.
_ASYNCPG_KEYS = {
    "host",
    "port",
    "user",
    "password",
    "passfile",
    "dbname",
    "database",
    "sslmode",
    "sslcert",
    "sslkey",
    "sslrootcert",
    "sslcrl",
    "sslpassword",
    "ssl_min_protocol_version",
    "ssl_max_protocol_version",
    "target_session_attrs",
    "krbsrvname",
    "gsslib",
    "service",
    "servicefile",
    "sslnegotiation",
}

#: libpq connection options that only steer libpq's own client (keepalives, GSS encryption, channel
#: binding, a fallback name, load balancing, …) and that asyncpg has no equivalent for. Managed
#: Postgres URLs carry some (Neon's: ``channel_binding=require``). They are not server settings: sent
#: as one, the server refuses the session ("unrecognized configuration parameter"), so the web process
#: leaves them out; psycopg (worker, migrate) still honours them.
_LIBPQ_CLIENT_ONLY = {
    "channel_binding",
    "connect_timeout",
    "fallback_application_name",
    "gssdelegation",
    "gssencmode",
    "hostaddr",
    "keepalives",
    "keepalives_count",
    "keepalives_idle",
    "keepalives_interval",
    "load_balance_hosts",
    "max_protocol_version",
    "min_protocol_version",
    "oauth_client_id",
    "oauth_client_secret",
    "oauth_issuer",
    "oauth_scope",
    "replication",
    "require_auth",
    "requirepeer",
    "scram_client_key",
    "scram_server_key",
    "sslcertmode",
    "sslcompression",
    "sslcrldir",
    "sslkeylogfile",
    "sslsni",
    "tcp_user_timeout",
}


def libpq_dsn(url: str) -> str:
    """The URL as libpq (psycopg, procrastinate, psql) accepts it."""
    m = _SCHEME.match(url.strip())
    if not m:
        raise ValueError("DATABASE_URL must start with postgresql:// or postgres://")
    return "postgresql://" + url.strip()[m.end() :]


class DatabaseUrlError(ValueError):
    """A ``DATABASE_URL`` that no client can use. The message names the rule broken, never the URL
    or any part of it: the URL carries a password, and the message goes to the release log."""


#: libpq's complaints about a URI, by a phrase of each, as the rule broken (libpq's own message
#: quotes the offending part, password included, so it is never passed on).
_LIBPQ_RULES = (
    ("spaces", "has a space: percent-encode it as %20"),
    ("percent-encoded", "has a bad percent-escape: a % must be followed by two hex digits (write % itself as %25)"),
    ("IPv6", "has an IPv6 host without its closing ] (write it as [::1])"),
    ("query parameter", "has a query parameter that is not a libpq connection parameter"),
)
_SSLMODES = {"disable", "allow", "prefer", "require", "verify-ca", "verify-full"}
_SESSION_ATTRS = {"any", "read-write", "read-only", "primary", "standby", "prefer-standby"}


def libpq_uri_rule(message: str) -> str:
    """The rule a URI broke, from libpq's message about it, without the part of the URI it quotes."""
    return next((rule for phrase, rule in _LIBPQ_RULES if phrase in message), "is not a valid libpq connection URI")


def check_database_url(url: str) -> None:
    """Raise :class:`DatabaseUrlError` unless both libpq (psycopg: migrate, worker, the CLI) and
    asyncpg (the web process) can connect with ``url``; checked once, where the setting is read, so
    no client later fails with the URL in its message."""
    from psycopg import ProgrammingError
    from psycopg.conninfo import conninfo_to_dict

    try:
        dsn = libpq_dsn(url)
    except ValueError:
        raise DatabaseUrlError("must start with postgresql:// or postgres://") from None
    try:
        params = {key: str(value) for key, value in conninfo_to_dict(dsn).items()}
    except ProgrammingError as e:
        raise DatabaseUrlError(libpq_uri_rule(str(e))) from None
    ports = params.get("port", "").split(",")
    if not all(p == "" or (p.isascii() and p.isdigit() and 0 < int(p) < 65536) for p in ports):
        raise DatabaseUrlError("port must be a number from 1 to 65535")
    hosts = params.get("host", "").split(",")
    if len(ports) > 1 and len(ports) != len(hosts):
        raise DatabaseUrlError("lists more than one port, but not one per host")
    if params.get("sslmode", "prefer") not in _SSLMODES:
        raise DatabaseUrlError(f"sslmode must be one of {', '.join(sorted(_SSLMODES))}")
    if params.get("sslrootcert") == "system" and params.get("sslmode", "verify-full") != "verify-full":
        raise DatabaseUrlError("sslrootcert=system needs sslmode=verify-full (or no sslmode)")
    if params.get("target_session_attrs", "any") not in _SESSION_ATTRS:
        raise DatabaseUrlError(f"target_session_attrs must be one of {', '.join(sorted(_SESSION_ATTRS))}")
    options_settings(params.get("options", ""))  # what the server would refuse every session for


def _option_words(options: str) -> list[str]:
    """libpq's ``options`` split into words as the server splits them (``pg_split_opts``): at ASCII
    whitespace, a backslash taking the next character as it is (``\\ ``: a space inside a value)."""
    words: list[str] = []
    word: str | None = None  # None: between words
    chars = iter(options)
    for ch in chars:
        if ch in " \t\n\r\f\v":
            if word is not None:
                words.append(word)
            word = None
        else:
            word = (word or "") + (next(chars, "") if ch == "\\" else ch)
    if word is not None:
        words.append(word)
    return words


#: The server's own switches a client's ``options`` may carry (postgres.c, ``process_postgres_switches``),
#: as its getopt reads them. Switches that take an argument, and the setting each sets with it (None:
#: one the server ignores from a client; ``-c``/``--``, ``-d``, ``-f`` and ``-t`` are read apart).
_SWITCH_ARGS: dict[str, str | None] = {
    "B": "shared_buffers",
    "C": None,
    "D": None,
    "h": "listen_addresses",
    "k": "unix_socket_directories",
    "N": "max_connections",
    "p": "port",
    "r": None,
    "S": "work_mem",
    "v": None,
    "W": "post_auth_delay",
}
#: Switches without an argument, and the setting and value each sets (None: ignored from a client).
_SWITCH_FLAGS: dict[str, tuple[str, str] | None] = {
    "b": None,
    "E": None,
    "e": ("datestyle", "euro"),
    "F": ("fsync", "false"),
    "i": ("listen_addresses", "*"),
    "j": None,
    "l": ("ssl", "true"),
    "n": None,
    "O": ("allow_system_table_mods", "true"),
    "P": ("ignore_system_indexes", "true"),
    "s": ("log_statement_stats", "true"),
    "T": None,
}
#: Switches that set a server-wide parameter: the server refuses every session that sends one.
_SERVER_WIDE = frozenset("BFhiklNp")
#: ``-f X``: the plan type X the server turns off; ``-t X``: the statistics it logs.
_PLAN_SWITCH = {
    "s": "enable_seqscan",
    "i": "enable_indexscan",
    "o": "enable_indexonlyscan",
    "b": "enable_bitmapscan",
    "t": "enable_tidscan",
    "n": "enable_nestloop",
    "m": "enable_mergejoin",
    "h": "enable_hashjoin",
}
_STATS_SWITCH = {"pa": "log_parser_stats", "pl": "log_planner_stats", "e": "log_executor_stats"}


def options_settings(options: str) -> dict[str, str]:
    """The server settings in libpq's ``options``, read as the server reads them: ``-c name=value``,
    ``-cname=value`` or ``--name=value`` (a dash in the name standing for an underscore), and its other
    switches that set one (``-S 8MB`` is work_mem, ``-e`` DateStyle euro, …); the later wins.

    Raise :class:`DatabaseUrlError` where the server refuses every session with these options: a
    setting without ``=value`` or without a name, a switch it does not know or without its argument, a
    word that is no switch, a server-wide parameter (``-B``, ``-p``, …). libpq (the worker) would fail
    only when it connects, and asyncpg (the web) would have left it out."""
    settings: dict[str, str] = {}
    words = iter(_option_words(options))
    for word in words:
        if word == "--":  # getopt's end of switches: any word after it is refused below
            rest = next(words, None)
            if rest is not None:
                raise DatabaseUrlError("options has a word that is not a switch (-c name=value, --name=value)")
            break
        if not word.startswith("-") or word == "-":
            raise DatabaseUrlError("options has a word that is not a switch (-c name=value, --name=value)")
        letters = word[1:]
        while letters:
            flag, letters = letters[0], letters[1:]
            if flag in _SWITCH_FLAGS:
                _server_wide(flag)
                if (setting := _SWITCH_FLAGS[flag]) is not None:
                    settings[setting[0]] = setting[1]
                continue
            if flag not in _SWITCH_ARGS and flag not in "c-dft":
                raise DatabaseUrlError(f"options has -{flag}, a switch the server does not take")
            arg = letters or next(words, None)  # the rest of the word, else the next word
            if arg is None:
                raise DatabaseUrlError(f"options has -{flag} without its value")
            _server_wide(flag)
            settings.update(_switch(flag, arg))
            break
    return settings


def _server_wide(flag: str) -> None:
    if flag in _SERVER_WIDE:
        raise DatabaseUrlError(f"options has -{flag}, a server-wide parameter the server refuses for a session")


def _switch(flag: str, arg: str) -> dict[str, str]:
    """The settings of one switch that takes an argument, as ``process_postgres_switches`` sets them."""
    if flag in "c-":
        name, equals, value = arg.partition("=")
        if not equals:
            raise DatabaseUrlError("options has a setting without its value: write -c name=value or --name=value")
        if not name:
            raise DatabaseUrlError("options has a setting without its name: write -c name=value or --name=value")
        return {name.replace("-", "_"): value}
    if flag == "f":
        if arg[0] not in _PLAN_SWITCH:
            raise DatabaseUrlError(f"options has -f with a letter other than {', '.join(_PLAN_SWITCH)}")
        return {_PLAN_SWITCH[arg[0]]: "false"}
    if flag == "t":
        stats = _STATS_SWITCH.get(arg[:2]) or _STATS_SWITCH.get(arg[:1])
        if stats is None:
            raise DatabaseUrlError("options has -t with a value other than pa, pl or ex")
        return {stats: "true"}
    if flag == "d":  # set_debug_options, with atoi's reading of the level
        m = re.match(r"\s*([+-]?\d+)", arg)
        level = int(m.group(1)) if m else 0
        more = [("log_statement", "all"), ("debug_print_parse", "true"), ("debug_print_plan", "true")]
        more.append(("debug_print_rewritten", "true"))
        return {"log_min_messages": f"debug{level}" if level > 0 else "notice"} | dict(more[: max(level - 1, 0)])
    setting = _SWITCH_ARGS[flag]
    return {} if setting is None else {setting: arg}


def _query(url: str) -> list[tuple[str, str]]:
    """The URL's query as libpq reads it: percent-escapes decoded, a ``+`` kept as a plus (libpq does
    not read it as a space, as HTML forms do: ``application_name=my+app`` is "my+app" to the worker)."""
    return parse_qsl(urlsplit(libpq_dsn(url)).query.replace("+", "%2B"), keep_blank_values=True)


def asyncpg_dsn(url: str) -> tuple[str, dict[str, str]]:
    """The URL for asyncpg, and server settings for libpq query keys asyncpg does not know.

    ``application_name=x`` becomes a server setting; ``options=-c k=v --k2=v2`` becomes settings too
    (:func:`options_settings`); libpq's client-only options (:data:`_LIBPQ_CLIENT_ONLY`) are left out.
    """
    parts = urlsplit(libpq_dsn(url))
    keep: list[tuple[str, str]] = []
    settings: dict[str, str] = {}
    for key, value in _query(url):
        if key in _ASYNCPG_KEYS:
            keep.append((key, value))
        elif key == "options":
            settings.update(options_settings(value))
        elif key not in _LIBPQ_CLIENT_ONLY:
            settings[key] = value
    return urlunsplit(parts._replace(query=urlencode(keep, quote_via=quote))), settings


def asyncpg_ssl(url: str) -> ssl.SSLContext | None:
    """The TLS context for ``sslrootcert=system`` (libpq 16+: verify the server against the system's
    trusted CAs, with ``sslmode=verify-full``), which asyncpg would take for a file named "system";
    None otherwise (asyncpg follows the URL's ``sslmode`` and ``sslrootcert`` itself)."""
    query = dict(_query(url))
    if query.get("sslrootcert") != "system":
        return None
    return ssl.create_default_context()  # system roots, CERT_REQUIRED, host name checked: verify-full


async def _init_connection(conn: asyncpg.Connection) -> None:
    await conn.set_type_codec("jsonb", encoder=json.dumps, decoder=jsonvalues.loads, schema="pg_catalog")
    await conn.set_type_codec("json", encoder=json.dumps, decoder=jsonvalues.loads, schema="pg_catalog")


async def _keep_session(conn: asyncpg.Connection) -> None:
    """Pool reset hook: the web process sets no session state (no SET, LISTEN, cursors), so skip
    asyncpg's default reset query and save a round trip per request."""


async def create_pool(
    url: str, *, min_size: int = 2, max_size: int = 10, timeout: float = 5.0
) -> asyncpg.Pool[asyncpg.Record]:
    dsn, server_settings = asyncpg_dsn(url)
    server_settings.setdefault("application_name", "hookline-web")
    return await asyncpg.create_pool(
        dsn,
        ssl=asyncpg_ssl(url),
        min_size=min_size,
        max_size=max_size,
        init=_init_connection,
        reset=_keep_session,
        timeout=timeout,
        command_timeout=timeout,
        server_settings=server_settings,
    )


async def connect(
    url: str, *, timeout: float = 5.0, application_name: str | None = None
) -> asyncpg.Connection[asyncpg.Record]:
    dsn, server_settings = asyncpg_dsn(url)
    if application_name:
        server_settings.setdefault("application_name", application_name)
    conn = await asyncpg.connect(dsn, ssl=asyncpg_ssl(url), timeout=timeout, server_settings=server_settings or None)
    await _init_connection(conn)
    return conn
