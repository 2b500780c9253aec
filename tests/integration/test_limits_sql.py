"""The shared-limit functions of migration 0007 and later, called as the worker calls them (real Postgres)."""

from __future__ import annotations

import time
from concurrent.futures import ThreadPoolExecutor
from decimal import Decimal

import psycopg
import pytest

from app.core.sqlfiles import queries

LQ = queries("limits")


def _one(conn: psycopg.Connection, name: str, **params: object) -> tuple[object, ...]:
    row = conn.execute(LQ[name], params).fetchone()
    assert row is not None
    return tuple(row)


def test_model_bucket_grants_up_to_the_limit_then_says_how_long_to_wait(conn: psycopg.Connection) -> None:
    args = {"model": "m", "rpm": 2, "itpm": None, "otpm": 1000, "input": 10, "output": 400}
    assert _one(conn, "take_model_capacity", **args) == (0,)
    assert _one(conn, "take_model_capacity", **args) == (0,)
    (wait,) = _one(conn, "take_model_capacity", **args)
    assert isinstance(wait, float) and 0 < wait <= 30  # one request refills in 60/2 s
    # the refused call took nothing: output tokens left are 1000 - 2*400 (plus a tiny refill)
    (out_left,) = conn.execute("SELECT output_tokens FROM hookline.model_buckets WHERE model = 'm'").fetchone() or (0,)
    assert 200 <= out_left < 210
    # unused output tokens come back on settle
    _one(conn, "settle_model_capacity", model="m", input_delta=0, output_delta=-300, itpm=None, otpm=1000)
    (out_left,) = conn.execute("SELECT output_tokens FROM hookline.model_buckets WHERE model = 'm'").fetchone() or (0,)
    assert 500 <= out_left < 510


def test_a_429_blocks_the_model_for_every_worker(conn: psycopg.Connection) -> None:
    conn.execute(
        LQ["observe_model_limits"],
        {
            "model": "m",
            "requests": None,
            "input": None,
            "output": None,
            "blocked_until": "2999-01-01T00:00:00Z",
            "reason": "429",
        },
    )
    (wait,) = _one(conn, "take_model_capacity", model="m", rpm=None, itpm=None, otpm=None, input=1, output=1)
    assert isinstance(wait, float) and wait > 86400


LEASE = {"event_id": 1, "kind": "call", "lease_seconds": 120.0}


def test_budget_reserves_before_and_settles_after_never_beyond_the_cap(conn: psycopg.Connection) -> None:
    res = {"tenant": "acme", "usd": Decimal("0.01"), "tokens_cap": 100, "usd_cap": None, **LEASE}
    granted, day, reopens, rid = _one(conn, "reserve_budget", tokens=60, **res)[:4]
    assert granted is True and reopens > day and rid is not None  # type: ignore[operator]
    assert _one(conn, "reserve_budget", tokens=50, **res)[0] is False  # 60 in flight + 50 > 100
    # the first call used 30 tokens: its reservation is released, its usage counted
    tokens, usd = _one(
        conn,
        "settle_budget",
        reservation_id=rid,
        tenant="acme",
        day_start=day,
        tokens=30,
        usd=Decimal("0.004"),
    )
    assert (tokens, usd) == (30, Decimal("0.004"))
    assert _one(conn, "reserve_budget", tokens=50, **res)[0] is True
    assert _one(conn, "reserve_budget", tokens=50, **{**res, "tenant": "other"})[0] is True  # tenants apart
    assert _one(conn, "claim_alert", tenant="acme", period="day", window_start=day) == (True,)
    assert _one(conn, "claim_alert", tenant="acme", period="day", window_start=day) == (False,)  # once per window


