-- Runtime SQL of the web process (asyncpg: $1, $2 … placeholders).

-- name: store_event
-- insert_event and, for a duplicate, the stored id, in one round trip: (id, inserted).
-- No row back means the conflicting delivery committed after this statement's snapshot: ask find_event.
-- $12 is the request id, $13 the job priority (the highest of the matching pipelines'); the trigger defers at it.
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

-- name: find_event
-- The id of an already stored delivery (the duplicate answer).
SELECT id, status FROM hookline.events WHERE source = $1 AND delivery_id = $2;

-- name: schema_versions
-- Applied migrations, for /readyz.
SELECT version, checksum FROM hookline.schema_migrations ORDER BY version;

-- name: store_events
-- Group commit (app/web/batcher.py): many verified deliveries in one statement, as parallel arrays
-- in store_event's column order. One row back per input row that is stored: n (1-based position in
-- the arrays), id, inserted (false: the delivery already existed, committed before this statement).
-- An input row missing from the answer conflicted with a delivery committed meanwhile: find_events.
WITH input AS (
    SELECT *
    FROM unnest($1::text[], $2::text[], $3::text[], $4::text[], $5::text[], $6::timestamptz[],
                $7::jsonb[], $8::bytea[], $9::jsonb[], $10::text[], $11::text[], $12::text[], $13::int[])
        WITH ORDINALITY AS i (source, delivery_id, event_type, tenant, ordering_key, occurred_at,
                              headers, body, payload, content_type, remote_addr, request_id, priority, n)
),
known AS (
    SELECT i.n, e.id
    FROM input i
    JOIN hookline.events e ON e.source = i.source AND e.delivery_id = i.delivery_id
),
ins AS (
    INSERT INTO hookline.events
        (source, delivery_id, event_type, tenant, ordering_key, occurred_at,
         headers, body, payload, content_type, remote_addr, request_id, priority)
    SELECT source, delivery_id, event_type, tenant, ordering_key, occurred_at,
           headers, body, payload, content_type, remote_addr, request_id, priority
    FROM input
    WHERE n NOT IN (SELECT n FROM known)
    ORDER BY n
    ON CONFLICT (source, delivery_id) DO NOTHING
    RETURNING id, source, delivery_id
)
SELECT k.n, k.id, false AS inserted FROM known k
UNION ALL
SELECT i.n, ins.id, true AS inserted
FROM ins JOIN input i ON i.source = ins.source AND i.delivery_id = ins.delivery_id;

-- name: find_events
-- The ids of already stored deliveries, by parallel arrays of source and delivery_id.
SELECT e.source, e.delivery_id, e.id
FROM unnest($1::text[], $2::text[]) AS k (source, delivery_id)
JOIN hookline.events e ON e.source = k.source AND e.delivery_id = k.delivery_id;
