-- Runtime SQL of the worker's limits (psycopg: %(name)s placeholders): model buckets, tenant budgets,
-- breakers, the loop guard. The atomic parts are PL/pgSQL functions in sql/migrations/0006_limits.sql.

-- name: take_model_capacity
-- 0 when the call may go now (capacity taken), else seconds until the shared bucket can serve it.
SELECT hookline.take_model_capacity_v1(%(model)s, %(rpm)s, %(itpm)s, %(otpm)s, %(input)s, %(output)s) AS wait;

-- name: settle_model_capacity
-- Give back (or take more of) what the call used beyond its estimate.
SELECT hookline.settle_model_capacity_v1(%(model)s, %(input_delta)s, %(output_delta)s, %(itpm)s, %(otpm)s);

-- name: observe_model_limits
-- Keep the bucket in step with the API's anthropic-ratelimit-* headers and 429s.
SELECT hookline.observe_model_limits_v1(%(model)s, %(requests)s, %(input)s, %(output)s, %(blocked_until)s, %(reason)s);

-- name: admit_event
-- Count the event once against events_per_hour: NULL admitted, else when the next hour opens.
SELECT hookline.admit_event_v1(%(event_id)s, %(tenant)s, %(cap)s) AS reopens_at;

-- name: admit_guarded
-- Loop guards (and events_per_hour) counted and admitted atomically: the first full guard's index, count and
-- when it frees; else when events_per_hour reopens; all NULL when admitted.
SELECT blocked, n, frees_at, reopens_at
FROM hookline.admit_guarded_v1(%(event_id)s, %(max_events)s::integer[], %(window_seconds)s::double precision[],
                               %(count_hour)s, %(cap)s);

-- name: reserve_budget
-- Reserve a call's worst case in the tenant's UTC day, with a lease (granted, day_start, reopens_at, reservation_id).
-- Refused: reserved_only when the settled spend alone has room (calls in flight, in_flight of them, fill the
-- cap until they settle; the earliest lease ends at frees_at).
SELECT granted, day_start, reopens_at, reservation_id, reserved_only, in_flight, frees_at
FROM hookline.reserve_budget_v3(%(tenant)s, %(tokens)s, %(usd)s, %(tokens_cap)s, %(usd_cap)s,
                                %(event_id)s, %(kind)s, %(lease_seconds)s);

-- name: settle_budget
-- Replace the reservation by the call's actual usage; the day's totals come back.
SELECT day_tokens, day_usd
FROM hookline.settle_budget_v2(%(reservation_id)s, %(tenant)s, %(day_start)s, %(tokens)s, %(usd)s);

-- name: claim_alert
-- True for exactly one caller per tenant, period and window.
SELECT hookline.claim_alert_v1(%(tenant)s, %(period)s, %(window_start)s) AS claimed;

