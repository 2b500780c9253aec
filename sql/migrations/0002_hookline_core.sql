-- hookline core: events, model calls, action runs, and the trigger that enqueues work.
-- Postgres 14 compatible. Every object carries a COMMENT: DBAs read the schema, not our code.

CREATE SCHEMA IF NOT EXISTS hookline;
COMMENT ON SCHEMA hookline IS
  'hookline: verified webhooks and row changes (events), the Claude calls made for them (llm_calls) '
  'and the actions they triggered (action_runs). Jobs live in procrastinate_jobs (public schema).';

-- ---------------------------------------------------------------------------------------------
-- events
-- ---------------------------------------------------------------------------------------------
CREATE TABLE hookline.events (
    id            bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    source        text        NOT NULL,
    delivery_id   text        NOT NULL,
    event_type    text,
    tenant        text,
    ordering_key  text,
    occurred_at   timestamptz,
    status        text        NOT NULL DEFAULT 'queued',
    attempts      integer     NOT NULL DEFAULT 0,
    headers       jsonb       NOT NULL DEFAULT '{}'::jsonb,
    body          bytea,
    payload       jsonb,
    content_type  text,
    remote_addr   text,
    dry_run       boolean     NOT NULL DEFAULT false,
    detail        text,
    last_error    text,
    received_at   timestamptz NOT NULL DEFAULT now(),
    started_at    timestamptz,
    finished_at   timestamptz,
    CONSTRAINT events_source_delivery_id_key UNIQUE (source, delivery_id),
    CONSTRAINT events_status_check CHECK (status IN
        ('queued', 'processing', 'succeeded', 'retrying', 'dead', 'skipped', 'throttled')),
    CONSTRAINT events_attempts_check CHECK (attempts >= 0)
);

CREATE INDEX events_status_received_idx ON hookline.events (status, received_at);
CREATE INDEX events_source_type_received_idx ON hookline.events (source, event_type, received_at);
CREATE INDEX events_ordering_key_idx ON hookline.events (source, ordering_key, id)
    WHERE ordering_key IS NOT NULL;

