-- Runtime SQL of the worker (psycopg: %(name)s placeholders).

-- name: start_events
-- Claim an event for processing and load it with the answers already stored for it: {pipeline:
-- {"output": …}} of its succeeded model calls, the ones a retry reuses instead of paying twice
-- (hookline.claim_events_v2). When %(more)s > 0, the same statement also claims up to %(more)s further
-- process_event jobs waiting in the queue (batch claim: hookline.claim_more_jobs, by the fetch's rules,
-- each job found by primary key; migration 0021: a job of an ordering key only when no earlier job of
-- that key waits or runs, whatever the priorities; migration 0029), for the worker that runs job
-- %(job_id)s, and claims their events. One row per job:
-- event_id and job_id (NULL for the job procrastinate handed over); id is NULL when the event is
-- already terminal (nothing to do). pickup_s (when %(pickup)s): seconds from the job becoming runnable
-- to its start (hookline.job_pickup_seconds). A lone event's job is usually claimed by the fetch
-- itself (fetch_job below), and this statement is not sent for it.
-- The claim commits asynchronously (synchronous_commit off for its own transaction only): it does not
-- wait for its WAL flush, nor hold Postgres's NOTIFY queue lock (its 'processing' status NOTIFY) through
-- one, which serialised every notifying commit of every worker behind it. Nothing durable rests on a
-- claim alone: the worker's next durable write (the stored answer, an action's start) flushes the WAL
-- up to and including it. A Postgres crash within the walwriter's delay can forget the last claims;
-- their jobs and events are then queued again, as before the claim, and run again.
-- claims: the event's claims after this claim, the run's fencing token (migration 0048).
-- The statement is a function (migration 0024) so that it is planned once per session, not at every call.
SELECT * FROM hookline.start_events_v2(%(job_id)s, %(queue)s, %(task)s, %(more)s, %(event_id)s, %(pickup)s);

