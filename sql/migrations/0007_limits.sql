-- Safe to leave running: job priorities, shared model rate limits, per-tenant budgets (reserve before
-- the call, settle after), circuit breakers, loop-guard bookkeeping and the daily cost view.
-- Every limit shared by worker processes lives here, changed by one atomic statement or a
-- PL/pgSQL function (versioned names: a changed signature is a new _vN, never an edit).

-- ---------------------------------------------------------------------------------------------
-- events: priority and admission
-- ---------------------------------------------------------------------------------------------
ALTER TABLE hookline.events ADD COLUMN priority integer NOT NULL DEFAULT 0;
ALTER TABLE hookline.events ADD COLUMN admitted_at timestamptz;
COMMENT ON COLUMN hookline.events.priority IS
  'procrastinate job priority (higher runs first): the highest priority of the pipelines matching the '
  'event, set by the web process at ingest. 0 for rows written by other means unless they set it.';
COMMENT ON COLUMN hookline.events.admitted_at IS
  'When the event was first counted against its tenant''s events_per_hour and the loop guard; NULL '
  'until a worker admitted it (a throttled event that never ran stays NULL).';
CREATE INDEX events_tenant_admitted_idx ON hookline.events (tenant, admitted_at)
    WHERE admitted_at IS NOT NULL;
COMMENT ON INDEX hookline.events_tenant_admitted_idx IS 'Loop guard per tenant: events admitted in a window.';
CREATE INDEX events_key_admitted_idx ON hookline.events (source, ordering_key, admitted_at)
    WHERE admitted_at IS NOT NULL AND ordering_key IS NOT NULL;
COMMENT ON INDEX hookline.events_key_admitted_idx IS 'Loop guard per ordering key: events admitted in a window.';

CREATE OR REPLACE FUNCTION hookline.enqueue_event() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
    PERFORM hookline.defer_job(
        'hookline',
        'hookline:process_event',
        jsonb_build_object('event_id', NEW.id),
        CASE WHEN NEW.ordering_key IS NULL THEN NULL
             ELSE 'hookline:' || NEW.source || ':' || NEW.ordering_key END,
        NULL,
        NEW.priority);
    RETURN NEW;
END;
$$;
COMMENT ON FUNCTION hookline.enqueue_event() IS
  'Trigger function: defers process_event(event_id) for a newly inserted queued event, at the event''s '
  'priority, with its ordering key as procrastinate lock so events of one entity run one at a time, in order.';

-- ---------------------------------------------------------------------------------------------
-- llm_calls: which model answered and why
-- ---------------------------------------------------------------------------------------------
ALTER TABLE hookline.llm_calls ADD COLUMN requested_model text;
ALTER TABLE hookline.llm_calls ADD COLUMN route text;
ALTER TABLE hookline.llm_calls ADD COLUMN stop_reason text;
COMMENT ON COLUMN hookline.llm_calls.requested_model IS
  'The model the pipeline asked for. model is the one that was called: they differ on a fallback or an escalation.';
COMMENT ON COLUMN hookline.llm_calls.route IS
  'Why this model answered: primary; fallback:overloaded (529 from the primary); fallback:breaker_open; '
  'escalate:FIELD (the first answer''s boolean FIELD was true); retry:max_tokens (cut answer, larger budget); '
  'repair (schema repair turn). NULL for calls made before 0006.';
COMMENT ON COLUMN hookline.llm_calls.stop_reason IS
  'The response''s stop_reason (end_turn, max_tokens, refusal, …); a refusal is kept here and in response.';

-- ---------------------------------------------------------------------------------------------
-- Shared model rate limits: one token bucket row per model
-- ---------------------------------------------------------------------------------------------
CREATE TABLE hookline.model_buckets (
    model          text PRIMARY KEY,
    requests       double precision NOT NULL DEFAULT 0,
    input_tokens   double precision NOT NULL DEFAULT 0,
    output_tokens  double precision NOT NULL DEFAULT 0,
    refilled_at    timestamptz      NOT NULL DEFAULT clock_timestamp(),
    blocked_until  timestamptz,
    blocked_reason text
);
COMMENT ON TABLE hookline.model_buckets IS
  'Token buckets of [models."MODEL"] requests/input/output per minute, shared by every worker process. '
  'Refilled continuously at limit/60 per second up to limit; a call takes 1 request, its estimated input '
  'tokens and its max_tokens, and gives back what it did not use. blocked_until holds the model after a 429 '
  'or a zero anthropic-ratelimit-*-remaining header.';
