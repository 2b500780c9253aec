-- Flow control, the rest of issue 10: concurrency caps per tenant and ordering key (leased slots, so a
-- killed worker's slot frees itself), budget reservations with a lease (a worker killed mid-call no
-- longer holds its reservation until the day ends), budgets for Message Batches requests, and
-- infrastructure failures counted on the event (throttle reschedules are not failures).

-- ---------------------------------------------------------------------------------------------
-- Concurrency caps: [pipelines.X] concurrency = { per_tenant, per_key }
-- ---------------------------------------------------------------------------------------------
CREATE TABLE hookline.concurrency_slots (
    pipeline    text        NOT NULL,
    scope       text        NOT NULL,
    subject     text        NOT NULL,
    event_id    bigint      NOT NULL,
    acquired_at timestamptz NOT NULL DEFAULT now(),
    expires_at  timestamptz NOT NULL,
    CONSTRAINT concurrency_slots_pkey PRIMARY KEY (pipeline, scope, subject, event_id),
    CONSTRAINT concurrency_slots_scope_check CHECK (scope IN ('tenant', 'key'))
);
CREATE INDEX concurrency_slots_event_idx ON hookline.concurrency_slots (event_id);
COMMENT ON TABLE hookline.concurrency_slots IS
  'Events in flight per pipeline and tenant (scope tenant) or ordering key (scope key), for pipelines with '
  'concurrency = { per_tenant, per_key }, shared by every worker. A job takes its slots when the event is '
  'admitted and gives them back when the run ends (finished, failed, held); a slot whose expires_at passed '
  '(its worker was killed) no longer counts and is deleted by the next acquire.';
