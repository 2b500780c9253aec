-- Runtime SQL of the web process (asyncpg: $1, $2 … placeholders).

-- name: store_event
-- insert_event and, for a duplicate, the stored id, in one round trip: (id, inserted).
-- No row back means the conflicting delivery committed after this statement's snapshot: ask find_event.
-- $12 is the request id, $13 the job priority (the highest of the matching pipelines'); the trigger defers at it.
-- $14 (respond_sync): a synchronous reply waits for this event; its job goes to the sync queue.
WITH ins AS (
    INSERT INTO hookline.events
        (source, delivery_id, event_type, tenant, ordering_key, occurred_at,
         headers, body, payload, content_type, remote_addr, request_id, priority, respond_sync)
    VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14)
    ON CONFLICT (source, delivery_id) DO NOTHING
    RETURNING id
)
SELECT id, true AS inserted FROM ins
UNION ALL
SELECT id, false AS inserted FROM hookline.events
WHERE source = $1 AND delivery_id = $2 AND (source, delivery_id) >= ($1, $2)  -- the unique index (see find_event)
  AND NOT EXISTS (SELECT 1 FROM ins);

-- name: store_invalid_event
-- store_event for a payload that failed its source's JSON Schema with on_invalid = "store": the row
-- is stored as skipped with the reason in detail, so no job is deferred (the trigger fires for
-- queued rows only). The payload ($9) comes as JSON text: the request body itself when it was plain
-- UTF-8 JSON, so numbers Python cannot hold (1e999) are stored as sent, as store_events stores them.
WITH ins AS (
    INSERT INTO hookline.events
        (source, delivery_id, event_type, tenant, ordering_key, occurred_at,
         headers, body, payload, content_type, remote_addr, request_id, priority, status, detail, finished_at)
    VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9::text::jsonb, $10, $11, $12, $13, 'skipped', $14, now())
    ON CONFLICT (source, delivery_id) DO NOTHING
    RETURNING id
)
SELECT id, true AS inserted FROM ins
UNION ALL
SELECT id, false AS inserted FROM hookline.events
WHERE source = $1 AND delivery_id = $2 AND (source, delivery_id) >= ($1, $2)  -- the unique index (see find_event)
  AND NOT EXISTS (SELECT 1 FROM ins);

-- name: find_event
-- The id of an already stored delivery (the duplicate answer). The row comparison repeats the
-- equalities so that a generic plan made while the table was empty still probes the unique index
-- (source, delivery_id), not the index on source alone (see hookline.store_events, migration 0025).
SELECT id, status FROM hookline.events
WHERE source = $1 AND delivery_id = $2 AND (source, delivery_id) >= ($1, $2);

-- name: reply_state
-- A synchronous reply: the event's status and the stored answer of its sync pipeline. Read only: the
-- reply claims the answer (reply_answer) only once respond_body has rendered over it. sync_reply not
-- null: already decided (the worker gave the answer to the follow-up actions at the deadline);
-- remaining_s: until that deadline ($3 = respond_timeout_ms in seconds), by the database's clock, as
-- the worker's claim_late_reply counts it. recomputed: a replay made the answer (stored since its run
-- started), so the follow-up actions deliver it, as claim_late_reply decides. The answer is the
-- succeeded one, or under hookline dev --simulate-model the simulated one (never reused by a later run,
-- so there may be several: the latest; migration 0035); simulated says which. $4: the reply is a
-- retry's (a duplicate), whose templates read the stored event (its type, tenant, time and payload:
-- what the model saw), not the retry's body; payload is null otherwise (never read).
WITH ans AS (
    SELECT output, status = 'simulated' AS simulated FROM hookline.llm_calls
    WHERE event_id = $1 AND pipeline = $2 AND status IN ('succeeded', 'simulated')
    ORDER BY id DESC
    LIMIT 1
)
SELECT e.status, e.sync_reply, (SELECT output FROM ans) AS output, EXISTS (SELECT 1 FROM ans) AS has_answer,
       coalesce((SELECT simulated FROM ans), false) AS simulated,
       CASE WHEN e.replays > 0 THEN coalesce(
           (SELECT bool_or(c.created_at >= e.started_at) FROM hookline.llm_calls c
            WHERE c.event_id = $1 AND c.pipeline = $2 AND c.status IN ('succeeded', 'simulated')), false
       ) ELSE false END AS recomputed,
       extract(epoch FROM e.received_at + make_interval(secs => $3::float8) - now())::float8 AS remaining_s,
       e.event_type, e.tenant, e.occurred_at, CASE WHEN $4::boolean THEN e.payload END AS payload