COMMENT ON COLUMN hookline.model_buckets.model IS 'Model id.';
COMMENT ON COLUMN hookline.model_buckets.requests IS 'Requests available now (as of refilled_at).';
COMMENT ON COLUMN hookline.model_buckets.input_tokens IS 'Input tokens available now (may be negative after an underestimate).';
COMMENT ON COLUMN hookline.model_buckets.output_tokens IS 'Output tokens available now (may be negative after an underestimate).';
COMMENT ON COLUMN hookline.model_buckets.refilled_at IS 'When the levels above were last brought up to date.';
COMMENT ON COLUMN hookline.model_buckets.blocked_until IS 'No call to this model before this time (API 429 retry-after or rate-limit reset).';
COMMENT ON COLUMN hookline.model_buckets.blocked_reason IS 'Why blocked_until was set.';
COMMENT ON CONSTRAINT model_buckets_pkey ON hookline.model_buckets IS 'One bucket per model.';

CREATE FUNCTION hookline.take_model_capacity_v1(
    p_model text, p_rpm integer, p_itpm integer, p_otpm integer, p_input bigint, p_output bigint
) RETURNS double precision
LANGUAGE plpgsql AS $$
DECLARE
    b hookline.model_buckets%ROWTYPE;
    t timestamptz := clock_timestamp();
    dt double precision;
    r double precision; i double precision; o double precision;
    need_i double precision := least(p_input, coalesce(p_itpm, p_input));
    need_o double precision := least(p_output, coalesce(p_otpm, p_output));
    wait double precision := 0;
BEGIN
    INSERT INTO hookline.model_buckets (model, requests, input_tokens, output_tokens, refilled_at)
    VALUES (p_model, coalesce(p_rpm, 0), coalesce(p_itpm, 0), coalesce(p_otpm, 0), t)
    ON CONFLICT (model) DO NOTHING;
    SELECT * INTO b FROM hookline.model_buckets WHERE model = p_model FOR UPDATE;
    dt := greatest(0, extract(epoch FROM t - b.refilled_at));
    r := CASE WHEN p_rpm IS NULL THEN 0 ELSE least(p_rpm, b.requests + dt * p_rpm / 60.0) END;
    i := CASE WHEN p_itpm IS NULL THEN 0 ELSE least(p_itpm, b.input_tokens + dt * p_itpm / 60.0) END;
    o := CASE WHEN p_otpm IS NULL THEN 0 ELSE least(p_otpm, b.output_tokens + dt * p_otpm / 60.0) END;
    IF b.blocked_until > t THEN
        wait := extract(epoch FROM b.blocked_until - t);
    END IF;
    IF p_rpm IS NOT NULL AND r < 1 THEN
        wait := greatest(wait, (1 - r) * 60.0 / p_rpm);
    END IF;
    IF p_itpm IS NOT NULL AND i < need_i THEN
        wait := greatest(wait, (need_i - i) * 60.0 / p_itpm);
    END IF;
    IF p_otpm IS NOT NULL AND o < need_o THEN
        wait := greatest(wait, (need_o - o) * 60.0 / p_otpm);
    END IF;
    IF wait = 0 THEN
        r := r - CASE WHEN p_rpm IS NULL THEN 0 ELSE 1 END;
        i := i - CASE WHEN p_itpm IS NULL THEN 0 ELSE need_i END;
        o := o - CASE WHEN p_otpm IS NULL THEN 0 ELSE need_o END;
    END IF;
    UPDATE hookline.model_buckets
    SET requests = r, input_tokens = i, output_tokens = o, refilled_at = t
    WHERE model = p_model;
    RETURN wait;
END;
$$;
COMMENT ON FUNCTION hookline.take_model_capacity_v1(text, integer, integer, integer, bigint, bigint) IS
  'Atomically take one request, p_input tokens and p_output tokens from the model''s bucket (limits per '
  'minute; NULL = no limit). Returns 0 when taken, else the seconds until the bucket can serve the call '
  '(nothing taken): the caller reschedules its job that far ahead instead of waiting.';

CREATE FUNCTION hookline.settle_model_capacity_v1(
    p_model text, p_input_delta bigint, p_output_delta bigint, p_itpm integer, p_otpm integer
) RETURNS void
LANGUAGE sql AS $$
    UPDATE hookline.model_buckets
    SET input_tokens = CASE WHEN p_itpm IS NULL THEN 0 ELSE least(p_itpm, input_tokens - p_input_delta) END,
        output_tokens = CASE WHEN p_otpm IS NULL THEN 0 ELSE least(p_otpm, output_tokens - p_output_delta) END
    WHERE model = p_model;