COMMENT ON COLUMN hookline.concurrency_slots.pipeline IS 'The pipeline whose cap this slot counts against.';
COMMENT ON COLUMN hookline.concurrency_slots.scope IS 'tenant (per_tenant) or key (per_key).';
COMMENT ON COLUMN hookline.concurrency_slots.subject IS 'The tenant ('''' for none), or source:ordering_key.';
COMMENT ON COLUMN hookline.concurrency_slots.event_id IS 'The event holding the slot.';
COMMENT ON COLUMN hookline.concurrency_slots.acquired_at IS 'When the slot was (last) taken.';
COMMENT ON COLUMN hookline.concurrency_slots.expires_at IS 'Lease end: the sum of the event''s pipelines'' timeout_seconds plus a minute.';
COMMENT ON CONSTRAINT concurrency_slots_pkey ON hookline.concurrency_slots IS 'One slot per pipeline, scope, subject and event.';
COMMENT ON CONSTRAINT concurrency_slots_scope_check ON hookline.concurrency_slots IS 'Allowed scopes.';
COMMENT ON INDEX hookline.concurrency_slots_event_idx IS 'Release every slot of an event.';

CREATE FUNCTION hookline.acquire_slots_v1(
    p_event_id bigint, p_pipelines text[], p_scopes text[], p_subjects text[], p_caps integer[],
    p_lease_seconds double precision
) RETURNS TABLE (granted boolean, blocked integer, in_flight bigint, frees_at timestamptz)
LANGUAGE plpgsql AS $$
DECLARE
    n bigint;
    soonest timestamptz;
BEGIN
    FOR i IN 1 .. coalesce(array_length(p_pipelines, 1), 0) LOOP
        -- one transaction at a time per (pipeline, scope, subject); callers pass them sorted: no deadlock
        PERFORM pg_advisory_xact_lock(
            hashtextextended('hookline.slots:' || p_pipelines[i] || ':' || p_scopes[i] || ':' || p_subjects[i], 0));
        DELETE FROM hookline.concurrency_slots s
        WHERE s.pipeline = p_pipelines[i] AND s.scope = p_scopes[i] AND s.subject = p_subjects[i]
          AND s.expires_at < now();
        SELECT count(*), min(s.expires_at) INTO n, soonest FROM hookline.concurrency_slots s
        WHERE s.pipeline = p_pipelines[i] AND s.scope = p_scopes[i] AND s.subject = p_subjects[i]
          AND s.event_id <> p_event_id;
        IF n >= p_caps[i] THEN
            RETURN QUERY SELECT false, i, n, soonest;  -- nothing taken
            RETURN;
        END IF;
    END LOOP;
    INSERT INTO hookline.concurrency_slots AS s (pipeline, scope, subject, event_id, expires_at)
    SELECT u.p, u.sc, u.su, p_event_id, now() + make_interval(secs => p_lease_seconds)
    FROM unnest(p_pipelines, p_scopes, p_subjects) AS u(p, sc, su)
    ON CONFLICT (pipeline, scope, subject, event_id)
    DO UPDATE SET expires_at = EXCLUDED.expires_at, acquired_at = now();
    RETURN QUERY SELECT true, NULL::integer, NULL::bigint, NULL::timestamptz;
END;
$$;
COMMENT ON FUNCTION hookline.acquire_slots_v1(bigint, text[], text[], text[], integer[], double precision) IS
  'Take every slot the event needs (parallel arrays: pipeline, scope, subject, cap), all or none: granted, '
  'or the 1-based index of the first full one with its count in flight and when its earliest lease ends. '
  'Expired slots (killed workers) are deleted first; the event''s own slots do not count against it.';

-- ---------------------------------------------------------------------------------------------
-- Budget reservations with a lease
-- ---------------------------------------------------------------------------------------------
CREATE TABLE hookline.budget_reservations (
    id           bigint GENERATED ALWAYS AS IDENTITY,
    tenant       text           NOT NULL,
    window_start timestamptz    NOT NULL,
    event_id     bigint,
    kind         text           NOT NULL DEFAULT 'call',
    tokens       bigint         NOT NULL,
    usd          numeric(14, 8) NOT NULL,
    created_at   timestamptz    NOT NULL DEFAULT now(),
    expires_at   timestamptz    NOT NULL,
    CONSTRAINT budget_reservations_pkey PRIMARY KEY (id),
    CONSTRAINT budget_reservations_kind_check CHECK (kind IN ('call', 'batch_api'))
);
CREATE INDEX budget_reservations_expiry_idx ON hookline.budget_reservations (tenant, expires_at);
COMMENT ON TABLE hookline.budget_reservations IS
  'One row per budget reservation in flight (its amounts are also in budget_windows.reserved_tokens / '
  'reserved_usd). Settling deletes it; one whose expires_at passed (its worker was killed mid-call) is '
  'reclaimed by the tenant''s next reservation, so it stops counting against the cap.';
COMMENT ON COLUMN hookline.budget_reservations.id IS 'Surrogate key (the worker settles by it).';
COMMENT ON COLUMN hookline.budget_reservations.tenant IS 'hookline.events.tenant ('''' for none).';
COMMENT ON COLUMN hookline.budget_reservations.window_start IS 'The UTC day (budget_windows.window_start, period day) it is reserved in.';
COMMENT ON COLUMN hookline.budget_reservations.event_id IS 'The event whose call reserved it.';
COMMENT ON COLUMN hookline.budget_reservations.kind IS 'call (a Messages API call) or batch_api (a Message Batches request, settled when its result is read).';
COMMENT ON COLUMN hookline.budget_reservations.tokens IS 'Reserved tokens (estimated input + max_tokens).';
COMMENT ON COLUMN hookline.budget_reservations.usd IS 'Reserved USD (batch price for batch_api).';
COMMENT ON COLUMN hookline.budget_reservations.created_at IS 'When it was reserved.';
COMMENT ON COLUMN hookline.budget_reservations.expires_at IS 'Lease end: pipeline timeout_seconds plus a minute for a call, 25 hours for a batch request.';
COMMENT ON CONSTRAINT budget_reservations_pkey ON hookline.budget_reservations IS 'Primary key.';
COMMENT ON CONSTRAINT budget_reservations_kind_check ON hookline.budget_reservations IS 'Allowed kinds.';
COMMENT ON INDEX hookline.budget_reservations_expiry_idx IS 'Reclaim a tenant''s expired reservations.';

