-- Observability: the request id travels with the event, simulated model calls, the per-event
-- timeline view, and the metric rollup that /metrics reads instead of scanning history.

-- ---------------------------------------------------------------------------------------------
-- The ingest request id, kept with the event so the worker's log lines carry it too
-- ---------------------------------------------------------------------------------------------
ALTER TABLE hookline.events ADD COLUMN request_id text;
COMMENT ON COLUMN hookline.events.request_id IS
  'Id of the HTTP request that stored the event (the sender''s X-Request-Id, else one hookline made; '
  'returned as x-request-id). Web and worker log lines carry it next to event_id. NULL for rows '
  'written by SQL (watched tables, psql).';

-- ---------------------------------------------------------------------------------------------
-- simulated: answered locally by `hookline dev --simulate-model`, never priced
-- ---------------------------------------------------------------------------------------------
ALTER TABLE hookline.llm_calls DROP CONSTRAINT llm_calls_status_check;
ALTER TABLE hookline.llm_calls ADD CONSTRAINT llm_calls_status_check
    CHECK (status IN ('succeeded', 'invalid_output', 'failed', 'dry_run', 'superseded', 'simulated'));
COMMENT ON CONSTRAINT llm_calls_status_check ON hookline.llm_calls IS
  'Allowed call statuses; superseded = a succeeded answer replaced by a replay with recompute; '
  'simulated = answered locally from the output schema (hookline dev --simulate-model).';
COMMENT ON COLUMN hookline.llm_calls.status IS
  'succeeded (validated output), invalid_output (answer failed the schema), failed (API error), '
  'dry_run (not sent), superseded (a later replay recomputed it), simulated (answered locally from '
  'the output schema by hookline dev --simulate-model: no API call, never priced).';

-- ---------------------------------------------------------------------------------------------
-- The per-event timeline
-- ---------------------------------------------------------------------------------------------
CREATE VIEW hookline.event_timeline AS
SELECT e.id AS event_id, 0 AS step_rank, 'received'::text AS step, e.received_at AS at,
       0::bigint AS duration_ms, NULL::text AS pipeline, NULL::text AS name, NULL::text AS status,
       NULL::integer AS input_tokens, NULL::integer AS output_tokens, NULL::numeric AS cost_usd,
       NULL::bigint AS ref_id, e.source || coalesce(' ' || e.event_type, '') AS detail
FROM hookline.events e
UNION ALL
SELECT e.id, 1, 'queued', e.received_at,
       (extract(epoch FROM (coalesce(e.started_at, now()) - e.received_at)) * 1000)::bigint,
       NULL, NULL, NULL, NULL, NULL, NULL, NULL,
       CASE WHEN e.replays > 0 THEN 'replayed ' || e.replays || ' time(s)' END
FROM hookline.events e
UNION ALL
SELECT e.id, 2, 'started', e.started_at,
       (extract(epoch FROM (coalesce(e.finished_at, now()) - e.started_at)) * 1000)::bigint,
       NULL, NULL, NULL, NULL, NULL, NULL, NULL, 'attempt ' || e.attempts
FROM hookline.events e
WHERE e.started_at IS NOT NULL
UNION ALL
SELECT c.event_id, 3, 'model_call', c.created_at - make_interval(secs => coalesce(c.latency_ms, 0) / 1000.0),
       c.latency_ms::bigint, c.pipeline, c.model, c.status, c.input_tokens, c.output_tokens, c.cost_usd,
       c.id, c.error
FROM hookline.llm_calls c
UNION ALL
SELECT a.event_id, 4, 'action', a.started_at,
       (extract(epoch FROM (a.finished_at - a.started_at)) * 1000)::bigint,
       a.pipeline, a.action, a.status, NULL, NULL, NULL, a.id, a.error
FROM hookline.action_runs a
UNION ALL
SELECT e.id, 5, 'finished', e.finished_at,
       (extract(epoch FROM (e.finished_at - e.received_at)) * 1000)::bigint,
       NULL, NULL, e.status, NULL, NULL, NULL, NULL, coalesce(e.last_error, e.detail)
FROM hookline.events e
WHERE e.finished_at IS NOT NULL;

COMMENT ON VIEW hookline.event_timeline IS
  'One row per step of an event''s life: received, queued, started, each model call, each action, '
  'finished. Read one event with WHERE event_id = N ORDER BY at, step_rank, ref_id (hookline events '
  'show N and the admin API do exactly that). A replay resets started/finished to its own run.';