def test_a_refusal_says_whether_settled_spend_or_only_calls_in_flight_fill_the_cap(conn: psycopg.Connection) -> None:
    """Reservations are worst cases that settle a moment later: a cap full only of them is no reason to
    wait for the next day. reserved_only tells the worker which refusal it got."""
    res = {"tenant": "acme", "tokens_cap": 100, "usd_cap": Decimal(1), **LEASE}
    granted, day, _, rid, *_ = _one(conn, "reserve_budget", tokens=80, usd=Decimal("0.1"), **res)
    assert granted is True
    # 80 in flight + 50 > 100, but nothing settled: only the call in flight is in the way
    granted, _, reopens, none, reserved_only, in_flight, frees_at = _one(
        conn, "reserve_budget", tokens=50, usd=Decimal("0.1"), **res
    )
    (lease_end,) = conn.execute("SELECT expires_at FROM hookline.budget_reservations").fetchone() or (None,)
    assert (granted, none, reserved_only, in_flight, frees_at) == (False, None, True, 1, lease_end)
    assert reopens > frees_at  # type: ignore[operator]
    # the same over the USD cap alone
    assert _one(conn, "reserve_budget", tokens=1, usd=Decimal("0.95"), **res)[:5:4] == (False, True)
    # the call settles at 60 tokens and $0.5: settled spend itself leaves no room for 50 more tokens
    _one(conn, "settle_budget", reservation_id=rid, tenant="acme", day_start=day, tokens=60, usd=Decimal("0.5"))
    _, _, _, rid2, *_ = _one(conn, "reserve_budget", tokens=10, usd=Decimal(0), **res)  # one more in flight
    assert _one(conn, "reserve_budget", tokens=50, usd=Decimal(0), **res)[:5:4] == (False, False)  # 60 + 50 > 100
    assert _one(conn, "reserve_budget", tokens=1, usd=Decimal("0.6"), **res)[:5:4] == (False, False)  # $0.5 + 0.6 > 1
    # nothing in flight: a refusal is the settled spend's
    _one(conn, "settle_budget", reservation_id=rid2, tenant="acme", day_start=day, tokens=0, usd=Decimal(0))
    assert _one(conn, "reserve_budget", tokens=50, usd=Decimal(0), **res)[4:] == (False, 0, None)


def test_a_reservation_past_its_lease_stops_counting(conn: psycopg.Connection) -> None:
    """A worker SIGKILLed mid-call never settles: its reservation is reclaimed once its lease ends."""
    res = {"tenant": "acme", "usd": Decimal("0.5"), "tokens_cap": 100, "usd_cap": Decimal(1), **LEASE}
    _, day, _, dead_rid = _one(conn, "reserve_budget", tokens=80, **res)[:4]  # the killed worker's call
    assert _one(conn, "reserve_budget", tokens=80, **res)[0] is False  # still within its lease: counted
    conn.execute("UPDATE hookline.budget_reservations SET expires_at = now() - interval '1 second'")
    granted, _, _, rid = _one(conn, "reserve_budget", tokens=80, **res)[:4]  # reclaimed, then reserved
    assert granted is True
    window = "SELECT reserved_tokens, reserved_usd FROM hookline.budget_windows WHERE tenant = 'acme'"
    assert conn.execute(window).fetchone() == (80, Decimal("0.5"))
    assert conn.execute("SELECT id FROM hookline.budget_reservations").fetchall() == [(rid,)]
    # the killed worker's late settle (if it ever came) adds its usage but releases nothing twice
    _one(conn, "settle_budget", reservation_id=dead_rid, tenant="acme", day_start=day, tokens=5, usd=Decimal(0))
    assert conn.execute(window).fetchone() == (80, Decimal("0.5"))


def test_concurrency_slots_cap_in_flight_and_expire(conn: psycopg.Connection) -> None:
    def take(event_id: int, lease: float = 60.0) -> tuple[object, ...]:
        return _one(
            conn,
            "acquire_slots",
            event_id=event_id,
            pipelines=["p", "p"],
            scopes=["key", "tenant"],
            subjects=["stripe:k1", "acme"],
            caps=[5, 2],
            lease_seconds=lease,
        )

    assert take(1)[0] is True and take(2)[0] is True
    assert take(1)[0] is True  # its own slots do not count against it (a re-run)
    granted, blocked, in_flight, frees_at = take(3)
    assert (granted, blocked, in_flight) == (False, 2, 2) and frees_at is not None
    assert conn.execute("SELECT count(*) FROM hookline.concurrency_slots WHERE event_id = 3").fetchone() == (0,)
    conn.execute(LQ["release_slots"], {"event_id": 1})
    assert take(3)[0] is True
    # a worker killed mid-run: its slots stop counting when their lease ends
    conn.execute("UPDATE hookline.concurrency_slots SET expires_at = now() - interval '1 second' WHERE event_id = 2")
    assert take(4)[0] is True
    assert conn.execute("SELECT event_id FROM hookline.concurrency_slots ORDER BY 1").fetchall() == [
        (3,),
        (3,),
        (4,),
        (4,),
    ]


