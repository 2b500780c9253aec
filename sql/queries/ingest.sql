-- Runtime SQL of the web process (asyncpg: $1, $2 … placeholders).

-- name: store_event
-- insert_event and, for a duplicate, the stored id, in one round trip: (id, inserted).
-- No row back means the conflicting delivery committed after this statement's snapshot: ask find_event.
-- $12 is the job priority (the highest of the matching pipelines'); the trigger defers at it.
WITH ins AS (
    INSERT INTO hookline.events
        (source, delivery_id, event_type, tenant, ordering_key, occurred_at,
         headers, body, payload, content_type, remote_addr, request_id, priority)
    VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13)
    ON CONFLICT (source, delivery_id) DO NOTHING
    RETURNING id
)
SELECT id, true AS inserted FROM ins
UNION ALL
SELECT id, false AS inserted FROM hookline.events
WHERE source = $1 AND delivery_id = $2 AND NOT EXISTS (SELECT 1 FROM ins);

-- name: store_invalid_event
-- store_event for a payload that failed its source's JSON Schema with on_invalid = "store": the row
-- is stored as skipped with the reason in detail, so no job is deferred (the trigger fires for
-- queued rows only).
WITH ins AS (
    INSERT INTO hookline.events
        (source, delivery_id, event_type, tenant, ordering_key, occurred_at,
         headers, body, payload, content_type, remote_addr, request_id, priority, status, detail, finished_at)
    VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, 'skipped', $14, now())
    ON CONFLICT (source, delivery_id) DO NOTHING
    RETURNING id
)
SELECT id, true AS inserted FROM ins
UNION ALL
SELECT id, false AS inserted FROM hookline.events
WHERE source = $1 AND delivery_id = $2 AND NOT EXISTS (SELECT 1 FROM ins);

-- name: find_event
-- The id of an already stored delivery (the duplicate answer).
SELECT id, status FROM hookline.events WHERE source = $1 AND delivery_id = $2;

-- name: schema_versions
-- Applied migrations, for /readyz.
SELECT version, checksum FROM hookline.schema_migrations ORDER BY version;