COMMENT ON COLUMN hookline.event_timeline.event_id IS 'hookline.events.id.';
COMMENT ON COLUMN hookline.event_timeline.step_rank IS 'Order of steps that share a timestamp: received 0, queued 1, started 2, model_call 3, action 4, finished 5.';
COMMENT ON COLUMN hookline.event_timeline.step IS 'received, queued, started, model_call, action or finished.';
COMMENT ON COLUMN hookline.event_timeline.at IS 'When the step began (a model call: its end minus its latency).';
COMMENT ON COLUMN hookline.event_timeline.duration_ms IS 'received: 0 (the request itself); queued: wait until a worker started it; started: processing until finished; model_call: API latency; action: its run time; finished: received to finished, end to end. Up to now() while still running.';
COMMENT ON COLUMN hookline.event_timeline.pipeline IS 'Pipeline of a model call or action.';
COMMENT ON COLUMN hookline.event_timeline.name IS 'Model id of a model call, action name of an action.';
COMMENT ON COLUMN hookline.event_timeline.status IS 'Call status, action status, or the event''s final status (finished).';
COMMENT ON COLUMN hookline.event_timeline.input_tokens IS 'Model call: usage.input_tokens.';
COMMENT ON COLUMN hookline.event_timeline.output_tokens IS 'Model call: usage.output_tokens.';
COMMENT ON COLUMN hookline.event_timeline.cost_usd IS 'Model call: cost in USD (NULL for dry-run and simulated calls).';
COMMENT ON COLUMN hookline.event_timeline.ref_id IS 'hookline.llm_calls.id or hookline.action_runs.id of the step.';
COMMENT ON COLUMN hookline.event_timeline.detail IS 'A short note: source and type, replays, attempt number, error, or the outcome detail.';

-- ---------------------------------------------------------------------------------------------
-- Metric rollup: counters kept by triggers, so a scrape reads a few rows instead of history
-- ---------------------------------------------------------------------------------------------
CREATE TABLE hookline.metric_totals (
    metric   text     NOT NULL,
    pipeline text     NOT NULL DEFAULT '',
    model    text     NOT NULL DEFAULT '',
    tenant   text     NOT NULL DEFAULT '',
    kind     text     NOT NULL DEFAULT '',
    status   text     NOT NULL DEFAULT '',
    shard    smallint NOT NULL DEFAULT 0,
    value    numeric  NOT NULL DEFAULT 0,
    CONSTRAINT metric_totals_pkey PRIMARY KEY (metric, pipeline, model, tenant, kind, status, shard)
);
COMMENT ON TABLE hookline.metric_totals IS
  'Running totals behind GET /metrics, kept by triggers on llm_calls and events (never decremented). '
  'Each total is spread over a few shards (by backend pid) so concurrent workers do not queue on one '
  'row; read with SUM(value) GROUP BY everything but shard.';
COMMENT ON COLUMN hookline.metric_totals.metric IS 'events_finished (count), tokens (count), cost_usd (USD), model_calls (count).';
COMMENT ON COLUMN hookline.metric_totals.pipeline IS 'Pipeline (events_finished; '''' when no pipeline ran).';
COMMENT ON COLUMN hookline.metric_totals.model IS 'Model id (tokens, cost_usd, model_calls).';
COMMENT ON COLUMN hookline.metric_totals.tenant IS 'Event tenant (tokens, cost_usd; '''' when none).';
COMMENT ON COLUMN hookline.metric_totals.kind IS 'Token kind: input, output, cache_creation, cache_read.';
COMMENT ON COLUMN hookline.metric_totals.status IS 'Event status (events_finished) or call status (model_calls).';
COMMENT ON COLUMN hookline.metric_totals.shard IS 'Contention shard, 0-7; not a label.';
COMMENT ON COLUMN hookline.metric_totals.value IS 'The running total of this shard.';
COMMENT ON CONSTRAINT metric_totals_pkey ON hookline.metric_totals IS 'One row per metric, label set and shard.';

CREATE FUNCTION hookline.metric_add(p_metric text, p_value numeric, p_pipeline text DEFAULT '',
    p_model text DEFAULT '', p_tenant text DEFAULT '', p_kind text DEFAULT '', p_status text DEFAULT '')
RETURNS void
LANGUAGE sql AS $$
    INSERT INTO hookline.metric_totals AS t (metric, pipeline, model, tenant, kind, status, shard, value)
    VALUES (p_metric, p_pipeline, p_model, p_tenant, p_kind, p_status, (pg_backend_pid() % 8)::smallint, p_value)
    ON CONFLICT (metric, pipeline, model, tenant, kind, status, shard)
    DO UPDATE SET value = t.value + excluded.value;
$$;
COMMENT ON FUNCTION hookline.metric_add(text, numeric, text, text, text, text, text) IS
  'Adds p_value to one running total of hookline.metric_totals (this backend''s shard).';