def test_events_per_hour_counts_each_event_once(conn: psycopg.Connection) -> None:
    ids = [
        conn.execute(
            "INSERT INTO hookline.events (source, delivery_id, tenant) VALUES ('s', %s, 't') RETURNING id", (f"d{i}",)
        ).fetchone()[0]  # type: ignore[index]
        for i in range(3)
    ]
    assert _one(conn, "admit_event", event_id=ids[0], tenant="t", cap=2) == (None,)
    assert _one(conn, "admit_event", event_id=ids[0], tenant="t", cap=2) == (None,)  # a rerun is not counted again
    assert _one(conn, "admit_event", event_id=ids[1], tenant="t", cap=2) == (None,)
    (reopens,) = _one(conn, "admit_event", event_id=ids[2], tenant="t", cap=2)
    assert reopens is not None
    assert conn.execute("SELECT events FROM hookline.budget_windows WHERE period = 'hour'").fetchone() == (2,)


@pytest.mark.parametrize("admission", ["admit_event", "admit_guarded"])
def test_events_per_hour_counts_in_utc_hours_whatever_the_sessions_time_zone(
    conn: psycopg.Connection, db_url: str, admission: str
) -> None:
    """date_trunc('hour', now()) truncates in the session's TimeZone: a +05:30 session's hour began at :30
    UTC, and a UTC session (the web, the worker, a DBA's psql under another zone) counted the same tenant
    in another window, so events_per_hour let twice its cap through. Both count in the UTC hour."""
    ids = [
        conn.execute(
            "INSERT INTO hookline.events (source, delivery_id, tenant) VALUES ('s', %s, 't') RETURNING id", (f"d{i}",)
        ).fetchone()[0]  # type: ignore[index]
        for i in range(3)
    ]

    def admit(session: psycopg.Connection, event_id: int) -> object:
        if admission == "admit_event":
            return _one(session, "admit_event", event_id=event_id, tenant="t", cap=2)[0]
        hour = {"max_events": [], "window_seconds": [], "count_hour": True, "cap": 2}
        return _one(session, "admit_guarded", event_id=event_id, **hour)[3]

    with (
        psycopg.connect(db_url, autocommit=True, options="-c TimeZone=Asia/Kolkata") as kolkata,
        psycopg.connect(db_url, autocommit=True, options="-c TimeZone=UTC") as utc,
    ):
        assert admit(kolkata, ids[0]) is None
        assert admit(utc, ids[1]) is None
        reopens = admit(kolkata, ids[2])  # the cap of 2 is reached in the one window both counted in
        assert reopens is not None
        (window,) = kolkata.execute(LQ["spend_today"]).fetchall()  # the +05:30 session sees that window too
        assert window[1:3] == ("hour", 2)
    windows = conn.execute(
        "SELECT extract(minute FROM window_start AT TIME ZONE 'UTC'), events FROM hookline.budget_windows "
        "WHERE period = 'hour'"
    ).fetchall()
    assert windows == [(0, 2)]  # one window, on the UTC hour
    assert conn.execute("SELECT count(*) FROM hookline.events WHERE admitted_at IS NOT NULL").fetchone() == (2,)


def test_an_alert_is_claimed_once_per_utc_hour_whatever_the_sessions_time_zone(db_url: str) -> None:
    claim = {"kind": "loop_guard", "subject": "triage tenant 't'"}
    with (
        psycopg.connect(db_url, autocommit=True, options="-c TimeZone=Asia/Kolkata") as kolkata,
        psycopg.connect(db_url, autocommit=True, options="-c TimeZone=UTC") as utc,
    ):
        assert kolkata.execute(LQ["claim_once"], claim).fetchone() == (True,)
        assert utc.execute(LQ["claim_once"], claim).fetchone() is None  # the same hour: already claimed


