-- A tenant's day cap filled only by reservations of calls in flight holds an event until those calls
-- settle, not until the next UTC day.
--
-- reserve_budget_v2 refuses a call when settled + reserved + this call's worst case is over a cap,
-- and says the window reopens tomorrow. But a reservation is a call's worst case (estimated input +
-- max_tokens) and settles a second later at what the call really used: with two events of one tenant
-- arriving together, the second was held until the next UTC day although the tenant had spent a
-- fraction of its cap. reserve_budget_v3 tells the two refusals apart: reserved_only is true when the
-- settled spend alone leaves room for this call (only calls in flight are in the way), with how many
-- of the tenant's reservations are in flight today and when the earliest lease among them ends; the
-- worker then retries shortly instead of waiting for the window. reserve_budget_v2 stays for workers
-- of the previous release during a rolling deploy.

CREATE FUNCTION hookline.reserve_budget_v3(
    p_tenant text, p_tokens bigint, p_usd numeric, p_tokens_cap bigint, p_usd_cap numeric,
    p_event_id bigint, p_kind text, p_lease_seconds double precision
) RETURNS TABLE (
    granted boolean, day_start timestamptz, reopens_at timestamptz, reservation_id bigint,
    reserved_only boolean, in_flight integer, frees_at timestamptz
)
LANGUAGE plpgsql AS $$
DECLARE
    day timestamptz := date_trunc('day', now() AT TIME ZONE 'UTC') AT TIME ZONE 'UTC';
    rid bigint;
    w hookline.budget_windows%ROWTYPE;
    n integer;
    earliest timestamptz;
BEGIN
    INSERT INTO hookline.budget_windows (tenant, period, window_start)
    VALUES (p_tenant, 'day', day) ON CONFLICT DO NOTHING;
    -- reservations of killed workers: their lease ended, they stop counting
    WITH gone AS (
        DELETE FROM hookline.budget_reservations r
        WHERE r.tenant = p_tenant AND r.expires_at < now()
        RETURNING r.window_start, r.tokens, r.usd
    ), sums AS (
        SELECT g.window_start, sum(g.tokens) AS tokens, sum(g.usd) AS usd FROM gone g GROUP BY g.window_start
    )
    UPDATE hookline.budget_windows bw
    SET reserved_tokens = greatest(0, bw.reserved_tokens - s.tokens),
        reserved_usd = greatest(0, bw.reserved_usd - s.usd)
    FROM sums s
    WHERE bw.tenant = p_tenant AND bw.period = 'day' AND bw.window_start = s.window_start;
    UPDATE hookline.budget_windows bw
    SET reserved_tokens = bw.reserved_tokens + p_tokens, reserved_usd = bw.reserved_usd + p_usd
    WHERE bw.tenant = p_tenant AND bw.period = 'day' AND bw.window_start = day
      AND (p_tokens_cap IS NULL OR bw.tokens + bw.reserved_tokens + p_tokens <= p_tokens_cap)
      AND (p_usd_cap IS NULL OR bw.usd + bw.reserved_usd + p_usd <= p_usd_cap);
    IF NOT FOUND THEN
        -- refused: is it the settled spend, or only the reservations of calls in flight?
        SELECT * INTO w FROM hookline.budget_windows bw
        WHERE bw.tenant = p_tenant AND bw.period = 'day' AND bw.window_start = day;
        SELECT count(*), min(r.expires_at) INTO n, earliest FROM hookline.budget_reservations r
        WHERE r.tenant = p_tenant AND r.window_start = day;
        RETURN QUERY SELECT false, day, day + interval '1 day', NULL::bigint,
            n > 0
              AND (p_tokens_cap IS NULL OR w.tokens + p_tokens <= p_tokens_cap)
              AND (p_usd_cap IS NULL OR w.usd + p_usd <= p_usd_cap),
            n, earliest;
        RETURN;
    END IF;
    INSERT INTO hookline.budget_reservations (tenant, window_start, event_id, kind, tokens, usd, expires_at)
    VALUES (p_tenant, day, p_event_id, p_kind, p_tokens, p_usd, now() + make_interval(secs => p_lease_seconds))
    RETURNING id INTO rid;
    RETURN QUERY SELECT true, day, day + interval '1 day', rid, false, NULL::integer, NULL::timestamptz;
END;
$$;
COMMENT ON FUNCTION hookline.reserve_budget_v3(text, bigint, numeric, bigint, numeric, bigint, text, double precision) IS
  'reserve_budget_v2, telling its refusals apart: first reclaim the tenant''s reservations whose lease ended, '
  'then reserve the call''s worst case in the UTC day if settled + reserved + this stays within both caps '
  '(granted, reservation_id; settled by settle_budget_v2). granted=false: nothing reserved; reserved_only is '
  'true when the settled spend alone leaves room for this call (the cap is full only of reservations of calls '
  'in flight: wait for them to settle, not for reopens_at), in_flight counts the tenant''s reservations of the '
  'day and frees_at is the earliest of their lease ends.';