$$;
COMMENT ON FUNCTION hookline.settle_model_capacity_v1(text, bigint, bigint, integer, integer) IS
  'After a call: correct the bucket by (actual - taken) tokens; a negative delta gives unused tokens back.';

CREATE FUNCTION hookline.observe_model_limits_v1(
    p_model text, p_requests_remaining double precision, p_input_remaining double precision,
    p_output_remaining double precision, p_blocked_until timestamptz, p_reason text
) RETURNS void
LANGUAGE sql AS $$
    INSERT INTO hookline.model_buckets AS b (model, blocked_until, blocked_reason)
    VALUES (p_model, p_blocked_until, CASE WHEN p_blocked_until IS NOT NULL THEN p_reason END)
    ON CONFLICT (model) DO UPDATE
    SET requests = least(b.requests, coalesce(p_requests_remaining, b.requests)),
        input_tokens = least(b.input_tokens, coalesce(p_input_remaining, b.input_tokens)),
        output_tokens = least(b.output_tokens, coalesce(p_output_remaining, b.output_tokens)),
        blocked_until = CASE WHEN p_blocked_until > coalesce(b.blocked_until, '-infinity')
                             THEN p_blocked_until ELSE b.blocked_until END,
        blocked_reason = CASE WHEN p_blocked_until > coalesce(b.blocked_until, '-infinity')
                              THEN p_reason ELSE b.blocked_reason END;
$$;
COMMENT ON FUNCTION hookline.observe_model_limits_v1(text, double precision, double precision, double precision, timestamptz, text) IS
  'Keep the bucket in step with the API: never more left than its anthropic-ratelimit-*-remaining headers '
  'say, and no call before p_blocked_until (a 429''s retry-after, or the reset time of an exhausted limit).';

-- ---------------------------------------------------------------------------------------------
-- Per-tenant budgets: one row per tenant and window (hour for events, UTC day for tokens and USD)
-- ---------------------------------------------------------------------------------------------
CREATE TABLE hookline.budget_windows (
    tenant          text          NOT NULL,
    period          text          NOT NULL,
    window_start    timestamptz   NOT NULL,
    events          integer       NOT NULL DEFAULT 0,
    tokens          bigint        NOT NULL DEFAULT 0,
    usd             numeric(14, 8) NOT NULL DEFAULT 0,
    reserved_tokens bigint        NOT NULL DEFAULT 0,
    reserved_usd    numeric(14, 8) NOT NULL DEFAULT 0,
    alerted_at      timestamptz,
    CONSTRAINT budget_windows_pkey PRIMARY KEY (tenant, period, window_start),
    CONSTRAINT budget_windows_period_check CHECK (period IN ('hour', 'day'))
);
COMMENT ON TABLE hookline.budget_windows IS
  'Per-tenant usage against [tenants] caps, shared by every worker: events admitted per hour (period hour), '
  'tokens and USD per UTC day (period day). A call reserves its worst case before it is sent and settles '
  'its actual usage after, so a cap is never overspent by more than the calls in flight when it was reached.';