-- name: fetch_job
-- procrastinate's own fetch (procrastinate_fetch_job_v2, the columns procrastinate reads), sent by the
-- worker's queue connector in place of procrastinate's statement, with more columns. The fetch hands out
-- the jobs of one ordering key (procrastinate lock) in arrival order, whatever their priorities
-- (migration 0029 replaced procrastinate's lock rule, which let a higher priority pass).
-- * more_waiting: false when a job was fetched and no other job of these queues is runnable now (todo,
--   due). Jobs that commit after this statement began are not seen here; their job_inserted NOTIFY
--   comes after their commit, and the connector fetches again when one arrived (worker.handover).
--   hookline.job_waiting (migration 0022) walks only a partial index of todo jobs and stops at the first
--   runnable one: sequential and bitmap scans are off in it, and its queue test is an expression
--   (queue_name || '') so that, with the statistics of a near-empty queue (see migration 0013), the
--   planner cannot pair that index with the queue_name index, which holds every job ever kept
--   (finished ones too) and costs a read of all of them.
-- * claimed, claim_*: when %(claim)s (the worker has a free slot), the job is a process_event job of
--   %(task)s that is not a replay, and nothing else is runnable (no backlog to batch-claim), the same
--   statement claims the job's event as start_events would (hookline.claim_events_v2; migration 0019):
--   claimed is true, and claim_* are start_events' event columns (claim_id NULL: already terminal).
--   The worker then sends no start_events for it. Such a fetch commits asynchronously, as the claim
--   always did (see start_events); any other fetch commits as procrastinate's does.
-- The statement is a function (migration 0024) so that it is planned once per session, not at every call.
SELECT * FROM hookline.fetch_job_v2(%(queues)s::varchar[], %(worker_id)s, %(claim)s, %(task)s, %(pickup)s);

-- name: finish_event
-- Record a terminal outcome (succeeded, skipped, dead); with job_id, also finish that procrastinate
-- job (the one procrastinate handed over, or one the worker claimed itself). With event_id NULL only
-- the job is finished. %(claim)s: the run's claim (the claims its claim returned); finished is false,
-- and nothing changed (the job neither), when another claim or an outcome came since (migrations 0047,
-- 0048: a replay included).
SELECT hookline.finish_event_v2(%(event_id)s, %(status)s, %(dry_run)s, %(detail)s, %(error)s, %(job_id)s,
                                %(claim)s::bigint) AS finished;

-- name: retry_job
-- Hand a job the worker claimed itself back to the queue, runnable in %(delay)s seconds.
SELECT hookline.retry_job(%(job_id)s, %(delay)s);

-- name: retry_event
-- A transient failure: the job is rescheduled; the event says why. Only for the run holding the
-- event's current claim %(claim)s (as hookline.finish_event_v2, migrations 0047, 0048): no row changed,
-- the run is no longer the event's.
UPDATE hookline.events
SET status = 'retrying',
    last_error = %(error)s,
    detail = %(detail)s
WHERE id = %(event_id)s AND (status || '') = 'processing' AND claims = %(claim)s;

-- name: succeeded_call
-- The stored answer a retry reuses instead of paying twice.
SELECT id, output, response FROM hookline.llm_calls
WHERE event_id = %(event_id)s AND pipeline = %(pipeline)s AND status = 'succeeded';

-- name: insert_call
-- Store one model call (before any action runs). calls: the round trips the row counts (0 for a
-- micro-batch's further parts, migration 0034). With finish_status, the same statement finishes the
-- event (hookline.finish_event_v2: the run's last write carries the outcome) for the run holding claim
-- %(finish_claim)s; finished is false when that claim is no longer current (migration 0048: the call is
-- stored all the same). id is NULL when a succeeded call was already stored.
WITH ins AS (
    INSERT INTO hookline.llm_calls
        (event_id, pipeline, model, status, request, response, output, error,
         input_tokens, output_tokens, cache_creation_input_tokens, cache_read_input_tokens,
         cost_usd, latency_ms, request_id, requested_model, route, stop_reason, calls)
    VALUES (%(event_id)s, %(pipeline)s, %(model)s, %(status)s, %(request)s, %(response)s, %(output)s, %(error)s,
            %(input_tokens)s, %(output_tokens)s, %(cache_creation_input_tokens)s, %(cache_read_input_tokens)s,
            %(cost_usd)s, %(latency_ms)s, %(request_id)s, %(requested_model)s, %(route)s, %(stop_reason)s,
            %(calls)s)
    ON CONFLICT (event_id, pipeline) WHERE status = 'succeeded' DO NOTHING
    RETURNING id
)
SELECT (SELECT id FROM ins) AS id,
       CASE WHEN %(finish_status)s::text IS NOT NULL THEN
           hookline.finish_event_v2(%(event_id)s, %(finish_status)s, %(finish_dry_run)s, %(finish_detail)s, NULL,
                                    %(finish_job_id)s, %(finish_claim)s::bigint)
       END AS finished;

-- name: insert_calls
-- insert_call for several events at once (the worker's group commit): %(rows)s is a JSON array of
-- objects with insert_call's parameters as keys (request, response and output as JSON values) and
-- n, the row's position. One statement, one commit. One row back per input row, in order: n, id
-- (NULL when a succeeded call was already stored), and finished (the row finished its event: false
-- when its finish_claim was no longer current, migration 0048). At most one row per (event_id,
-- pipeline) per call.
-- Its transaction sets hookline.notify = %(notify)s before anything is written. 'after_commit'
-- (migration 0015): the status and answer NOTIFYs are left to notify_after_commit, right after this
-- commit, so this durable commit does not hold Postgres's notification queue lock through its WAL
-- flush. 'inline', for a batch holding the answer of a respond = "sync" pipeline: the row triggers
-- notify inside the transaction, so the waiting request hears of it as the commit ends, one round
-- trip sooner (as ingest does for a batch with a synchronous request).
WITH input AS MATERIALIZED (
    SELECT *, set_config('hookline.notify', %(notify)s::text, true) AS notify_mode
    FROM jsonb_to_recordset(%(rows)s::jsonb) AS t(
        n integer, event_id bigint, pipeline text, model text, status text,
        request jsonb, response jsonb, output jsonb, error text,
        input_tokens integer, output_tokens integer, cache_creation_input_tokens integer,
        cache_read_input_tokens integer, cost_usd numeric, latency_ms integer, request_id text,
        requested_model text, route text, stop_reason text, calls smallint,
        finish_status text, finish_dry_run boolean, finish_detail text, finish_job_id bigint,
        finish_claim bigint)
), ins AS (
    INSERT INTO hookline.llm_calls
        (event_id, pipeline, model, status, request, response, output, error,
         input_tokens, output_tokens, cache_creation_input_tokens, cache_read_input_tokens,
         cost_usd, latency_ms, request_id, requested_model, route, stop_reason, calls)
    SELECT event_id, pipeline, model, status, request, response, output, error,
           input_tokens, output_tokens, cache_creation_input_tokens, cache_read_input_tokens,
           cost_usd, latency_ms, request_id, requested_model, route, stop_reason, coalesce(calls, 1)
    FROM input
    ORDER BY n
    ON CONFLICT (event_id, pipeline) WHERE status = 'succeeded' DO NOTHING
    RETURNING id, event_id, pipeline
), fin AS (
    -- the rows that finish their event, in one call (hookline.finish_events_v2, migrations 0023, 0048), after
    -- every call is stored: its trigger counts each finished event by the pipelines of its calls
    SELECT hookline.finish_events_v2(array_agg(i.event_id ORDER BY i.n), array_agg(i.finish_status ORDER BY i.n),
                                     array_agg(i.finish_dry_run ORDER BY i.n), array_agg(i.finish_detail ORDER BY i.n),
                                     array_agg(i.finish_job_id ORDER BY i.n),
                                     array_agg(i.finish_claim ORDER BY i.n)) AS finished
    FROM input i, (SELECT count(*) FROM ins) AS stored_first
    WHERE i.finish_status IS NOT NULL
)
SELECT i.n, ins.id, (i.finish_status IS NOT NULL AND i.event_id = ANY (fin.finished)) AS finished
FROM input i
LEFT JOIN ins ON ins.event_id = i.event_id AND ins.pipeline = i.pipeline
CROSS JOIN fin
ORDER BY i.n;

-- name: notify_after_commit
-- The NOTIFYs an insert_calls transaction left out (hookline.notify_event_changes, migration 0015):
-- statuses of the events it finished, then the answers it stored. A transaction of its own that does
-- not wait for a WAL flush: it writes nothing but the notifications.
SELECT hookline.notify_event_changes(%(status_ids)s::bigint[], %(statuses)s::text[],
                                     %(answer_ids)s::bigint[], %(answer_pipelines)s::text[]) AS sent
FROM (SELECT set_config('synchronous_commit', 'off', true)) AS async_commit;

-- name: claim_action
-- Start (or restart) an action unless it already succeeded. No row back: it already succeeded.
-- previous_status is the row's status before this claim (NULL for a first start; 'running' when
-- the last start never recorded an outcome: the worker died mid-action). idempotency_key is the key
-- this start sends: %(idempotency_key)s for a first start; the row's own for a restart (a retry, a
-- crash, a replay without force), so the receiver can drop a repeat; for a forced start of an action
-- that ran before (replay --force), %(idempotency_key)s || '-replay-' || the event's replays, a key
-- the earlier runs never sent, kept by this run's retries. A row 'running' that started less than
-- %(in_flight_s)s seconds ago (the longest a run lasts while its worker lives) is not taken: it may
-- still be in flight on another worker (one whose job was taken for stalled); then id is NULL and
-- held_s says how long it may still run (the worker holds the event that long).
WITH prev AS (
    SELECT status,
           CASE WHEN status = 'running'
                THEN extract(epoch FROM started_at + make_interval(secs => %(in_flight_s)s) - now())::float8
           END AS held_s
    FROM hookline.action_runs
    WHERE event_id = %(event_id)s AND pipeline = %(pipeline)s AND action = %(action)s
), claimed AS (
    INSERT INTO hookline.action_runs (event_id, pipeline, action, action_type, idempotency_key)
    VALUES (%(event_id)s, %(pipeline)s, %(action)s, %(action_type)s, %(idempotency_key)s)
    ON CONFLICT (event_id, pipeline, action) DO UPDATE
    SET status = 'running', attempts = hookline.action_runs.attempts + 1, started_at = now(),
        finished_at = NULL, error = NULL,
        idempotency_key = CASE
            WHEN %(force)s THEN %(idempotency_key)s || '-replay-'
                || (SELECT e.replays FROM hookline.events e WHERE e.id = %(event_id)s)
            ELSE hookline.action_runs.idempotency_key
        END
    WHERE (hookline.action_runs.status <> 'succeeded' OR %(force)s)
      AND NOT (hookline.action_runs.status = 'running'
               AND hookline.action_runs.started_at > now() - make_interval(secs => %(in_flight_s)s))
    RETURNING id, attempts, idempotency_key
)
SELECT c.id, c.attempts, p.status AS previous_status, c.idempotency_key,
       CASE WHEN c.id IS NULL THEN greatest(coalesce(p.held_s, %(in_flight_s)s), 0.05) END AS held_s
FROM (VALUES (1)) AS one (n)
LEFT JOIN claimed c ON true
LEFT JOIN prev p ON true
-- not taken although this statement's snapshot saw no succeeded row: another worker's claim or
-- outcome came in meanwhile; held too (briefly), so that the next run decides on what it wrote
WHERE c.id IS NOT NULL OR p.status IS DISTINCT FROM 'succeeded' OR %(force)s;

-- name: finish_action
-- Record an action's outcome (in its own statement: a failure to finish the event afterwards must
-- not lose the record that a side effect happened). Over a run still running, and a success over a
-- failure too: two runs of one event share the record, and a failed run must never overwrite the
-- success another run recorded (a sql action's, committed with its call), while a run that succeeded
-- after another's failure landed says what happened last.
UPDATE hookline.action_runs
SET status = %(status)s, result = %(result)s, error = %(error)s, finished_at = now()
WHERE id = %(id)s AND (status = 'running' OR (status = 'failed' AND %(status)s::text = 'succeeded'));

-- name: cut_off_action
-- An action cancelled before it returned (its pipeline's timeout_seconds, a worker shutdown): failed,
-- saying why. Only while running: a sql action whose commit went through before the cancellation
-- keeps its succeeded.
UPDATE hookline.action_runs
SET status = 'failed', error = %(error)s, finished_at = now()
WHERE id = %(id)s AND status = 'running';

-- name: prune_jobs
-- Retention: hookline.prune_jobs (migration 0030): delete the finished procrastinate jobs with no
-- activity for %(hours)s hours among the next %(batch)s jobs by id after %(after)s. One row back:
-- deleted, last_id (where the next batch starts) and done (nothing further can be due).
SELECT deleted, last_id, done FROM hookline.prune_jobs(%(after)s::bigint, %(hours)s::int, %(batch)s::int);

-- name: fold_count_slots
-- Maintenance: hookline.fold_count_slots (migration 0054): fold up to %(batch)s committed overflow slots
-- of the event counts (and as many of the dismissed counts) into slot 16; the counts read the same. One
-- row back: folded (how many slots; 0 when none is left).
SELECT hookline.fold_count_slots(%(batch)s::int) AS folded;

-- name: prune_payloads
-- Retention: hookline.prune_payloads (migrations 0030, 0043): drop the body and payload of up to %(batch)s
-- terminal events older than %(days)s days, the oldest first, not of the sources %(masked)s names (a
-- JSON list: those whose redact paths worker.retention masks first), and the payload copies in
-- llm_calls and batch_items (a dead letter's bad model output and action_runs.result are kept). One
-- row back: pruned.
SELECT hookline.prune_payloads(%(days)s::int, %(batch)s::int,
                               ARRAY(SELECT jsonb_array_elements_text(%(masked)s::jsonb))) AS pruned;

-- name: prune_alerts_sent
-- Retention: hookline.prune_alerts_sent (migration 0052): delete up to %(batch)s loop-guard alert claims
-- of hours that began more than a day ago. One row back: deleted.
SELECT hookline.prune_alerts_sent(%(batch)s::int) AS deleted;

-- name: due_masked_events
-- Retention: hookline.due_masked_payloads (migration 0043): the events of the sources %(masked)s lists (a
-- JSON list: those whose redact paths worker.retention masks) among the next %(batch)s due (older than
-- %(days)s days), locked for this transaction, with their payload, texts, calls and actions.
SELECT id, source, payload, last_error, detail, calls, actions
FROM hookline.due_masked_payloads(%(days)s::int, %(batch)s::int,
                                  ARRAY(SELECT jsonb_array_elements_text(%(masked)s::jsonb)));

-- name: prune_event_payloads
-- Retention: hookline.prune_event_payloads (migration 0043): write the masked texts (%(events)s,
-- %(calls)s, %(actions)s: JSON lists of {"id", changed columns}) of the events %(ids)s lists (a JSON
-- list), locked by due_masked_events in this transaction, then prune them. One row back: pruned.
SELECT hookline.prune_event_payloads(ARRAY(SELECT jsonb_array_elements_text(%(ids)s::jsonb)::bigint),
                                     %(events)s::jsonb, %(calls)s::jsonb, %(actions)s::jsonb) AS pruned;

-- name: supersede_calls
-- A replay with recompute: the stored answer steps aside for the new one.
UPDATE hookline.llm_calls SET status = 'superseded'
WHERE event_id = %(event_id)s AND pipeline = %(pipeline)s AND status = 'succeeded';

-- name: newer_processed
-- latest_wins: an event of the same entity, newer by the sender's clock, already processed.
SELECT id FROM hookline.events
WHERE source = %(source)s AND ordering_key = %(ordering_key)s AND id <> %(event_id)s
  AND status = 'succeeded' AND occurred_at > %(occurred_at)s
ORDER BY occurred_at DESC
LIMIT 1;

-- name: recent_for_key
-- Event-history context: the last events of the same entity before this one.
SELECT id, event_type, occurred_at, received_at, status, payload
FROM hookline.events
WHERE source = %(source)s AND ordering_key = %(ordering_key)s AND id < %(event_id)s
ORDER BY id DESC
LIMIT %(limit)s;

-- name: claim_late_reply
-- Follow-up actions of a sync pipeline: did the sender's HTTP reply carry the answer? Once the
-- deadline (received_at + timeout) has passed with nothing recorded, the worker records 'default'
-- itself, so exactly one of the HTTP reply and the follow-up delivers the answer. remaining_s > 0 and
-- no sync_reply: the web process may still reply; ask again. respond_sync false: no HTTP reply waits
-- for this answer, as for a replayed event (replays > 0) whose replay made it (stored since the
-- replay's run started, succeeded or simulated: hookline.replay empties started_at, the run's first
-- claim sets it): it goes by follow-up. A replay that reuses the stored answer goes by sync_reply, as
-- the first run did: an answer the reply carried is not posted again.
WITH claim AS (
    UPDATE hookline.events SET sync_reply = 'default'
    WHERE id = %(event_id)s AND sync_reply IS NULL AND respond_sync
      AND received_at + make_interval(secs => %(timeout_s)s) <= now()
    RETURNING sync_reply
)
SELECT e.respond_sync
       AND NOT (e.replays > 0 AND EXISTS (
           SELECT 1 FROM hookline.llm_calls c
           WHERE c.event_id = e.id AND c.pipeline = %(pipeline)s AND c.status IN ('succeeded', 'simulated')
             AND c.created_at >= e.started_at)) AS respond_sync,
       coalesce((SELECT sync_reply FROM claim), e.sync_reply) AS sync_reply,
       extract(epoch FROM e.received_at + make_interval(secs => %(timeout_s)s) - now())::float8 AS remaining_s
FROM hookline.events e
WHERE e.id = %(event_id)s;

-- name: reply_no_answer
-- A sync pipeline that does not run for this event (its `when` is false, or a newer event of the key
-- superseded it) while other pipelines do: record that the sender gets respond_default, and wake its
-- waiting request ({"op":"reply"} on hookline_events), so the reply need not wait for the others.
WITH marked AS (
    UPDATE hookline.events SET sync_reply = 'default'
    WHERE id = %(event_id)s AND sync_reply IS NULL AND respond_sync
    RETURNING id
)
SELECT pg_notify('hookline_events', json_build_object('op', 'reply', 'id', id, 'reply', 'default')::text)
FROM marked;

-- name: micro_item_stuck
-- A micro-batch request left in 'submitting' longer than the reclaim age: its leader was killed (or
-- its release was lost), so the event's own job leads, and micro_claim takes the request back.
-- %(reclaim_s)s is micro_claim's reclaim age (worker.microbatch.MICRO_RECLAIM_SECONDS).
SELECT id FROM hookline.batch_items
WHERE id = %(id)s AND status = 'submitting'
  AND submitted_at < now() - make_interval(secs => %(reclaim_s)s);

-- name: open_batch_pipelines
-- The pipelines with Message Batches requests still open (pending, submitting or submitted): a
-- pipeline that left mode = "batch_api" since (or left the config) has requests in flight that its
-- events must not pay for again (worker.batches.leftover). Reads only the open rows
-- (batch_items_status_idx).
SELECT DISTINCT pipeline FROM hookline.batch_items
WHERE kind = 'batch_api' AND status IN ('pending', 'submitting', 'submitted');

-- name: batch_item_cancel
-- An event's pending Message Batches request, of a pipeline no longer in mode = "batch_api": taken
-- back before any batch holds it (nothing was paid), so the event asks the Messages API instead. No
-- row: the request is already in a batch (its answer is collected), or not open. reservation: the
-- budget reservation to give back.
UPDATE hookline.batch_items
SET status = 'retired', finished_at = now(), error = %(error)s
WHERE event_id = %(event_id)s AND pipeline = %(pipeline)s AND kind = 'batch_api' AND status = 'pending'
RETURNING id, reservation;

-- name: batch_retire_pending
-- The poller: requests not yet in a batch (pending, or left in submitting for 10 minutes by a killed
-- poller, as batch_claim_pending reclaims them) of pipelines that are no longer in mode = "batch_api"
-- (%(pipelines)s, a JSON array: those that are) are never submitted: retired, their reservations
-- given back by the worker, their events' jobs woken to ask the way their pipeline now says.
UPDATE hookline.batch_items
SET status = 'retired', finished_at = now(), error = %(error)s
WHERE kind = 'batch_api' AND pipeline <> ALL (ARRAY(SELECT jsonb_array_elements_text(%(pipelines)s::jsonb)))
  AND (status = 'pending' OR (status = 'submitting' AND submitted_at < now() - interval '10 minutes'))
RETURNING id, event_id, pipeline, reservation;

-- name: wake_throttled
-- Worker start, and again each minute of a worker's first ten (worker.main.rewake_throttled: an
-- old-release worker still running in a rolling deploy may hold a woken event again at its old cap):
-- the jobs of throttled events run now instead of when the hold they were given said (a tenant cap's
-- window reopening, up to the next UTC midnight). A deploy may have raised or removed the cap; an
-- event still over it is held again by its run (no model call; an alert goes once per window). Only
-- todo process_event jobs scheduled later than now; the events are found by status
-- (events_status_received_idx).
UPDATE procrastinate_jobs j SET scheduled_at = now()
FROM hookline.events e
WHERE e.status = 'throttled'
  AND j.status = 'todo' AND j.task_name = 'hookline:process_event'
  AND (j.args ->> 'event_id')::bigint = e.id
  AND j.scheduled_at > now();

-- name: rate_limited_calls
-- A 429 from the Messages API holds its event throttled without using an attempt (worker/gate.py),
-- up to RATE_LIMIT_HOLDS such answers for one event and pipeline; then each further 429 uses an
-- attempt, so a model that never stops answering 429 ends in the dead letters, not in a hold without
-- end. Counts the failed calls the API answered 429 (their error starts "anthropic 429 ";
-- llm_calls_event_idx).
SELECT count(*)::int AS n
FROM hookline.llm_calls
WHERE event_id = %(event_id)s AND pipeline = %(pipeline)s AND status = 'failed' AND error LIKE 'anthropic 429 %%';