CREATE FUNCTION hookline.reserve_budget_v2(
    p_tenant text, p_tokens bigint, p_usd numeric, p_tokens_cap bigint, p_usd_cap numeric,
    p_event_id bigint, p_kind text, p_lease_seconds double precision
) RETURNS TABLE (granted boolean, day_start timestamptz, reopens_at timestamptz, reservation_id bigint)
LANGUAGE plpgsql AS $$
DECLARE
    day timestamptz := date_trunc('day', now() AT TIME ZONE 'UTC') AT TIME ZONE 'UTC';
    rid bigint;
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
    UPDATE hookline.budget_windows w
    SET reserved_tokens = greatest(0, w.reserved_tokens - s.tokens),
        reserved_usd = greatest(0, w.reserved_usd - s.usd)
    FROM sums s
    WHERE w.tenant = p_tenant AND w.period = 'day' AND w.window_start = s.window_start;
    UPDATE hookline.budget_windows w
    SET reserved_tokens = w.reserved_tokens + p_tokens, reserved_usd = w.reserved_usd + p_usd
    WHERE w.tenant = p_tenant AND w.period = 'day' AND w.window_start = day
      AND (p_tokens_cap IS NULL OR w.tokens + w.reserved_tokens + p_tokens <= p_tokens_cap)
      AND (p_usd_cap IS NULL OR w.usd + w.reserved_usd + p_usd <= p_usd_cap);
    IF NOT FOUND THEN
        RETURN QUERY SELECT false, day, day + interval '1 day', NULL::bigint;
        RETURN;
    END IF;
    INSERT INTO hookline.budget_reservations (tenant, window_start, event_id, kind, tokens, usd, expires_at)
    VALUES (p_tenant, day, p_event_id, p_kind, p_tokens, p_usd, now() + make_interval(secs => p_lease_seconds))
    RETURNING id INTO rid;
    RETURN QUERY SELECT true, day, day + interval '1 day', rid;
END;
$$;
COMMENT ON FUNCTION hookline.reserve_budget_v2(text, bigint, numeric, bigint, numeric, bigint, text, double precision) IS
  'reserve_budget_v1 with a lease: first reclaim the tenant''s reservations whose lease ended, then reserve '
  'the call''s worst case in the UTC day if settled + reserved + this stays within both caps, recording it in '
  'budget_reservations (reservation_id, settled by settle_budget_v2). granted=false: nothing reserved.';

CREATE FUNCTION hookline.settle_budget_v2(
    p_reservation_id bigint, p_tenant text, p_window_start timestamptz, p_tokens bigint, p_usd numeric
) RETURNS TABLE (day_tokens bigint, day_usd numeric)
LANGUAGE plpgsql AS $$
DECLARE
    r_tokens bigint := 0;
    r_usd numeric := 0;
BEGIN
    DELETE FROM hookline.budget_reservations r WHERE r.id = p_reservation_id
    RETURNING r.tokens, r.usd INTO r_tokens, r_usd;  -- nothing: already reclaimed after its lease
    RETURN QUERY
    UPDATE hookline.budget_windows w
    SET reserved_tokens = greatest(0, w.reserved_tokens - coalesce(r_tokens, 0)),
        reserved_usd = greatest(0, w.reserved_usd - coalesce(r_usd, 0)),
        tokens = w.tokens + p_tokens,
        usd = w.usd + p_usd
    WHERE w.tenant = p_tenant AND w.period = 'day' AND w.window_start = p_window_start
    RETURNING w.tokens, w.usd;
END;
$$;
COMMENT ON FUNCTION hookline.settle_budget_v2(bigint, text, timestamptz, bigint, numeric) IS
  'After a call (or a Message Batches result): release its reservation (unless its lease already reclaimed '
  'it) and add what it actually used; returns the window''s totals.';

-- ---------------------------------------------------------------------------------------------
-- Message Batches requests carry their reservation until their result is read
-- ---------------------------------------------------------------------------------------------
ALTER TABLE hookline.batch_items ADD COLUMN reservation jsonb;
COMMENT ON COLUMN hookline.batch_items.reservation IS
  'kind batch_api: the tenant budget reservation and model bucket share taken before the request was queued '
  '(reservation id, tenant, day, tokens, USD at batch price, model tokens taken); settled when its result is read.';

-- ---------------------------------------------------------------------------------------------
-- Infrastructure failures, counted on the event (procrastinate's attempts count throttle holds too)
-- ---------------------------------------------------------------------------------------------
ALTER TABLE hookline.events ADD COLUMN infra_failures integer NOT NULL DEFAULT 0;
COMMENT ON COLUMN hookline.events.infra_failures IS
  'Job runs of this event that failed outside the pipelines'' own error handling (the database failed while '
  'claiming, finishing or recording it); the event goes dead after 50. Throttle holds never count.';