def test_a_loop_guard_counts_and_admits_one_event_at_a_time(conn: psycopg.Connection, db_url: str) -> None:
    """hookline.admit_guarded_v1: a second admission of the same tenant waits for the first to commit,
    then counts it (the worker's events started together never all see room)."""
    ids = [
        conn.execute(
            "INSERT INTO hookline.events (source, delivery_id, tenant) VALUES ('s', %s, 't') RETURNING id", (f"d{i}",)
        ).fetchone()[0]  # type: ignore[index]
        for i in range(3)
    ]
    guard = {"max_events": [1], "window_seconds": [60.0], "count_hour": True, "cap": 2}
    with psycopg.connect(db_url) as first, ThreadPoolExecutor(1) as pool:
        assert first.execute(LQ["admit_guarded"], {"event_id": ids[0], **guard}).fetchone() == (None,) * 4
        second = pool.submit(_one, conn, "admit_guarded", event_id=ids[1], **guard)
        time.sleep(0.3)
        assert not second.done()  # the first admission is not committed yet: the second waits for it
        first.commit()
        blocked, n, frees_at, reopens = second.result(timeout=30)
    assert (blocked, n, reopens) == (1, 1, None) and frees_at is not None
    assert _one(conn, "admit_guarded", event_id=ids[0], **guard) == (None,) * 4  # admitted before: not counted again
    no_guard = {"max_events": [], "window_seconds": [], "count_hour": True, "cap": 1}
    (*_, reopens) = _one(conn, "admit_guarded", event_id=ids[2], **no_guard)  # events_per_hour = 1 is full
    assert reopens is not None
    assert conn.execute("SELECT events FROM hookline.budget_windows WHERE period = 'hour'").fetchone() == (1,)
    assert conn.execute("SELECT count(*) FROM hookline.events WHERE admitted_at IS NOT NULL").fetchone() == (1,)


def test_breaker_opens_pauses_probes_once_and_closes(conn: psycopg.Connection) -> None:
    rec = {"model": "m", "failures": 2, "window_seconds": 60, "open_seconds": 30, "error": "529"}
    assert _one(conn, "breaker_record", ok=False, **rec) == ("closed", False)
    assert _one(conn, "breaker_record", ok=False, **rec) == ("open", True)
    verdict, retry_at, _ = _one(conn, "breaker_acquire", model="m", probe_timeout=120)
    assert verdict == "open" and retry_at is not None
    assert conn.execute("SELECT state, state_code FROM hookline.breaker_state").fetchall() == [("open", 1)]
    conn.execute("UPDATE hookline.breakers SET open_until = now() - interval '1 second'")
    assert conn.execute("SELECT state FROM hookline.breaker_state").fetchall() == [("half_open",)]
    assert _one(conn, "breaker_acquire", model="m", probe_timeout=120)[0] == "probe"
    assert _one(conn, "breaker_acquire", model="m", probe_timeout=120)[0] == "open"  # one probe only
    assert _one(conn, "breaker_record", ok=True, **rec) == ("closed", True)
    assert _one(conn, "breaker_acquire", model="m", probe_timeout=120)[0] == "closed"


BREAKER_5 = {"model": "m", "failures": 5, "window_seconds": 60, "open_seconds": 30, "error": "529"}


def test_breaker_opens_after_failures_within_the_window_whatever_succeeded_in_between(
    conn: psycopg.Connection,
) -> None:
    """A partial outage: every other call fails. Each success used to reset the count, so only 5 failures
    in a row opened it; 5 failures within window_seconds do, as the README says."""
    for _ in range(4):
        assert _one(conn, "breaker_record", ok=False, **BREAKER_5) == ("closed", False)
        assert _one(conn, "breaker_record", ok=True, **BREAKER_5) == ("closed", False)
    assert _one(conn, "breaker_record", ok=False, **BREAKER_5) == ("open", True)
    assert conn.execute("SELECT state, failures FROM hookline.breaker_state").fetchall() == [("open", 5)]


def _seconds_pass(conn: psycopg.Connection, seconds: int) -> None:
    """The breaker's recorded failures happened ``seconds`` earlier than they did."""
    conn.execute(
        "UPDATE hookline.breakers SET failed_at = ARRAY(SELECT t - make_interval(secs => %s) FROM unnest(failed_at) t)",
        (seconds,),
    )


def test_breaker_counts_only_the_failures_of_the_last_window(conn: psycopg.Connection) -> None:
    for _ in range(5):  # one failure every 21 s: never 5 within 60 s
        assert _one(conn, "breaker_record", ok=False, **BREAKER_5) == ("closed", False)
        _seconds_pass(conn, 21)
    assert conn.execute("SELECT failures FROM hookline.breakers").fetchone() == (3,)  # 21 s, 42 s and 63 s ago
    assert _one(conn, "breaker_record", ok=False, **BREAKER_5) == ("closed", False)  # 0, 21, 42 s ago: 3
    assert _one(conn, "breaker_record", ok=False, **BREAKER_5) == ("closed", False)  # 4
    assert _one(conn, "breaker_record", ok=False, **BREAKER_5) == ("open", True)  # 5 within the last 60 s
    conn.execute("UPDATE hookline.breakers SET open_until = now() - interval '1 second'")
    assert _one(conn, "breaker_acquire", model="m", probe_timeout=120)[0] == "probe"
    assert _one(conn, "breaker_record", ok=True, **BREAKER_5) == ("closed", True)  # the probe's success
    assert _one(conn, "breaker_record", ok=False, **BREAKER_5) == ("closed", False)  # the old failures forgotten
    assert conn.execute("SELECT failures FROM hookline.breakers").fetchone() == (1,)