COMMENT ON COLUMN hookline.budget_windows.tenant IS 'hookline.events.tenant; '''' for events without a tenant.';
COMMENT ON COLUMN hookline.budget_windows.period IS 'hour (events_per_hour) or day (tokens_per_day, usd_per_day; UTC).';
COMMENT ON COLUMN hookline.budget_windows.window_start IS 'Start of the hour / UTC day.';
COMMENT ON COLUMN hookline.budget_windows.events IS 'Events admitted in the window (period hour).';
COMMENT ON COLUMN hookline.budget_windows.tokens IS 'Input + output tokens of settled calls (period day).';
COMMENT ON COLUMN hookline.budget_windows.usd IS 'Cost in USD of settled calls (period day).';
COMMENT ON COLUMN hookline.budget_windows.reserved_tokens IS 'Tokens reserved by calls in flight.';
COMMENT ON COLUMN hookline.budget_windows.reserved_usd IS 'USD reserved by calls in flight.';
COMMENT ON COLUMN hookline.budget_windows.alerted_at IS 'When the alert_at alert fired for this window (once per window).';
COMMENT ON CONSTRAINT budget_windows_pkey ON hookline.budget_windows IS 'One row per tenant, period and window.';
COMMENT ON CONSTRAINT budget_windows_period_check ON hookline.budget_windows IS 'Allowed periods.';

CREATE FUNCTION hookline.admit_event_v1(p_event_id bigint, p_tenant text, p_events_cap integer)
RETURNS timestamptz
LANGUAGE plpgsql AS $$
DECLARE
    already timestamptz;
    hour timestamptz := date_trunc('hour', now());
BEGIN
    SELECT admitted_at INTO already FROM hookline.events WHERE id = p_event_id;
    IF already IS NOT NULL THEN
        RETURN NULL;
    END IF;
    INSERT INTO hookline.budget_windows (tenant, period, window_start)
    VALUES (p_tenant, 'hour', hour) ON CONFLICT DO NOTHING;
    UPDATE hookline.budget_windows SET events = events + 1
    WHERE tenant = p_tenant AND period = 'hour' AND window_start = hour
      AND (p_events_cap IS NULL OR events < p_events_cap);
    IF NOT FOUND THEN
        RETURN hour + interval '1 hour';
    END IF;
    UPDATE hookline.events SET admitted_at = now() WHERE id = p_event_id;
    RETURN NULL;
END;
$$;
COMMENT ON FUNCTION hookline.admit_event_v1(bigint, text, integer) IS
  'Count an event once against its tenant''s events_per_hour: NULL when admitted (or admitted before), '
  'else when the next hour opens (nothing counted).';

CREATE FUNCTION hookline.reserve_budget_v1(
    p_tenant text, p_tokens bigint, p_usd numeric, p_tokens_cap bigint, p_usd_cap numeric
) RETURNS TABLE (granted boolean, day_start timestamptz, reopens_at timestamptz)
LANGUAGE plpgsql AS $$
DECLARE
    day timestamptz := date_trunc('day', now() AT TIME ZONE 'UTC') AT TIME ZONE 'UTC';
BEGIN
    INSERT INTO hookline.budget_windows (tenant, period, window_start)
    VALUES (p_tenant, 'day', day) ON CONFLICT DO NOTHING;
    UPDATE hookline.budget_windows w
    SET reserved_tokens = w.reserved_tokens + p_tokens, reserved_usd = w.reserved_usd + p_usd
    WHERE w.tenant = p_tenant AND w.period = 'day' AND w.window_start = day
      AND (p_tokens_cap IS NULL OR w.tokens + w.reserved_tokens + p_tokens <= p_tokens_cap)
      AND (p_usd_cap IS NULL OR w.usd + w.reserved_usd + p_usd <= p_usd_cap);
    RETURN QUERY SELECT FOUND, day, day + interval '1 day';
END;
$$;
COMMENT ON FUNCTION hookline.reserve_budget_v1(text, bigint, numeric, bigint, numeric) IS
  'Reserve a call''s worst case (tokens, USD) in the tenant''s UTC day, only if settled + reserved + this '
  'stays within both caps (NULL = no cap). granted=false: over a cap, nothing reserved; reopens_at is when '
  'the next window starts.';

CREATE FUNCTION hookline.settle_budget_v1(
    p_tenant text, p_window_start timestamptz, p_reserved_tokens bigint, p_reserved_usd numeric,
    p_tokens bigint, p_usd numeric
) RETURNS TABLE (day_tokens bigint, day_usd numeric)
LANGUAGE sql AS $$
    UPDATE hookline.budget_windows w
    SET reserved_tokens = greatest(0, w.reserved_tokens - p_reserved_tokens),
        reserved_usd = greatest(0, w.reserved_usd - p_reserved_usd),
        tokens = w.tokens + p_tokens,
        usd = w.usd + p_usd
    WHERE w.tenant = p_tenant AND w.period = 'day' AND w.window_start = p_window_start
    RETURNING w.tokens, w.usd;
$$;
COMMENT ON FUNCTION hookline.settle_budget_v1(text, timestamptz, bigint, numeric, bigint, numeric) IS
  'After a call: release its reservation and add what it actually used; returns the window''s totals.';

CREATE FUNCTION hookline.claim_alert_v1(p_tenant text, p_period text, p_window_start timestamptz)
RETURNS boolean
LANGUAGE sql AS $$
    WITH claimed AS (
        UPDATE hookline.budget_windows SET alerted_at = now()
        WHERE tenant = p_tenant AND period = p_period AND window_start = p_window_start AND alerted_at IS NULL
        RETURNING 1
    )
    SELECT EXISTS (SELECT 1 FROM claimed);
$$;
COMMENT ON FUNCTION hookline.claim_alert_v1(text, text, timestamptz) IS
  'True for exactly one caller per (tenant, period, window): the one that sends the budget alert.';

-- ---------------------------------------------------------------------------------------------
-- Circuit breakers, one row per model
-- ---------------------------------------------------------------------------------------------
CREATE TABLE hookline.breakers (
    model           text        PRIMARY KEY,
    state           text        NOT NULL DEFAULT 'closed',
    failures        integer     NOT NULL DEFAULT 0,
    window_start    timestamptz,
    opened_at       timestamptz,
    open_until      timestamptz,
    probe_at        timestamptz,
    last_error      text,
    changed_at      timestamptz NOT NULL DEFAULT now(),
    CONSTRAINT breakers_state_check CHECK (state IN ('closed', 'open', 'half_open'))
);
COMMENT ON TABLE hookline.breakers IS
  'Circuit breaker per model ([models."MODEL"].breaker), shared by every worker. closed: calls go; open: '
  'calls pause (jobs rescheduled, or the fallback model answers) until open_until; half_open: one probe '
  'call is out, its success closes the breaker and its failure opens it again.';
COMMENT ON COLUMN hookline.breakers.model IS 'Model id.';
COMMENT ON COLUMN hookline.breakers.state IS 'closed, open or half_open.';
COMMENT ON COLUMN hookline.breakers.failures IS 'Failed calls (429, 5xx, 529, connection errors) in the current window.';
COMMENT ON COLUMN hookline.breakers.window_start IS 'Start of the failure-counting window (window_seconds).';
COMMENT ON COLUMN hookline.breakers.opened_at IS 'When the breaker last opened.';
COMMENT ON COLUMN hookline.breakers.open_until IS 'Earliest time of the half-open probe.';
COMMENT ON COLUMN hookline.breakers.probe_at IS 'When the half-open probe started.';
COMMENT ON COLUMN hookline.breakers.last_error IS 'The last failure counted.';
COMMENT ON COLUMN hookline.breakers.changed_at IS 'When the state last changed.';
COMMENT ON CONSTRAINT breakers_pkey ON hookline.breakers IS 'One breaker per model.';
COMMENT ON CONSTRAINT breakers_state_check ON hookline.breakers IS 'Allowed breaker states.';

CREATE FUNCTION hookline.breaker_acquire_v1(p_model text, p_probe_timeout_seconds double precision)
RETURNS TABLE (verdict text, retry_at timestamptz)
LANGUAGE plpgsql AS $$
DECLARE
    b hookline.breakers%ROWTYPE;
BEGIN
    SELECT * INTO b FROM hookline.breakers WHERE model = p_model FOR UPDATE;
    IF NOT FOUND OR b.state = 'closed' THEN
        RETURN QUERY SELECT 'closed'::text, NULL::timestamptz;
    ELSIF (b.state = 'open' AND now() >= b.open_until)
       OR (b.state = 'half_open' AND b.probe_at < now() - make_interval(secs => p_probe_timeout_seconds)) THEN
        UPDATE hookline.breakers SET state = 'half_open', probe_at = now(), changed_at = now() WHERE model = p_model;
        RETURN QUERY SELECT 'probe'::text, NULL::timestamptz;
    ELSE
        RETURN QUERY SELECT 'open'::text,
            greatest(coalesce(b.open_until, now()), coalesce(b.probe_at + make_interval(secs => p_probe_timeout_seconds), now()));
    END IF;
END;
$$;
COMMENT ON FUNCTION hookline.breaker_acquire_v1(text, double precision) IS
  'May a call to this model go? closed: yes; probe: yes, as the one half-open probe (open_until passed, '
  'or the previous probe is older than p_probe_timeout_seconds); open: no, retry_at says when to ask again.';

CREATE FUNCTION hookline.breaker_record_v1(
    p_model text, p_ok boolean, p_failures integer, p_window_seconds double precision,
    p_open_seconds double precision, p_error text
) RETURNS TABLE (new_state text, flipped boolean)
LANGUAGE plpgsql AS $$
DECLARE
    b hookline.breakers%ROWTYPE;
BEGIN
    IF p_ok THEN
        SELECT * INTO b FROM hookline.breakers k WHERE k.model = p_model;
        IF NOT FOUND OR (b.state = 'closed' AND b.failures = 0) THEN
            RETURN QUERY SELECT 'closed'::text, false;
            RETURN;
        END IF;
        SELECT * INTO b FROM hookline.breakers k WHERE k.model = p_model FOR UPDATE;
        UPDATE hookline.breakers k SET state = 'closed', failures = 0, window_start = NULL, probe_at = NULL,
               changed_at = CASE WHEN b.state <> 'closed' THEN now() ELSE k.changed_at END
        WHERE k.model = p_model;
        RETURN QUERY SELECT 'closed'::text, b.state <> 'closed';
        RETURN;
    END IF;
    INSERT INTO hookline.breakers (model) VALUES (p_model) ON CONFLICT DO NOTHING;
    SELECT * INTO b FROM hookline.breakers k WHERE k.model = p_model FOR UPDATE;
    IF b.state IN ('half_open', 'open') THEN
        UPDATE hookline.breakers k SET state = 'open', open_until = now() + make_interval(secs => p_open_seconds),
               opened_at = CASE WHEN b.state = 'half_open' THEN now() ELSE k.opened_at END,
               probe_at = NULL, last_error = p_error, changed_at = now()
        WHERE k.model = p_model;
        RETURN QUERY SELECT 'open'::text, b.state = 'half_open';
        RETURN;
    END IF;
    IF b.window_start IS NULL OR b.window_start < now() - make_interval(secs => p_window_seconds) THEN
        b.failures := 1;
        b.window_start := now();
    ELSE
        b.failures := b.failures + 1;
    END IF;
    IF b.failures >= p_failures THEN
        UPDATE hookline.breakers k SET state = 'open', failures = b.failures, window_start = b.window_start,
               opened_at = now(), open_until = now() + make_interval(secs => p_open_seconds),
               last_error = p_error, changed_at = now()
        WHERE k.model = p_model;
        RETURN QUERY SELECT 'open'::text, true;
    ELSE
        UPDATE hookline.breakers k SET failures = b.failures, window_start = b.window_start, last_error = p_error
        WHERE k.model = p_model;
        RETURN QUERY SELECT 'closed'::text, false;
    END IF;
END;
$$;
COMMENT ON FUNCTION hookline.breaker_record_v1(text, boolean, integer, double precision, double precision, text) IS
  'Record a call''s outcome: a success closes the breaker; p_failures failures within p_window_seconds '
  'open it for p_open_seconds; a failed half-open probe opens it again. changed = the state flipped.';

CREATE VIEW hookline.breaker_state AS
SELECT b.model,
       CASE WHEN b.state = 'open' AND b.open_until <= now() THEN 'half_open' ELSE b.state END AS state,
       CASE WHEN b.state = 'closed' THEN 0 WHEN b.state = 'half_open' THEN 2 ELSE 1 END AS state_code,
       b.failures,
       b.opened_at,
       b.open_until,
       b.last_error,
       b.changed_at
FROM hookline.breakers b;
COMMENT ON VIEW hookline.breaker_state IS
  'Circuit breaker of each model that ever failed, for DBAs and /metrics (state_code: 0 closed, 1 open, '
  '2 half-open). An open breaker whose open_until passed shows half_open: its next call is the probe.';
COMMENT ON COLUMN hookline.breaker_state.model IS 'Model id.';
COMMENT ON COLUMN hookline.breaker_state.state IS 'closed, open or half_open (as the next call will see it).';
COMMENT ON COLUMN hookline.breaker_state.state_code IS 'state as a number for a gauge: 0 closed, 1 open, 2 half_open.';
COMMENT ON COLUMN hookline.breaker_state.failures IS 'Failures counted in the current window.';
COMMENT ON COLUMN hookline.breaker_state.opened_at IS 'When it last opened.';
COMMENT ON COLUMN hookline.breaker_state.open_until IS 'When the half-open probe may go.';
COMMENT ON COLUMN hookline.breaker_state.last_error IS 'The last failure counted.';
COMMENT ON COLUMN hookline.breaker_state.changed_at IS 'When the state last changed.';

-- ---------------------------------------------------------------------------------------------
-- Costs per day, tenant, pipeline and model
-- ---------------------------------------------------------------------------------------------
CREATE VIEW hookline.costs_daily AS
SELECT (c.created_at AT TIME ZONE 'UTC')::date AS day,
       e.tenant,
       c.pipeline,
       c.model,
       count(*) AS calls,
       coalesce(sum(c.input_tokens), 0) AS input_tokens,
       coalesce(sum(c.output_tokens), 0) AS output_tokens,
       coalesce(sum(c.cache_creation_input_tokens), 0) AS cache_creation_input_tokens,
       coalesce(sum(c.cache_read_input_tokens), 0) AS cache_read_input_tokens,
       coalesce(sum(c.cost_usd), 0) AS usd
FROM hookline.llm_calls c
JOIN hookline.events e ON e.id = c.event_id
WHERE c.status <> 'dry_run'
GROUP BY 1, 2, 3, 4;
COMMENT ON VIEW hookline.costs_daily IS
  'Model spend per UTC day, tenant, pipeline and model (every call sent, failed and invalid ones included).';
COMMENT ON COLUMN hookline.costs_daily.day IS 'UTC day of the calls.';
COMMENT ON COLUMN hookline.costs_daily.tenant IS 'The events'' tenant (NULL: none).';
COMMENT ON COLUMN hookline.costs_daily.pipeline IS 'Pipeline name.';
COMMENT ON COLUMN hookline.costs_daily.model IS 'Model called.';
COMMENT ON COLUMN hookline.costs_daily.calls IS 'Number of calls.';
COMMENT ON COLUMN hookline.costs_daily.input_tokens IS 'Sum of usage.input_tokens.';
COMMENT ON COLUMN hookline.costs_daily.output_tokens IS 'Sum of usage.output_tokens.';
COMMENT ON COLUMN hookline.costs_daily.cache_creation_input_tokens IS 'Sum of cache writes.';
COMMENT ON COLUMN hookline.costs_daily.cache_read_input_tokens IS 'Sum of cache reads.';
COMMENT ON COLUMN hookline.costs_daily.usd IS 'Sum of cost_usd.';

-- ---------------------------------------------------------------------------------------------
-- Replay keeps the event's priority
-- ---------------------------------------------------------------------------------------------
CREATE OR REPLACE FUNCTION hookline.replay(p_event_id bigint, p_recompute boolean DEFAULT false, p_force boolean DEFAULT false)
RETURNS bigint
LANGUAGE plpgsql AS $$
DECLARE
    ev hookline.events%ROWTYPE;
BEGIN
    SELECT * INTO ev FROM hookline.events WHERE id = p_event_id FOR UPDATE;
    IF NOT FOUND THEN
        RAISE EXCEPTION 'hookline.replay: no event with id %', p_event_id USING ERRCODE = 'no_data_found';
    END IF;
    IF ev.status NOT IN ('succeeded', 'dead', 'skipped') THEN
        RAISE EXCEPTION 'hookline.replay: event % is %, not finished; it will be processed anyway', p_event_id, ev.status
            USING ERRCODE = 'object_not_in_prerequisite_state';
    END IF;
    IF ev.payload IS NULL AND ev.body IS NULL THEN
        RAISE EXCEPTION 'hookline.replay: event %''s payload was pruned by retention', p_event_id
            USING ERRCODE = 'object_not_in_prerequisite_state';
    END IF;
    UPDATE hookline.events
    SET status = 'queued', attempts = 0, finished_at = NULL, started_at = NULL, replays = replays + 1,
        detail = 'replay' || CASE WHEN p_recompute THEN ', recompute' ELSE '' END
                          || CASE WHEN p_force THEN ', force actions' ELSE '' END
    WHERE id = p_event_id;
    RETURN hookline.defer_job(
        'hookline', 'hookline:process_event',
        jsonb_build_object('event_id', p_event_id, 'recompute', p_recompute, 'force_actions', p_force),
        CASE WHEN ev.ordering_key IS NULL THEN NULL
             ELSE 'hookline:' || ev.source || ':' || ev.ordering_key END,
        NULL,
        ev.priority);
END;
$$;
COMMENT ON FUNCTION hookline.replay(bigint, boolean, boolean) IS
  'Re-run a finished event (succeeded, dead or skipped) through its pipelines at its priority; returns the '
  'job id. Stored model answers are reused unless p_recompute; actions that already succeeded are not '
  'repeated unless p_force.';

-- ---------------------------------------------------------------------------------------------
-- Alerts sent once per window (loop guard)
-- ---------------------------------------------------------------------------------------------
CREATE TABLE hookline.alerts_sent (
    kind         text        NOT NULL,
    subject      text        NOT NULL,
    window_start timestamptz NOT NULL,
    sent_at      timestamptz NOT NULL DEFAULT now(),
    CONSTRAINT alerts_sent_pkey PRIMARY KEY (kind, subject, window_start)
);
COMMENT ON TABLE hookline.alerts_sent IS
  'Alerts that fire once per window (loop guard: once per ordering key or tenant and hour), so that every '
  'worker holding an event of a tripped key does not alert again. Budget alerts use budget_windows.alerted_at.';
COMMENT ON COLUMN hookline.alerts_sent.kind IS 'Alert kind (loop_guard).';
COMMENT ON COLUMN hookline.alerts_sent.subject IS 'What tripped (pipeline and ordering key or tenant).';
COMMENT ON COLUMN hookline.alerts_sent.window_start IS 'The hour the alert covers.';
COMMENT ON COLUMN hookline.alerts_sent.sent_at IS 'When it was sent.';
COMMENT ON CONSTRAINT alerts_sent_pkey ON hookline.alerts_sent IS 'One alert per kind, subject and window.';

-- ---------------------------------------------------------------------------------------------
-- Message Batches API (pipelines with mode = "batch_api")
-- ---------------------------------------------------------------------------------------------
CREATE TABLE hookline.batch_items (
    id            bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    event_id      bigint      NOT NULL REFERENCES hookline.events (id) ON DELETE CASCADE,
    pipeline      text        NOT NULL,
    custom_id     text        NOT NULL,
    request       jsonb       NOT NULL,
    status        text        NOT NULL DEFAULT 'pending',
    batch_id      text,
    error         text,
    permanent     boolean     NOT NULL DEFAULT false,
    created_at    timestamptz NOT NULL DEFAULT now(),
    submitted_at  timestamptz,
    finished_at   timestamptz,
    kind          text        NOT NULL DEFAULT 'batch_api',
    CONSTRAINT batch_items_custom_id_key UNIQUE (custom_id),
    CONSTRAINT batch_items_kind_check CHECK (kind IN ('batch_api', 'micro')),
    CONSTRAINT batch_items_status_check CHECK (status IN ('pending', 'submitting', 'submitted', 'done', 'failed', 'retired'))
);
CREATE UNIQUE INDEX batch_items_open_idx ON hookline.batch_items (event_id, pipeline)
    WHERE status IN ('pending', 'submitting', 'submitted');
CREATE INDEX batch_items_status_idx ON hookline.batch_items (status, batch_id);
COMMENT ON TABLE hookline.batch_items IS
  'One request per (event, pipeline) of a mode = "batch_api" pipeline (kind batch_api) or of a pipeline with '
  'batch = {...} (kind micro: the job that leads the micro-batch answers it). batch_api: pending until the batch_poll periodic '
  'task submits it with others as one Message Batch, submitted until that batch ended, then done (its answer '
  'is in llm_calls and the event''s job is woken) or failed (the event''s retry policy decides; retired once seen).';
COMMENT ON COLUMN hookline.batch_items.id IS 'Surrogate key.';
COMMENT ON COLUMN hookline.batch_items.event_id IS 'The event.';
COMMENT ON COLUMN hookline.batch_items.pipeline IS 'The pipeline.';
COMMENT ON COLUMN hookline.batch_items.custom_id IS 'custom_id of the request inside the batch (hl-<id>); results are matched on it.';
COMMENT ON COLUMN hookline.batch_items.request IS 'The Messages API request (params of the batch request).';
COMMENT ON COLUMN hookline.batch_items.status IS 'pending, submitting, submitted, done, failed, retired.';
COMMENT ON COLUMN hookline.batch_items.batch_id IS 'The Message Batch id (msgbatch_…) once submitted.';
COMMENT ON COLUMN hookline.batch_items.error IS 'Why the request failed (errored, expired, canceled result, or an answer that failed the schema).';
COMMENT ON COLUMN hookline.batch_items.permanent IS 'The failure cannot improve by asking again (a refusal, a 4xx).';
COMMENT ON COLUMN hookline.batch_items.created_at IS 'When the event asked for it.';
COMMENT ON COLUMN hookline.batch_items.submitted_at IS 'When it was (last) claimed for submission.';
COMMENT ON COLUMN hookline.batch_items.finished_at IS 'When its result was read.';
COMMENT ON COLUMN hookline.batch_items.kind IS 'batch_api (Message Batches API) or micro (several events in one Messages API prompt, pipeline key batch).';
COMMENT ON CONSTRAINT batch_items_kind_check ON hookline.batch_items IS 'Allowed kinds.';
COMMENT ON CONSTRAINT batch_items_pkey ON hookline.batch_items IS 'Primary key.';
COMMENT ON CONSTRAINT batch_items_event_id_fkey ON hookline.batch_items IS 'Items go with their event.';
COMMENT ON CONSTRAINT batch_items_custom_id_key ON hookline.batch_items IS 'custom_id is unique.';
COMMENT ON CONSTRAINT batch_items_status_check ON hookline.batch_items IS 'Allowed item statuses.';
COMMENT ON INDEX hookline.batch_items_open_idx IS 'At most one open request per (event, pipeline).';
COMMENT ON INDEX hookline.batch_items_status_idx IS 'The poller finds pending items and open batches.';
