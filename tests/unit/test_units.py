"""Small pure pieces: DSNs, named queries, header redaction, body parsing, trimming, pricing, errors."""

from __future__ import annotations

import datetime as dt
import re
from decimal import Decimal
from urllib.parse import quote, urlencode

import anthropic
import httpx
import pytest

from app.core.db import DatabaseUrlError, asyncpg_dsn, check_database_url, libpq_dsn
from app.core.errors import BadRequest
from app.core.sqlfiles import parse_queries
from app.web.bodies import parse_body
from app.web.guard import is_credential
from worker.errors import PermanentError, TransientError, classify, retry_after_seconds
from worker.limits import Reservation, settle
from worker.pricing import cost_usd
from worker.prompt import MAX_STRING, dig, trim


def test_database_urls_of_every_shape() -> None:
    assert libpq_dsn("postgres://u:p@h:5/d") == "postgresql://u:p@h:5/d"
    assert libpq_dsn("postgresql+psycopg://u@h/d") == "postgresql://u@h/d"
    assert libpq_dsn("postgresql://user@/db?host=/run/pg") == "postgresql://user@/db?host=/run/pg"
    dsn, settings = asyncpg_dsn("postgresql://u@/db?host=/run/pg&application_name=x&options=-c%20search_path%3Dy")
    assert dsn == "postgresql://u@/db?host=%2Frun%2Fpg" and settings == {"application_name": "x", "search_path": "y"}
    with pytest.raises(ValueError, match="postgresql://"):
        libpq_dsn("mysql://x")


@pytest.mark.parametrize(
    ("options", "settings"),
    [
        ("-c search_path=y", {"search_path": "y"}),
        ("-csearch_path=y", {"search_path": "y"}),
        ("--statement_timeout=5s", {"statement_timeout": "5s"}),
        ("--lock-timeout=2s", {"lock_timeout": "2s"}),  # the server reads a dash in the name as _
        ("-c lock-timeout=2s", {"lock_timeout": "2s"}),
        ("--client_min_messages=warning", {"client_min_messages": "warning"}),  # once "lient_min_messages"
        (
            "-c search_path=y  --statement_timeout=5s\t-c lock_timeout=2s",
            {"search_path": "y", "statement_timeout": "5s", "lock_timeout": "2s"},
        ),
        ("-c search_path=a,\\ b", {"search_path": "a, b"}),  # a backslash keeps the space in the value
        ("-c application_name=x\\\\y", {"application_name": "x\\y"}),
        ("-c jit=on=off", {"jit": "on=off"}),
        # the server's other switches set what it sets for them, or nothing (-C, -n, -b: ignored from a client)
        ("-S 8MB -c search_path=y -e", {"work_mem": "8MB", "search_path": "y", "datestyle": "euro"}),
        ("-eP -S2MB", {"datestyle": "euro", "ignore_system_indexes": "true", "work_mem": "2MB"}),
        (
            "-fs -f h -t pa -tex",
            {
                "enable_seqscan": "false",
                "enable_hashjoin": "false",
                "log_parser_stats": "true",
                "log_executor_stats": "true",
            },
        ),
        ("-d 2", {"log_min_messages": "debug2", "log_statement": "all"}),
        ("-d 0 -W 1", {"log_min_messages": "notice", "post_auth_delay": "1"}),
        ("-C x -n -b -T", {}),
        ("-S 1MB --work-mem=3MB", {"work_mem": "3MB"}),  # the later wins
        ("--", {}),
        ("-c search_path=y --", {"search_path": "y"}),
    ],
)
def test_server_settings_in_options_in_either_form(options: str, settings: dict[str, str]) -> None:
    """libpq's ``options`` as the server reads it: ``-c name=value`` or ``--name=value``."""
    url = f"postgresql://u@h/d?{urlencode({'options': options}, quote_via=quote)}"  # a space as %20, as libpq reads it
    assert asyncpg_dsn(url) == ("postgresql://u@h/d", settings)


@pytest.mark.parametrize(
    ("options", "rule"),
    [
        ("-c statement_timeout", "a setting without its value"),  # the server: "-c … requires a value"
        ("-cstatement_timeout", "a setting without its value"),
        ("--statement_timeout", "a setting without its value"),
        ("-c search_path=y -c", "-c without its value"),  # -c at the end
        ("-S", "-S without its value"),
        ("-c =x", "a setting without its name"),
        ("-x", "-x, a switch the server does not take"),
        ("-eo", "-o, a switch the server does not take"),
        ("-c statement_timeout=5s SECRET", "a word that is not a switch"),  # a value with an unescaped space
        ("-- SECRET", "a word that is not a switch"),
        ("-B 100", "-B, a server-wide parameter"),
        ("-F", "-F, a server-wide parameter"),
        ("-fz", "-f with a letter other than"),
        ("-t p", "-t with a value other than pa, pl or ex"),
    ],
)
def test_options_the_server_refuses_are_refused_at_start(options: str, rule: str) -> None:
    """What the server refuses every session for is refused where DATABASE_URL is read (every process),
    not left out by the web (asyncpg) while the worker (libpq) fails at its first connection."""
    url = f"postgresql://u:SECRET@h/d?{urlencode({'options': options}, quote_via=quote)}"
    with pytest.raises(DatabaseUrlError, match=re.escape(rule)) as e:
        check_database_url(url)
    assert "SECRET" not in str(e.value) and str(e.value).startswith("options has "), str(e.value)