def test_event_priority_becomes_the_job_priority(conn: psycopg.Connection) -> None:
    conn.execute("INSERT INTO hookline.events (source, delivery_id, priority) VALUES ('s', 'urgent', 10)")
    conn.execute("INSERT INTO hookline.events (source, delivery_id) VALUES ('s', 'routine')")
    jobs = conn.execute("SELECT args->>'event_id', priority FROM procrastinate_jobs ORDER BY id").fetchall()
    assert [p for _, p in jobs] == [10, 0]


def test_costs_daily_sums_per_tenant_pipeline_and_model(conn: psycopg.Connection) -> None:
    (eid,) = conn.execute(
        "INSERT INTO hookline.events (source, delivery_id, tenant) VALUES ('s', 'c1', 'acme') RETURNING id"
    ).fetchone() or (0,)
    for model, cost in (("a", "0.5"), ("a", "0.25"), ("b", "1")):
        conn.execute(
            "INSERT INTO hookline.llm_calls (event_id, pipeline, model, status, request, input_tokens, output_tokens,"
            " cost_usd) VALUES (%s, 'p', %s, 'failed', '{}', 10, 5, %s)",
            (eid, model, cost),
        )
    rows = conn.execute(
        "SELECT tenant, pipeline, model, calls, input_tokens, usd FROM hookline.costs_daily ORDER BY model"
    ).fetchall()
    assert rows == [("acme", "p", "a", 2, 20, Decimal("0.75")), ("acme", "p", "b", 1, 10, Decimal("1"))]


def test_status_spend_today_counts_the_calls_costs_daily_counts(conn: psycopg.Connection) -> None:
    """`hookline status` (spend_today of sql/queries/observe.sql) and hookline.costs_daily agree: a dry
    run was never sent, so neither counts it as a model call."""
    (eid,) = conn.execute(
        "INSERT INTO hookline.events (source, delivery_id, tenant) VALUES ('s', 'c1', 'acme') RETURNING id"
    ).fetchone() or (0,)
    for status, model in (("dry_run", "a"), ("dry_run", "a"), ("dry_run", "b"), ("succeeded", "a"), ("failed", "a")):
        conn.execute(
            "INSERT INTO hookline.llm_calls (event_id, pipeline, model, status, request, input_tokens, output_tokens,"
            " cost_usd) VALUES (%s, 'p', %s, %s, '{}', 10, 5, 0.5)",
            (eid, model, status),
        )
    shown = conn.execute(queries("observe")["spend_today"]).fetchall()
    daily = conn.execute(
        "SELECT coalesce(tenant, ''), model, sum(calls), sum(input_tokens), sum(output_tokens), sum(usd) "
        "FROM hookline.costs_daily WHERE day = (now() AT TIME ZONE 'UTC')::date GROUP BY 1, 2 ORDER BY 2"
    ).fetchall()
    assert shown == [("acme", "a", 2, 20, 10, Decimal("1"))]  # model b: only dry runs, no calls
    assert shown == daily


def test_status_shows_todays_spend_against_the_caps(conn: psycopg.Connection) -> None:
    from app.cli.spend import spend_today
    from app.core.config import parse_config

    config = parse_config({"tenants": {"*": {"usd_per_day": 20.0}, "acme": {"tokens_per_day": 1000}}})
    _, day, _, rid = _one(
        conn, "reserve_budget", tenant="acme", tokens=10, usd=Decimal(0), tokens_cap=None, usd_cap=None, **LEASE
    )[:4]
    _one(
        conn,
        "settle_budget",
        reservation_id=rid,
        tenant="acme",
        day_start=day,
        tokens=120,
        usd=Decimal("0.5"),
    )
    (spend,) = spend_today(conn, config)
    assert spend["tenant"] == "acme" and spend["tokens_today"] == 120 and spend["usd_today"] == 0.5
    assert (spend["tokens_per_day"], spend["usd_per_day"]) == (1000, 20.0)
