-- Runtime SQL of the observability side (asyncpg: $1, $2 … placeholders): one event's story for
-- `hookline events show` and the admin API, `hookline status`, `hookline tail` and GET /metrics.

-- name: event_detail
-- One event's row, without its body and payload.
SELECT id, source, delivery_id, event_type, tenant, ordering_key, occurred_at, status, attempts, replays,
       dry_run, detail, last_error, request_id, received_at, started_at, finished_at,
       dismissed_at, dismissed_by, dismissed_reason
FROM hookline.events WHERE id = $1;

-- name: event_payload
-- One event's payload: read only to find the values its source's redact paths hide, to mask them
-- where the story repeats them (app/core/redaction.py); never printed.
SELECT payload FROM hookline.events WHERE id = $1;

-- name: event_timeline
-- One event's steps, in order (the view's documented ordering).
SELECT step, at, duration_ms, pipeline, name, status, input_tokens, output_tokens, cost_usd, ref_id, detail
FROM hookline.event_timeline WHERE event_id = $1
ORDER BY at, step_rank, ref_id;

-- name: event_calls
-- One event's model calls (request and response bodies left out: they can be large).
SELECT id, pipeline, model, status, output, error, input_tokens, output_tokens, cache_creation_input_tokens,
       cache_read_input_tokens, cost_usd, latency_ms, request_id, created_at
FROM hookline.llm_calls WHERE event_id = $1 ORDER BY id;

-- name: event_actions
-- One event's action runs.
SELECT id, pipeline, action, action_type, status, attempts, idempotency_key, result, error, started_at, finished_at
FROM hookline.action_runs WHERE event_id = $1 ORDER BY id;

-- name: event_brief
-- What a live line shows for one event.
SELECT id, source, event_type, tenant, status, request_id FROM hookline.events WHERE id = $1;

-- name: events_between
-- The events of an insert notice (min_id .. max_id).
SELECT id, source, event_type, tenant, status, request_id FROM hookline.events
WHERE id BETWEEN $1 AND $2 ORDER BY id;

-- name: metric_totals
-- The rollup behind /metrics: running totals, shards summed.
SELECT metric, pipeline, model, tenant, kind, status, sum(value) AS value
FROM hookline.metric_totals
GROUP BY metric, pipeline, model, tenant, kind, status;

-- name: queue_depth
-- Jobs waiting and running per queue.
SELECT queue_name, status::text AS status, count(*) AS n
FROM procrastinate_jobs
WHERE status IN ('todo', 'doing')
GROUP BY queue_name, status;

-- name: dead_letters_count
-- Dead letters: the events that will not be retried and that nobody dismissed (hookline.dead_letter_counts,
-- migration 0046: the trigger-kept counts, no scan).
SELECT open AS n FROM hookline.dead_letter_counts;

-- name: dismissed_count
-- Dead events dismissed (hookline.dismiss): left out of the dead letters.
SELECT dismissed AS n FROM hookline.dead_letter_counts;

-- name: event_rates
-- Events received in the last 5 minutes and the last hour, by status.
SELECT status,
       count(*) FILTER (WHERE received_at > now() - interval '5 minutes') AS last_5m,
       count(*) AS last_1h
FROM hookline.events
WHERE received_at > now() - interval '1 hour'
GROUP BY status;

-- name: spend_today
-- Model calls, tokens and cost since midnight UTC, by tenant and model: the calls hookline.costs_daily
-- counts (every status but dry_run: a dry run was never sent), calls as round trips (sum of
-- llm_calls.calls: a micro-batch's combined call once).
SELECT coalesce(e.tenant, '') AS tenant, c.model, sum(c.calls)::bigint AS calls,
       coalesce(sum(c.input_tokens), 0) AS input_tokens, coalesce(sum(c.output_tokens), 0) AS output_tokens,
       coalesce(sum(c.cost_usd), 0) AS cost_usd
FROM hookline.llm_calls c JOIN hookline.events e ON e.id = c.event_id
WHERE c.created_at >= date_trunc('day', now() AT TIME ZONE 'UTC') AT TIME ZONE 'UTC'
  AND c.status <> 'dry_run'
GROUP BY 1, 2
ORDER BY cost_usd DESC, tenant, c.model;

-- name: event_status_counts
-- Events per status, all time (the status command): the trigger-kept counts, not a scan of the events.
SELECT status, n FROM hookline.events_by_status ORDER BY status;

-- name: jobs_by_status
-- hookline's jobs by status (the status command's "jobs").
SELECT status::text AS status, count(*) AS n FROM procrastinate_jobs WHERE queue_name = 'hookline' GROUP BY 1 ORDER BY 1;

-- name: breaker_states
-- Circuit breaker of each model (hookline_breaker_state: 0 closed, 1 open, 2 half-open).
SELECT model, state_code FROM hookline.breaker_state;
