-- Runtime SQL of the admin API and the dashboard (asyncpg: $1, $2 … placeholders).
-- Lists are keyset-paginated on id (newest first): the cursor is the last id a page returned.

-- name: list_events
-- Events matching every filter given (NULL = any), newest first, ids below the cursor: hookline.list_events
-- (migration 0031), planned for each call's filters.
SELECT * FROM hookline.list_events(
    p_source => $1::text, p_event_type => $2::text, p_status => $3::text, p_tenant => $4::text,
    p_since => $5::timestamptz, p_until => $6::timestamptz, p_before => $7::bigint, p_limit => $8::integer);

-- name: event_row
-- One event with its parsed payload (masked by the caller) and stored headers; the raw body stays out.
-- pruned: retention dropped its body and payload, so hookline.replay refuses it. dismissed_*: a dead
-- letter dismissed by hookline.dismiss (migration 0046).
SELECT id, source, delivery_id, event_type, tenant, ordering_key, occurred_at, status, attempts, replays,
       dry_run, detail, last_error, content_type, headers, payload, received_at, started_at, finished_at,
       (payload IS NULL AND body IS NULL) AS pruned, dismissed_at, dismissed_by, dismissed_reason
FROM hookline.events WHERE id = $1;

-- name: dead_letters
-- Dead letters (not dismissed), newest first, ids below the cursor: read backwards from the cursor in
-- events_dead_letters_idx (migrations 0041, 0046), each one's tenant and whether retention pruned its
-- payload (hookline.replay then refuses it) looked up by primary key, in one read.
SELECT d.event_id, d.source, d.event_type, e.tenant,
       d.delivery_id, d.attempts, d.error, d.detail, d.received_at,
       d.died_at, d.invalid_output_pipeline, d.invalid_output_error, e.pruned
FROM hookline.dead_letters d
LEFT JOIN LATERAL (
    SELECT x.tenant, (x.payload IS NULL AND x.body IS NULL) AS pruned FROM hookline.events x WHERE x.id = d.event_id
) e ON true
WHERE d.event_id <= coalesce($1::bigint - 1, 9223372036854775807)  -- an index condition in a generic plan too
ORDER BY d.event_id DESC
LIMIT $2;

-- name: event_payloads
-- The payloads of the listed events or dead letters whose source masks fields (what their errors may repeat).
SELECT id, payload FROM hookline.events WHERE id = ANY($1::bigint[]);

-- name: replay_one
-- Replay one finished event through hookline.replay; returns the new job id.
SELECT hookline.replay($1::bigint, $2::boolean, $3::boolean) AS job_id;

-- name: replay_matching
-- Bulk replay of the finished events matching the filters (hookline.replay's filter form).
SELECT event_id, job_id FROM hookline.replay(
    p_source => $1::text, p_event_type => $2::text, p_status => $3::text,
    p_since => $4::timestamptz, p_until => $5::timestamptz,
    p_recompute => $6::boolean, p_force => $7::boolean);

-- name: dismiss_one
-- Dismiss one dead letter through hookline.dismiss (404 / 409 as it raises): its dismissal, now made or
-- made before (dismissed_now false: it was already dismissed, and stays as it was).
WITH d AS (
    SELECT * FROM hookline.dismiss(ARRAY[$1::bigint], p_reason => $2::text, p_by => $3::text)
)
SELECT e.id AS event_id, coalesce(d.dismissed_at, e.dismissed_at) AS dismissed_at,
       (d.event_id IS NOT NULL) AS dismissed_now
FROM hookline.events e LEFT JOIN d ON d.event_id = e.id
WHERE e.id = $1::bigint;

-- name: dismiss_matching
-- Dismiss the dead letters matching the filters (hookline.dismiss's filter form).
SELECT event_id, dismissed_at FROM hookline.dismiss(
    p_source => $1::text, p_event_type => $2::text, p_since => $3::timestamptz, p_until => $4::timestamptz,
    p_reason => $5::text, p_by => $6::text);

-- name: dead_letter_counts
-- Dead letters (open) and dismissed dead events, from the trigger-kept counts (migration 0046).
SELECT open, dismissed FROM hookline.dead_letter_counts;

-- name: status_counts
-- Events per status, all time: the trigger-kept counts (hookline.events_by_status), not a scan of the events.
SELECT status, n FROM hookline.events_by_status;

-- name: recent_counts
-- Events received in the last hour, and those finished in it with their latency (received → finished).
SELECT count(*) AS received,
       count(*) FILTER (WHERE finished_at IS NOT NULL) AS finished,
       percentile_cont(0.5) WITHIN GROUP (ORDER BY extract(epoch FROM finished_at - received_at))
           FILTER (WHERE finished_at IS NOT NULL) AS p50_seconds,
       percentile_cont(0.95) WITHIN GROUP (ORDER BY extract(epoch FROM finished_at - received_at))
           FILTER (WHERE finished_at IS NOT NULL) AS p95_seconds
FROM hookline.events
WHERE received_at > now() - interval '1 hour';

-- name: queue_depth
-- Jobs waiting and running per queue.
SELECT queue_name, status::text AS status, count(*) AS n
FROM procrastinate_jobs
WHERE status IN ('todo', 'doing')
GROUP BY queue_name, status
ORDER BY queue_name, status;

-- name: throughput
-- Events received per minute over the last $1 minutes, with the latency of those that finished.
SELECT date_trunc('minute', received_at) AS minute,
       count(*) AS received,
       percentile_cont(0.5) WITHIN GROUP (ORDER BY extract(epoch FROM finished_at - received_at))
           FILTER (WHERE finished_at IS NOT NULL) AS p50_seconds,
       percentile_cont(0.95) WITHIN GROUP (ORDER BY extract(epoch FROM finished_at - received_at))
           FILTER (WHERE finished_at IS NOT NULL) AS p95_seconds
FROM hookline.events
WHERE received_at > date_trunc('minute', now()) - make_interval(mins => $1::integer - 1)
GROUP BY 1
ORDER BY 1;

-- name: cost
-- Model calls, tokens and cost per tenant and pipeline for calls made in [$1, $2): the calls
-- hookline.costs_daily and `hookline status` count (every status but dry_run: a dry run was never sent;
-- simulated calls count as calls, with no cost). calls counts round trips (sum of llm_calls.calls: a
-- micro-batch's combined call once, migration 0034); tokens and cost add up every row's share.
SELECT coalesce(e.tenant, '') AS tenant, c.pipeline, sum(c.calls)::bigint AS calls,
       coalesce(sum(c.input_tokens), 0)::bigint AS input_tokens,
       coalesce(sum(c.output_tokens), 0)::bigint AS output_tokens,
       coalesce(sum(c.cost_usd), 0) AS cost_usd
FROM hookline.llm_calls c JOIN hookline.events e ON e.id = c.event_id
WHERE c.created_at >= $1 AND c.created_at < $2 AND c.status <> 'dry_run'
GROUP BY 1, 2
ORDER BY cost_usd DESC, tenant, c.pipeline;

-- name: events_by_ids
-- What a live dashboard row shows, for the events named in notices.
SELECT id, source, event_type, tenant, status, attempts, received_at, finished_at
FROM hookline.events WHERE id = ANY($1::bigint[]) ORDER BY id;