-- name: claim_cap_alert
-- True for exactly one caller per tenant, period and window: the one that sends the alert that the cap is
-- reached (an event held or dead at it). A row of hookline.alerts_sent (kind budget_cap, subject 'PERIOD
-- TENANT'), apart from the alert_at alert's claim (budget_windows.alerted_at, claim_alert), so each of the
-- two goes out once; retention deletes it a day after its window began (hookline.prune_alerts_sent).
INSERT INTO hookline.alerts_sent (kind, subject, window_start)
VALUES ('budget_cap', %(period)s::text || ' ' || %(tenant)s::text, %(window_start)s::timestamptz)
ON CONFLICT DO NOTHING
RETURNING true AS claimed;

-- name: breaker_acquire
-- closed / probe / open (with retry_at) for a call to this model. probe_at: with verdict probe, the probe's
-- hookline.breakers.probe_at (breaker_acquire_v1 sets it to now(), this statement's transaction time): what
-- says whose probe it is to breaker_release.
SELECT verdict, retry_at, now() AS probe_at FROM hookline.breaker_acquire_v1(%(model)s, %(probe_timeout)s);

-- name: breaker_release
-- A half-open probe taken by a call that was never sent (held by a budget or rate limit, or refused), or cut
-- off by a worker shutdown, or answered 4xx/429 (not the API's failure):
-- the breaker is open again with its open_seconds already over, so the next call takes the probe at once.
-- Only while it is still that call's probe (%(probe_at)s, from breaker_acquire): one that outlived
-- PROBE_TIMEOUT_SECONDS may have been taken over by another worker's newer probe, which stays out.
-- When it was given back, the job of the event held longest by this open breaker (detail starting with
-- %(detail)s) runs now, to take the next probe: the held events were told to come back when the probe would
-- be presumed lost. One, not all: only one of them could probe; the others are woken when the breaker
-- closes (wake_breaker_waiters), or one by one as each probe is given back. Returns the job woken, if any.
WITH released AS (
    UPDATE hookline.breakers SET state = 'open', open_until = now(), probe_at = NULL, changed_at = now()
    WHERE model = %(model)s AND state = 'half_open' AND probe_at = %(probe_at)s
    RETURNING model
), next_job AS (
    SELECT j.id
    FROM hookline.events e
    JOIN procrastinate_jobs j ON (j.args ->> 'event_id')::bigint = e.id
    WHERE EXISTS (SELECT FROM released)
      AND e.status = 'throttled' AND starts_with(e.detail, %(detail)s)
      AND j.status = 'todo' AND j.task_name = 'hookline:process_event'
      AND j.scheduled_at > now()
    ORDER BY e.id
    LIMIT 1
)
UPDATE procrastinate_jobs j SET scheduled_at = now()
FROM next_job
WHERE j.id = next_job.id
RETURNING j.id AS woken_job;

-- name: breaker_record
-- A call's outcome for the model's breaker; flipped = the state changed. It opens after `failures` failures
-- within the last `window_seconds`, successes in between or not (migration 0038). A success while it is open
-- (a call sent before it opened) changes nothing: only the half-open probe closes it (migration 0036).
SELECT new_state, flipped
FROM hookline.breaker_record_v3(%(model)s, %(ok)s, %(failures)s, %(window_seconds)s, %(open_seconds)s, %(error)s);

-- name: wake_breaker_waiters
-- The model's breaker just closed: the jobs of the events its open state held (detail starting with
-- %(detail)s, what worker.breaker.open_reason says) run now. While a half-open probe is out they were told
-- to come back when it would be presumed lost (PROBE_TIMEOUT_SECONDS), long after a probe that succeeded.
-- Only todo process_event jobs scheduled later than now; the events are found by status
-- (events_status_received_idx).
UPDATE procrastinate_jobs j SET scheduled_at = now()
FROM hookline.events e
WHERE e.status = 'throttled' AND starts_with(e.detail, %(detail)s)
  AND j.status = 'todo' AND j.task_name = 'hookline:process_event'
  AND (j.args ->> 'event_id')::bigint = e.id
  AND j.scheduled_at > now();

-- name: throttle_event
-- Over a cap, rate limit or loop guard: the event waits (its job is rescheduled), the run is not an attempt.
-- %(replayed)s: pipelines of a replay with recompute/force that this run finished before the hold.
-- Only for the run holding the event's current claim %(claim)s (as hookline.finish_event_v2,
-- migrations 0047, 0048): no row back, the run is no longer the event's. The hold gives the attempt
-- back, never the claim.
UPDATE hookline.events
SET status = 'throttled', attempts = greatest(attempts - 1, 0), detail = %(detail)s,
    replay_applied = replay_applied || %(replayed)s::text[]
WHERE id = %(event_id)s AND (status || '') = 'processing' AND claims = %(claim)s
RETURNING id;

-- name: replay_applied
-- A replay with recompute/force, run again after a hold: the pipelines it already recomputed/forced.
SELECT replay_applied FROM hookline.events WHERE id = %(event_id)s;

-- name: spend_today
-- hookline status: today's usage per tenant (UTC day, this UTC hour's events: the windows admit_event_v1
-- and admit_guarded_v1 count in, whatever the session's TimeZone).
SELECT w.tenant, w.period, w.events, w.tokens, w.usd, w.reserved_tokens, w.reserved_usd,
       coalesce(w.alerted_at, (SELECT a.sent_at FROM hookline.alerts_sent a  -- either budget alert sent
                               WHERE a.kind = 'budget_cap' AND a.subject = w.period || ' ' || w.tenant
                                 AND a.window_start = w.window_start)) AS alerted_at
FROM hookline.budget_windows w
WHERE (w.period = 'day' AND w.window_start = date_trunc('day', now() AT TIME ZONE 'UTC') AT TIME ZONE 'UTC')
   OR (w.period = 'hour' AND w.window_start = date_trunc('hour', now() AT TIME ZONE 'UTC') AT TIME ZONE 'UTC')
ORDER BY w.tenant, w.period;

-- name: claim_once
-- True for exactly one caller per kind, subject and UTC hour (whatever the session's TimeZone): the one that
-- sends the alert.
INSERT INTO hookline.alerts_sent (kind, subject, window_start)
VALUES (%(kind)s, %(subject)s, date_trunc('hour', now() AT TIME ZONE 'UTC') AT TIME ZONE 'UTC')
ON CONFLICT DO NOTHING
RETURNING true AS claimed;

-- name: batch_item_latest
-- The latest Message Batches request of (event, pipeline).
SELECT id, status, error, permanent, batch_id FROM hookline.batch_items
WHERE event_id = %(event_id)s AND pipeline = %(pipeline)s AND kind = 'batch_api'
ORDER BY id DESC LIMIT 1;

-- name: batch_item_add
-- Ask for a Message Batches answer (nothing when one is already open).
WITH ins AS (
    INSERT INTO hookline.batch_items (event_id, pipeline, custom_id, request, reservation)
    VALUES (%(event_id)s, %(pipeline)s, 'hl-' || %(event_id)s || '-' || md5(random()::text), %(request)s,
            %(reservation)s)
    ON CONFLICT DO NOTHING
    RETURNING id
)
SELECT count(*) AS added FROM ins;

-- name: batch_item_retire
-- A failed request the event has seen: the next run asks again.
UPDATE hookline.batch_items SET status = 'retired' WHERE id = %(id)s AND status = 'failed';

-- name: batch_claim_pending
-- Claim pending requests (and ones stuck in submitting for 10 minutes) for one batch.
UPDATE hookline.batch_items SET status = 'submitting', submitted_at = now()
WHERE id IN (
    SELECT id FROM hookline.batch_items
    WHERE kind = 'batch_api'
      AND (status = 'pending' OR (status = 'submitting' AND submitted_at < now() - interval '10 minutes'))
    ORDER BY id LIMIT %(limit)s
    FOR UPDATE SKIP LOCKED)
RETURNING id, custom_id, request;

-- name: batch_mark_submitted
-- The batch was created: its requests wait for it to end.
UPDATE hookline.batch_items SET status = 'submitted', batch_id = %(batch_id)s
WHERE id = ANY(%(ids)s) AND status = 'submitting';

-- name: batch_open
-- Batches with requests still waiting for their result.
SELECT DISTINCT batch_id FROM hookline.batch_items WHERE status = 'submitted' AND kind = 'batch_api';

-- name: batch_item_finish
-- Record one result (once: a second reader gets no row back).
UPDATE hookline.batch_items
SET status = %(status)s, error = %(error)s, permanent = %(permanent)s, finished_at = now()
WHERE custom_id = %(custom_id)s AND status = 'submitted'
RETURNING id, event_id, pipeline, request, reservation;

-- name: wake_event_job
-- The event's waiting job runs now (its answer, or its failure, is in).
UPDATE procrastinate_jobs SET scheduled_at = now()
WHERE status = 'todo' AND task_name = 'hookline:process_event' AND (args->>'event_id')::bigint = %(event_id)s;

-- name: batch_item_finish_fail
-- The answer came back but failed its schema (or was a refusal): the event's retry policy decides.
UPDATE hookline.batch_items SET status = 'failed', error = %(error)s, permanent = %(permanent)s WHERE id = %(id)s;

-- name: micro_item_latest
-- The latest micro-batch request of (event, pipeline).
SELECT id, status, error, permanent, created_at FROM hookline.batch_items
WHERE event_id = %(event_id)s AND pipeline = %(pipeline)s AND kind = 'micro'
ORDER BY id DESC LIMIT 1;

-- name: micro_item_add
-- Join the pipeline's next micro-batch (nothing when a request is already open).
INSERT INTO hookline.batch_items (event_id, pipeline, custom_id, request, kind)
VALUES (%(event_id)s, %(pipeline)s, 'hl-' || %(event_id)s || '-' || md5(random()::text), %(request)s, 'micro')
ON CONFLICT DO NOTHING;

-- name: micro_pending
-- Requests gathering for the pipeline's next micro-batch of %(tenant)s (with [tenants], a micro-batch
-- holds one tenant's events: its call is reserved and settled against that tenant's day; NULL: any tenant).
SELECT count(*) AS n FROM hookline.batch_items b
WHERE b.kind = 'micro' AND b.pipeline = %(pipeline)s AND b.status = 'pending'
  AND (%(tenant)s::text IS NULL
       OR EXISTS (SELECT 1 FROM hookline.events e WHERE e.id = b.event_id AND coalesce(e.tenant, '') = %(tenant)s));

-- name: micro_claim
-- The leader takes up to %(limit)s pending requests (and ones a crashed leader left for 10 minutes) of
-- its own tenant %(tenant)s (NULL, without [tenants]: of any tenant).
UPDATE hookline.batch_items SET status = 'submitting', submitted_at = now()
WHERE id IN (
    SELECT b.id FROM hookline.batch_items b
    WHERE b.kind = 'micro' AND b.pipeline = %(pipeline)s
      AND (b.status = 'pending' OR (b.status = 'submitting' AND b.submitted_at < now() - interval '10 minutes'))
      AND (%(tenant)s::text IS NULL
           OR EXISTS (SELECT 1 FROM hookline.events e WHERE e.id = b.event_id AND coalesce(e.tenant, '') = %(tenant)s))
    ORDER BY b.id LIMIT %(limit)s
    FOR UPDATE OF b SKIP LOCKED)
RETURNING id, event_id, request;

-- name: micro_release
-- The leader could not ask (a limit held it): the requests gather again.
UPDATE hookline.batch_items SET status = 'pending' WHERE id = ANY(%(ids)s) AND status = 'submitting';

-- name: micro_item_done
-- This event's part of the answer is stored.
UPDATE hookline.batch_items SET status = 'done', finished_at = now() WHERE id = %(id)s;

-- name: micro_item_fail
-- This event's part failed (missing, invalid, or the call failed): the event's retry policy decides.
UPDATE hookline.batch_items SET status = 'failed', error = %(error)s, permanent = %(permanent)s, finished_at = now()
WHERE id = %(id)s;

-- name: micro_simulated_part
-- This event's part of a simulated micro-batch answer (hookline dev --simulate-model; status
-- 'simulated', which succeeded_call never reads), taken once: its done request is retired in the same
-- statement, so a later run of the event asks again, as for any simulated answer. No row when the
-- request is not done or its part is not a simulated one (the caller then asks again).
WITH taken AS (
    UPDATE hookline.batch_items SET status = 'retired'
    WHERE id = %(id)s AND status = 'done'
    RETURNING event_id, pipeline, created_at
)
SELECT c.output
FROM taken t
JOIN LATERAL (
    SELECT output FROM hookline.llm_calls
    WHERE event_id = t.event_id AND pipeline = t.pipeline AND status = 'simulated'
      AND route LIKE 'micro_batch:%%' AND created_at >= t.created_at
    ORDER BY id DESC LIMIT 1
) c ON true;