def test_a_plus_in_the_url_is_a_plus_as_libpq_reads_it() -> None:
    """libpq keeps ``+`` in a URI's query (it is no space there); the web process reads it alike."""
    dsn, settings = asyncpg_dsn(
        "postgresql://u@h/d?application_name=my+app&options=-c%20search_path%3Da+b&sslmode=require"
    )
    assert settings == {"application_name": "my+app", "search_path": "a+b"}
    assert dsn == "postgresql://u@h/d?sslmode=require"
    dsn, _ = asyncpg_dsn("postgresql://u@/d?host=/run/my+pg")
    assert dsn == "postgresql://u@/d?host=%2Frun%2Fmy%2Bpg"


def test_database_urls_every_client_can_use_pass_the_check() -> None:
    for url in (
        "postgres://u:p@h:5/d",
        "postgresql+psycopg://u:p%25w@h/d?sslmode=require",
        "postgresql://user@/db?host=/run/pg",
        "postgresql://u@h1:5432,h2:5433/db?target_session_attrs=read-write",
        "postgresql://u@h1,h2/db",
        "postgresql://u:p@[::1]:5432/db?application_name=x&options=-c%20search_path%3Dy",
        "postgresql://u:p@h:/db",
    ):
        check_database_url(url)


@pytest.mark.parametrize(
    ("url", "rule"),
    [
        ("mysql://u:SECRET@h/d", "must start with postgresql://"),
        ("postgresql://u:SECRET%G1@h/d", "bad percent-escape"),
        ("postgresql://u:SECRET@[::1/d", "IPv6 host without its closing ]"),
        ("postgresql://u:SECRET x@h/d", "has a space"),
        ("postgresql://u:SECRET@h/d?SECRET=1", "not a libpq connection parameter"),
        ("postgresql://u:SECRET@h:5432x/d", "port must be a number"),
        ("postgresql://u:SECRET@h:70000/d", "port must be a number"),
        ("postgresql://u:SECRET@h/d?port=5,6", "not one per host"),
        ("postgresql://u:SECRET@h/d?sslmode=SECRET", "sslmode must be one of"),
        ("postgresql://u:SECRET@h/d?target_session_attrs=SECRET", "target_session_attrs must be one of"),
        ("postgresql://u:SECRET@h/d?sslmode=require&sslrootcert=system", "sslrootcert=system needs sslmode=verify"),
    ],
)
def test_a_database_url_no_client_can_use_names_the_rule_not_the_value(url: str, rule: str) -> None:
    with pytest.raises(DatabaseUrlError, match=rule) as e:
        check_database_url(url)
    assert "SECRET" not in str(e.value)


def test_named_queries() -> None:
    text = "-- name: a\n-- doc\nSELECT 1;\n\n-- name: b\nSELECT\n  2\n"
    assert parse_queries(text) == {"a": "SELECT 1", "b": "SELECT\n  2"}
    with pytest.raises(ValueError, match="duplicate"):
        parse_queries("-- name: a\nSELECT 1;\n-- name: a\nSELECT 2;")


def test_signature_and_credential_headers_are_recognised() -> None:
    for name in ("Stripe-Signature", "X-Gitlab-Token", "Authorization", "X-Hub-Signature-256", "X-Api-Key", "Cookie"):
        assert is_credential(name), name
    for name in ("User-Agent", "Content-Type", "X-GitHub-Delivery", "Webhook-Id"):
        assert not is_credential(name), name


def test_body_parsing() -> None:
    assert parse_body(b'{"a": 1}', "application/json") == {"a": 1}
    assert parse_body(b"a=1&b=two", "application/x-www-form-urlencoded") == {"a": "1", "b": "two"}
    assert parse_body(b"payload=%7B%22x%22%3A1%7D", "application/x-www-form-urlencoded") == {"x": 1}
    for bad in (b"", b"not json", b"\xff\xfe", b'{"a": NaN}', b'{"a": Infinity}', b"[" * 100_000 + b"]" * 100_000):
        with pytest.raises(BadRequest):
            parse_body(bad, "application/json")