FROM hookline.events e
WHERE e.id = $1;

-- name: reply_answer
-- respond_body rendered over the answer: the HTTP reply carries it, so follow-up actions skip it. No row
-- back: the worker recorded 'default' first (its deadline passed), and the sender gets the default.
-- No fsync wait: a Postgres crash can lose only this mark (then a follow-up action may post an answer
-- the sender already had).
UPDATE hookline.events SET sync_reply = 'answer'
FROM (SELECT set_config('synchronous_commit', 'off', true)) AS relaxed
WHERE id = $1 AND sync_reply IS NULL
RETURNING id;

-- name: reply_default
-- A synchronous reply ran out of time (or respond_body failed on the answer): the sender got
-- respond_default (follow-ups deliver the answer).
UPDATE hookline.events SET sync_reply = 'default' WHERE id = $1 AND sync_reply IS NULL;

-- name: schema_versions
-- Applied migrations, for /readyz, each with read_only: this session cannot write (a hot standby, or
-- default_transaction_read_only set for the database or role during maintenance); /readyz is 503 then.
SELECT version, checksum, current_setting('transaction_read_only') = 'on' AS read_only
FROM hookline.schema_migrations ORDER BY version;

-- name: store_events
-- Group commit (app/web/batcher.py): many verified deliveries in one statement, as parallel arrays
-- (headers and payload as JSON text: a payload that is a JSON array must not add an array dimension)
-- in store_event's column order. One row back per input row that is stored: n (1-based position in
-- the arrays), id, inserted (false: the delivery already existed, committed before this statement).
-- An input row missing from the answer conflicted with a delivery committed meanwhile: find_events.
-- The statement is hookline.store_events (migration 0025: planned once per session; the body was this
-- statement). Its transaction sets hookline.notify = 'after_commit' (migration 0018) before anything
-- is written, unless a row is a synchronous request ($14): the insert and job_inserted NOTIFYs are
-- then left to notify_events_stored, right after this commit, so this durable commit does not hold
-- Postgres's notification queue lock through its WAL flush. A synchronous request's caller waits for
-- the worker: its batch notifies inside its transaction, and the worker wakes one round trip sooner.
SELECT n, id, inserted
FROM hookline.store_events($1::text[], $2::text[], $3::text[], $4::text[], $5::text[], $6::timestamptz[],
                           $7::text[], $8::bytea[], $9::text[], $10::text[], $11::text[], $12::text[],
                           $13::int[], $14::boolean[]);

-- name: notify_events_stored
-- The NOTIFYs a store_events transaction left out (migration 0018), for the ids it stored: sent right
-- after its commit. A transaction of its own that does not wait for a WAL flush: it writes nothing but
-- the notifications. Stateless: any connection will do.
SELECT hookline.notify_events_stored($1::bigint[]) AS sent
FROM (SELECT set_config('synchronous_commit', 'off', true)) AS async_commit;

-- name: find_events
-- The ids of already stored deliveries, by parallel arrays of source and delivery_id.
SELECT e.source, e.delivery_id, e.id
FROM unnest($1::text[], $2::text[]) AS k (source, delivery_id)
CROSS JOIN LATERAL (  -- one index probe per key, whatever the statistics say (see store_events)
    SELECT e.source, e.delivery_id, e.id FROM hookline.events e
    WHERE e.source = k.source AND e.delivery_id = k.delivery_id
      AND (e.source, e.delivery_id) >= (k.source, k.delivery_id)  -- the unique index (see find_event)
    LIMIT 1
) AS e;