-- name: acquire_slots
-- Concurrency caps: take every slot the event needs, all or none (granted, or which one is full).
SELECT granted, blocked, in_flight, frees_at
FROM hookline.acquire_slots_v1(%(event_id)s, %(pipelines)s::text[], %(scopes)s::text[], %(subjects)s::text[],
                               %(caps)s::integer[], %(lease_seconds)s);

-- name: release_slots
-- The event's run ended (finished, failed or held): its concurrency slots are free.
DELETE FROM hookline.concurrency_slots WHERE event_id = %(event_id)s;

-- name: count_infra_failure
-- A job run failed outside the pipelines' error handling: count it on the event (throttles never do).
-- A run that claimed the event (%(claim)s not NULL) counts only while it holds the event's current
-- claim (as hookline.finish_event_v2, migrations 0047, 0048): no row back, the run is no longer the
-- event's, and its failure is not the event's. A run whose claim itself failed (%(claim)s NULL) counts.
-- The claim alone decides, not the status: the run's own retry, hold or outcome may have committed with
-- its answer lost (a connection dropped after the commit); counted and rescheduled, the next run finds
-- the event as that write left it (a job ended 'stale' instead would stay doing under a live worker).
UPDATE hookline.events SET infra_failures = infra_failures + 1
WHERE id = %(event_id)s
  AND (%(claim)s::bigint IS NULL OR claims = %(claim)s::bigint)