COMMENT ON TABLE hookline.events IS
  'One row per delivery received (webhook or watched row change). Unique on (source, delivery_id): '
  'a sender''s retry of the same delivery is a duplicate, not a new event. Inserting a row with status '
  '''queued'' enqueues its processing job in the same transaction (trigger events_enqueue).';
COMMENT ON COLUMN hookline.events.id IS 'Surrogate key; the id returned to the sender as event_id.';
COMMENT ON COLUMN hookline.events.source IS 'Source name from hookline.toml ([sources.NAME]), the {source} in POST /webhooks/{source}; ''db'' for watched tables.';
COMMENT ON COLUMN hookline.events.delivery_id IS 'The sender''s own id for this delivery (e.g. X-GitHub-Delivery, Stripe evt_…), or a content hash when the source opts in. Idempotency key with source.';
COMMENT ON COLUMN hookline.events.event_type IS 'Provider event type (e.g. invoice.payment_failed, issues.opened); pipelines match on it.';
COMMENT ON COLUMN hookline.events.tenant IS 'Optional tenant/account the event belongs to (e.g. Stripe Connect account, Slack team).';
COMMENT ON COLUMN hookline.events.ordering_key IS 'Events with the same (source, ordering_key) are processed one at a time in arrival order.';
COMMENT ON COLUMN hookline.events.occurred_at IS 'When the sender says the event happened (its own timestamp), if it sends one.';
COMMENT ON COLUMN hookline.events.status IS 'queued → processing → succeeded | retrying | dead | skipped | throttled. Terminal: succeeded, dead, skipped.';
COMMENT ON COLUMN hookline.events.attempts IS 'How many times a worker started processing this event.';
COMMENT ON COLUMN hookline.events.headers IS 'Request headers as received (lower-cased names); signature and credential headers are replaced by "[redacted]".';
COMMENT ON COLUMN hookline.events.body IS 'Raw request body, byte for byte as verified. NULL once retention has pruned it.';
COMMENT ON COLUMN hookline.events.payload IS 'The body parsed as JSON (form bodies become an object). NULL once retention has pruned it.';
COMMENT ON COLUMN hookline.events.content_type IS 'Content-Type header of the delivery.';
COMMENT ON COLUMN hookline.events.remote_addr IS 'Address the delivery came from (as seen by the web process).';
COMMENT ON COLUMN hookline.events.dry_run IS 'True when processed without an API key: the exact model request is in llm_calls, no action fired.';
COMMENT ON COLUMN hookline.events.detail IS 'Human-readable note on the outcome (e.g. no pipeline matched, dry run).';
COMMENT ON COLUMN hookline.events.last_error IS 'Error of the last failed attempt (no secrets).';
COMMENT ON COLUMN hookline.events.received_at IS 'When the web process stored the delivery.';
COMMENT ON COLUMN hookline.events.started_at IS 'When a worker first started processing it.';
COMMENT ON COLUMN hookline.events.finished_at IS 'When it reached a terminal status.';
COMMENT ON CONSTRAINT events_pkey ON hookline.events IS 'Primary key.';
COMMENT ON CONSTRAINT events_source_delivery_id_key ON hookline.events IS 'Deduplication: one row per (source, delivery_id).';
COMMENT ON CONSTRAINT events_status_check ON hookline.events IS 'Allowed event statuses.';
COMMENT ON CONSTRAINT events_attempts_check ON hookline.events IS 'attempts is never negative.';
COMMENT ON INDEX hookline.events_status_received_idx IS 'Dashboards and replays by status and time.';
COMMENT ON INDEX hookline.events_source_type_received_idx IS 'Queries and replays by source, event type and time.';
COMMENT ON INDEX hookline.events_ordering_key_idx IS 'Per-entity history (latest_wins checks, event-history context).';

-- ---------------------------------------------------------------------------------------------
-- llm_calls
-- ---------------------------------------------------------------------------------------------
CREATE TABLE hookline.llm_calls (
    id                          bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    event_id                    bigint      NOT NULL REFERENCES hookline.events (id) ON DELETE CASCADE,
    pipeline                    text        NOT NULL,
    model                       text        NOT NULL,
    status                      text        NOT NULL,
    request                     jsonb       NOT NULL,
    response                    jsonb,
    output                      jsonb,
    error                       text,
    input_tokens                integer,
    output_tokens               integer,
    cache_creation_input_tokens integer,
    cache_read_input_tokens     integer,
    cost_usd                    numeric(14, 8),
    latency_ms                  integer,
    request_id                  text,
    created_at                  timestamptz NOT NULL DEFAULT now(),
    CONSTRAINT llm_calls_status_check CHECK (status IN ('succeeded', 'invalid_output', 'failed', 'dry_run'))
);
CREATE UNIQUE INDEX llm_calls_one_success_idx ON hookline.llm_calls (event_id, pipeline)
    WHERE status = 'succeeded';
CREATE INDEX llm_calls_event_idx ON hookline.llm_calls (event_id);
CREATE INDEX llm_calls_created_idx ON hookline.llm_calls (created_at);

COMMENT ON TABLE hookline.llm_calls IS
  'Every Claude call made for an event, stored before any action runs: a retried job reuses the '
  'succeeded answer instead of paying twice. Dry runs (no API key) store the exact request.';
COMMENT ON COLUMN hookline.llm_calls.id IS 'Surrogate key.';
COMMENT ON COLUMN hookline.llm_calls.event_id IS 'The event this call was made for.';
COMMENT ON COLUMN hookline.llm_calls.pipeline IS 'Pipeline name from hookline.toml ([pipelines.NAME]).';
COMMENT ON COLUMN hookline.llm_calls.model IS 'Model id requested (e.g. claude-haiku-5-5).';
COMMENT ON COLUMN hookline.llm_calls.status IS 'succeeded (validated output), invalid_output (answer failed the schema), failed (API error), dry_run (not sent).';
COMMENT ON COLUMN hookline.llm_calls.request IS 'The Messages API request body as sent (or as it would have been sent, for dry runs).';
COMMENT ON COLUMN hookline.llm_calls.response IS 'The Messages API response body.';
COMMENT ON COLUMN hookline.llm_calls.output IS 'The validated structured output the actions received.';
COMMENT ON COLUMN hookline.llm_calls.error IS 'Error text for failed or invalid calls.';
COMMENT ON COLUMN hookline.llm_calls.input_tokens IS 'usage.input_tokens (uncached input).';
COMMENT ON COLUMN hookline.llm_calls.output_tokens IS 'usage.output_tokens.';
COMMENT ON COLUMN hookline.llm_calls.cache_creation_input_tokens IS 'usage.cache_creation_input_tokens.';
COMMENT ON COLUMN hookline.llm_calls.cache_read_input_tokens IS 'usage.cache_read_input_tokens.';
COMMENT ON COLUMN hookline.llm_calls.cost_usd IS 'Cost in USD computed from usage and the price table in the README.';
COMMENT ON COLUMN hookline.llm_calls.latency_ms IS 'Wall time of the API call in milliseconds.';
COMMENT ON COLUMN hookline.llm_calls.request_id IS 'The API''s request-id header, for support tickets.';
COMMENT ON COLUMN hookline.llm_calls.created_at IS 'When the call finished.';
COMMENT ON CONSTRAINT llm_calls_pkey ON hookline.llm_calls IS 'Primary key.';
COMMENT ON CONSTRAINT llm_calls_event_id_fkey ON hookline.llm_calls IS 'Calls go when their event is deleted.';
COMMENT ON CONSTRAINT llm_calls_status_check ON hookline.llm_calls IS 'Allowed call statuses.';
COMMENT ON INDEX hookline.llm_calls_one_success_idx IS 'At most one succeeded answer per (event, pipeline): the one retries reuse.';
COMMENT ON INDEX hookline.llm_calls_event_idx IS 'Calls of an event.';
COMMENT ON INDEX hookline.llm_calls_created_idx IS 'Spend over time.';

-- ---------------------------------------------------------------------------------------------
-- action_runs
-- ---------------------------------------------------------------------------------------------
CREATE TABLE hookline.action_runs (
    id               bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    event_id         bigint      NOT NULL REFERENCES hookline.events (id) ON DELETE CASCADE,
    pipeline         text        NOT NULL,
    action           text        NOT NULL,
    action_type      text        NOT NULL,
    status           text        NOT NULL DEFAULT 'running',
    attempts         integer     NOT NULL DEFAULT 1,
    idempotency_key  text        NOT NULL,
    result           jsonb,
    error            text,
    started_at       timestamptz NOT NULL DEFAULT now(),
    finished_at      timestamptz,
    CONSTRAINT action_runs_event_pipeline_action_key UNIQUE (event_id, pipeline, action),
    CONSTRAINT action_runs_status_check CHECK (status IN ('running', 'succeeded', 'failed'))
);

COMMENT ON TABLE hookline.action_runs IS
  'One row per (event, pipeline, action): the side effects performed with a model answer. A retried '
  'or replayed job skips actions whose row is succeeded, so no side effect happens twice.';
COMMENT ON COLUMN hookline.action_runs.id IS 'Surrogate key.';
COMMENT ON COLUMN hookline.action_runs.event_id IS 'The event the action ran for.';
COMMENT ON COLUMN hookline.action_runs.pipeline IS 'Pipeline name.';
COMMENT ON COLUMN hookline.action_runs.action IS 'Action name within the pipeline (its name key, or TYPE#INDEX).';
COMMENT ON COLUMN hookline.action_runs.action_type IS 'http, log or python.';
COMMENT ON COLUMN hookline.action_runs.status IS 'running (started, outcome unknown), succeeded, failed.';
COMMENT ON COLUMN hookline.action_runs.attempts IS 'How many times the action was started.';
COMMENT ON COLUMN hookline.action_runs.idempotency_key IS 'Stable key sent with the action (Idempotency-Key / webhook-id headers for http) so receivers can drop repeats.';
COMMENT ON COLUMN hookline.action_runs.result IS 'What the action returned (http: status and a body excerpt).';
COMMENT ON COLUMN hookline.action_runs.error IS 'Error of the last failed attempt.';
COMMENT ON COLUMN hookline.action_runs.started_at IS 'When the last attempt started.';
COMMENT ON COLUMN hookline.action_runs.finished_at IS 'When it succeeded or failed.';
COMMENT ON CONSTRAINT action_runs_pkey ON hookline.action_runs IS 'Primary key.';
COMMENT ON CONSTRAINT action_runs_event_id_fkey ON hookline.action_runs IS 'Action runs go when their event is deleted.';
COMMENT ON CONSTRAINT action_runs_event_pipeline_action_key ON hookline.action_runs IS 'The idempotency key of side effects.';
COMMENT ON CONSTRAINT action_runs_status_check ON hookline.action_runs IS 'Allowed action statuses.';

-- ---------------------------------------------------------------------------------------------
-- Enqueueing: the only place that names procrastinate's defer function.
-- ---------------------------------------------------------------------------------------------
CREATE FUNCTION hookline.defer_job(
    p_queue text, p_task text, p_args jsonb,
    p_lock text DEFAULT NULL, p_queueing_lock text DEFAULT NULL,
    p_priority integer DEFAULT 0, p_scheduled_at timestamptz DEFAULT NULL
) RETURNS bigint
LANGUAGE sql AS $$
    SELECT (procrastinate_defer_jobs_v1(ARRAY[
        ROW(p_queue, p_task, p_priority, p_lock, p_queueing_lock, p_args, p_scheduled_at)
    ]::procrastinate_job_to_defer_v1[]))[1];
$$;
COMMENT ON FUNCTION hookline.defer_job(text, text, jsonb, text, text, integer, timestamptz) IS
  'Defers a procrastinate job in the caller''s transaction. The one place that names '
  'procrastinate_defer_jobs_v1: a procrastinate upgrade changes only this function.';

CREATE FUNCTION hookline.enqueue_event() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
    PERFORM hookline.defer_job(
        'hookline',
        'hookline:process_event',
        jsonb_build_object('event_id', NEW.id),
        CASE WHEN NEW.ordering_key IS NULL THEN NULL
             ELSE 'hookline:' || NEW.source || ':' || NEW.ordering_key END);
    RETURN NEW;
END;
$$;
COMMENT ON FUNCTION hookline.enqueue_event() IS
  'Trigger function: defers process_event(event_id) for a newly inserted queued event, with the '
  'event''s ordering key as procrastinate lock so events of one entity run one at a time, in order.';

CREATE TRIGGER events_enqueue
    AFTER INSERT ON hookline.events
    FOR EACH ROW WHEN (NEW.status = 'queued')
    EXECUTE FUNCTION hookline.enqueue_event();
COMMENT ON TRIGGER events_enqueue ON hookline.events IS
  'Enqueues processing in the same transaction as the insert, whoever wrote the row (web, psql, a '
  'watched table): there is no window in which an accepted event has no job.';

-- procrastinate's objects are documented here too, for DBAs browsing the database.
COMMENT ON TABLE procrastinate_jobs IS 'procrastinate job queue (3.10 schema). hookline jobs: queue ''hookline'', task ''hookline:process_event'', args {"event_id": N}.';
COMMENT ON TABLE procrastinate_events IS 'procrastinate job audit log (deferred, started, succeeded, failed, …).';
COMMENT ON TABLE procrastinate_workers IS 'procrastinate worker heartbeats; stalled-job detection reads it.';
COMMENT ON TABLE procrastinate_periodic_defers IS 'procrastinate periodic-task bookkeeping (one defer per tick).';