CREATE FUNCTION hookline.count_llm_call() RETURNS trigger
LANGUAGE plpgsql SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    v_tenant text;
BEGIN
    SELECT coalesce(e.tenant, '') INTO v_tenant FROM hookline.events e WHERE e.id = NEW.event_id;
    PERFORM hookline.metric_add('model_calls', 1, p_model => NEW.model, p_status => NEW.status);
    IF coalesce(NEW.input_tokens, 0) <> 0 THEN
        PERFORM hookline.metric_add('tokens', NEW.input_tokens, p_model => NEW.model, p_tenant => v_tenant, p_kind => 'input');
    END IF;
    IF coalesce(NEW.output_tokens, 0) <> 0 THEN
        PERFORM hookline.metric_add('tokens', NEW.output_tokens, p_model => NEW.model, p_tenant => v_tenant, p_kind => 'output');
    END IF;
    IF coalesce(NEW.cache_creation_input_tokens, 0) <> 0 THEN
        PERFORM hookline.metric_add('tokens', NEW.cache_creation_input_tokens, p_model => NEW.model,
                                    p_tenant => v_tenant, p_kind => 'cache_creation');
    END IF;
    IF coalesce(NEW.cache_read_input_tokens, 0) <> 0 THEN
        PERFORM hookline.metric_add('tokens', NEW.cache_read_input_tokens, p_model => NEW.model,
                                    p_tenant => v_tenant, p_kind => 'cache_read');
    END IF;
    IF NEW.cost_usd IS NOT NULL THEN
        PERFORM hookline.metric_add('cost_usd', NEW.cost_usd, p_model => NEW.model, p_tenant => v_tenant);
    END IF;
    RETURN NULL;
END
$$;
COMMENT ON FUNCTION hookline.count_llm_call() IS
  'Trigger function: adds a stored model call to the model_calls, tokens and cost_usd totals.';

CREATE TRIGGER llm_calls_count
    AFTER INSERT ON hookline.llm_calls
    FOR EACH ROW EXECUTE FUNCTION hookline.count_llm_call();
COMMENT ON TRIGGER llm_calls_count ON hookline.llm_calls IS
  'Keeps hookline.metric_totals (model_calls, tokens, cost_usd) up to date, in the inserting transaction.';

CREATE FUNCTION hookline.count_event_finished() RETURNS trigger
LANGUAGE plpgsql SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    v_pipeline text;
    v_any boolean := false;
BEGIN
    FOR v_pipeline IN SELECT DISTINCT c.pipeline FROM hookline.llm_calls c WHERE c.event_id = NEW.id LOOP
        PERFORM hookline.metric_add('events_finished', 1, p_pipeline => v_pipeline, p_status => NEW.status);
        v_any := true;
    END LOOP;
    IF NOT v_any THEN
        PERFORM hookline.metric_add('events_finished', 1, p_status => NEW.status);
    END IF;
    RETURN NULL;
END
$$;
COMMENT ON FUNCTION hookline.count_event_finished() IS
  'Trigger function: counts an event reaching a terminal status once per pipeline that made a model '
  'call for it ('''' when none did, e.g. skipped).';

CREATE TRIGGER events_count_finished
    AFTER UPDATE OF status ON hookline.events
    FOR EACH ROW
    WHEN (OLD.status IS DISTINCT FROM NEW.status AND NEW.status IN ('succeeded', 'dead', 'skipped'))
    EXECUTE FUNCTION hookline.count_event_finished();
COMMENT ON TRIGGER events_count_finished ON hookline.events IS
  'Keeps the events_finished totals of hookline.metric_totals up to date.';

-- What happened before this migration, so the totals start from the truth.
INSERT INTO hookline.metric_totals (metric, model, status, value)
SELECT 'model_calls', model, status, count(*) FROM hookline.llm_calls GROUP BY model, status;
INSERT INTO hookline.metric_totals (metric, model, tenant, kind, value)
SELECT 'tokens', c.model, coalesce(e.tenant, ''), k.kind, sum(k.n)
FROM hookline.llm_calls c
JOIN hookline.events e ON e.id = c.event_id
CROSS JOIN LATERAL (VALUES ('input', c.input_tokens), ('output', c.output_tokens),
                           ('cache_creation', c.cache_creation_input_tokens),
                           ('cache_read', c.cache_read_input_tokens)) AS k(kind, n)
WHERE coalesce(k.n, 0) <> 0
GROUP BY 1, 2, 3, 4;
INSERT INTO hookline.metric_totals (metric, model, tenant, value)
SELECT 'cost_usd', c.model, coalesce(e.tenant, ''), sum(c.cost_usd)
FROM hookline.llm_calls c JOIN hookline.events e ON e.id = c.event_id
WHERE c.cost_usd IS NOT NULL
GROUP BY 1, 2, 3;
INSERT INTO hookline.metric_totals (metric, pipeline, status, value)
SELECT 'events_finished', coalesce(p.pipeline, ''), e.status, count(*)
FROM hookline.events e
LEFT JOIN LATERAL (SELECT DISTINCT c.pipeline FROM hookline.llm_calls c WHERE c.event_id = e.id) p ON true
WHERE e.status IN ('succeeded', 'dead', 'skipped')
GROUP BY 1, 2, 3;