RETURNING infra_failures;

-- name: escalation_due
-- A stored answer that escalate has not re-asked yet (any route but escalate:FIELD): a batched one
-- (micro-batch or Message Batches) whose escalation comes after the batch, or one whose escalated
-- call failed or was held in an earlier run. request: the event's own request that went into the
-- batch (NULL for a Messages API answer).
SELECT c.id, c.route,
       (SELECT b.request FROM hookline.batch_items b
        WHERE b.event_id = c.event_id AND b.pipeline = c.pipeline ORDER BY b.id DESC LIMIT 1) AS request
FROM hookline.llm_calls c
WHERE c.event_id = %(event_id)s AND c.pipeline = %(pipeline)s AND c.status = 'succeeded'
  AND NOT starts_with(c.route, 'escalate:');

-- name: supersede_call
-- The escalated answer takes the one succeeded slot of (event, pipeline).
UPDATE hookline.llm_calls SET status = 'superseded' WHERE id = %(id)s AND status = 'succeeded';

-- name: store_escalated
-- The escalated answer of a stored one (escalation_due, Messages API): in one statement the stored
-- answer %(superseded_id)s steps aside (superseded) and the escalated one (insert_call's parameters)
-- takes the succeeded slot, so no crash between the two leaves the event without its stored answer
-- (a retry would pay the first model again). id is NULL when another succeeded answer is stored.
WITH old AS (
    UPDATE hookline.llm_calls SET status = 'superseded'
    WHERE id = %(superseded_id)s AND status = 'succeeded'
    RETURNING id
)
INSERT INTO hookline.llm_calls
    (event_id, pipeline, model, status, request, response, output, error,
     input_tokens, output_tokens, cache_creation_input_tokens, cache_read_input_tokens,
     cost_usd, latency_ms, request_id, requested_model, route, stop_reason)
SELECT %(event_id)s::bigint, %(pipeline)s::text, %(model)s::text, %(status)s::text, %(request)s::jsonb,
       %(response)s::jsonb, %(output)s::jsonb, %(error)s::text, %(input_tokens)s::integer,
       %(output_tokens)s::integer, %(cache_creation_input_tokens)s::integer, %(cache_read_input_tokens)s::integer,
       %(cost_usd)s::numeric, %(latency_ms)s::integer, %(request_id)s::text, %(requested_model)s::text,
       %(route)s::text, %(stop_reason)s::text
FROM (SELECT count(*) FROM old) AS superseded_first  -- the update runs before the insert checks the slot
ON CONFLICT (event_id, pipeline) WHERE status = 'succeeded' DO NOTHING
RETURNING id;