@pytest.mark.parametrize(
    ("body", "detail"),
    [
        (b'{"a": "\xff"}', "UnicodeDecodeError at byte 7: not UTF-8, UTF-16 or UTF-32"),
        (b'\xef\xbb\xbf{"a": "\xff"}', "UnicodeDecodeError at byte 10: not UTF-8, UTF-16 or UTF-32"),  # after a BOM
        (b'{"a": 1,\n "b": }', "JSONDecodeError at line 2 column 7: Expecting value"),
        ('{"é": 1,}'.encode(), "JSONDecodeError at line 1 column 9: Expecting property name enclosed in double quotes"),
        (b'{"a": NaN}', "NaN is not JSON"),
        (b'{"a": ' + b"9" * 5000 + b"}", "a number has more than 4300 digits"),
    ],
)
def test_a_body_that_is_not_json_says_what_and_where(body: bytes, detail: str) -> None:
    with pytest.raises(BadRequest) as refused:
        parse_body(body, "application/json")
    assert refused.value.detail == f"body is not valid JSON ({detail})"


def test_trim_keeps_only_listed_fields_and_clips_long_strings() -> None:
    payload = {"type": "t", "data": {"object": {"email": "a@b", "items": [{"id": 1}, {"id": 2}], "big": "x" * 9000}}}
    assert trim(payload, ("type", "data.object.email", "data.object.items.1.id", "missing.path")) == {
        "type": "t",
        "data.object.email": "a@b",
        "data.object.items.1.id": 2,
    }
    clipped = trim(payload, ("data.object.big",))["data.object.big"]
    assert clipped.startswith("x" * MAX_STRING) and "5000 more characters cut" in clipped
    assert trim(payload, ())["data"]["object"]["email"] == "a@b"
    assert dig([{"a": 1}], "0.a") == 1


def test_cost_from_usage() -> None:
    usage = {
        "input_tokens": 50_000,
        "output_tokens": 100_000,
        "cache_read_input_tokens": 10_000,
        "cache_creation": {"ephemeral_5m_input_tokens": 20_000, "ephemeral_1h_input_tokens": 0},
    }
    # 50k × $0.10 + 100k × $0.50 + 10k × $0.01 + 20k × $0.125, per million
    assert cost_usd("claude-haiku-5-5", usage) == Decimal("0.05760000")
    # Haiku 5.5 over 100k prompt tokens: every token of the request at the higher tier
    assert cost_usd("claude-haiku-5-5", {"input_tokens": 200_000, "output_tokens": 0}) == Decimal("0.10000000")
    assert cost_usd(
        "claude-opus-5-5", {"input_tokens": 1_000_000, "output_tokens": 1_000_000, "service_tier": "batch"}
    ) == Decimal("12.00000000")
    assert cost_usd("claude-unknown", usage) is None


def _status_error(cls: type[anthropic.APIStatusError], status: int, headers: dict[str, str] | None = None) -> Exception:
    request = httpx.Request("POST", "https://api.example/v1/messages")
    response = httpx.Response(status, headers=headers or {}, request=request)
    return cls("boom", response=response, body=None)  # type: ignore[arg-type]


def test_transient_versus_permanent() -> None:
    assert isinstance(classify(_status_error(anthropic.RateLimitError, 429, {"retry-after": "3"})), TransientError)
    assert classify(_status_error(anthropic.RateLimitError, 429, {"retry-after": "3"})).retry_after == 3
    assert isinstance(classify(_status_error(anthropic.InternalServerError, 529)), TransientError)
    assert isinstance(classify(_status_error(anthropic.BadRequestError, 400)), PermanentError)
    assert isinstance(classify(TimeoutError()), TransientError)
    assert isinstance(classify(ImportError("no module")), PermanentError)
    assert retry_after_seconds({"retry-after-ms": "250", "retry-after": "9"}) == 0.25
    assert retry_after_seconds({}) is None


async def test_a_reservation_that_holds_nothing_has_nothing_to_settle() -> None:
    """The gate skips settling a reservation that holds nothing (no model limits, no tenant budget):
    ``settle`` must then have nothing to do, so it never reaches the runtime (None here)."""
    empty = Reservation("claude-haiku-4-5")
    assert empty.holds_nothing
    usage = {"input_tokens": 5, "output_tokens": 1}
    await settle(None, {}, empty, usage, Decimal("0.1"))  # type: ignore[arg-type, typeddict-item]
    assert not Reservation("m", input_taken=3).holds_nothing
    assert not Reservation("m", output_taken=3).holds_nothing
    assert not Reservation("m", tenant="t", day_start=dt.datetime.now(dt.UTC)).holds_nothing
