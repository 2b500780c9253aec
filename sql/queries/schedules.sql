-- Runtime SQL of scheduled pipelines (psycopg: %(name)s placeholders).

-- name: insert_firing
-- One schedule firing as an event row (source 'schedule'); a second worker firing the same
-- schedule for the same time finds the row and inserts nothing. The AFTER INSERT trigger defers
-- the processing job in this same transaction.
INSERT INTO hookline.events
    (source, delivery_id, event_type, occurred_at, headers, payload, content_type)
VALUES ('schedule', %(delivery_id)s, %(schedule)s, %(scheduled_at)s, '{}'::jsonb, %(payload)s, 'application/json')
ON CONFLICT (source, delivery_id) DO NOTHING
RETURNING id;

-- name: window_counts
-- A schedule's digest: events of the window by source, type and status (schedule firings excluded
-- unless the filter names the 'schedule' source).
SELECT source, event_type, status, count(*) AS n
FROM hookline.events
WHERE received_at >= %(since)s AND received_at < %(until)s
  AND (cardinality(%(sources)s::text[]) = 0 AND source <> 'schedule' OR source = ANY (%(sources)s::text[]))
  AND (cardinality(%(statuses)s::text[]) = 0 OR status = ANY (%(statuses)s::text[]))
  AND (cardinality(%(types)s::text[]) = 0 OR event_type LIKE ANY (%(types)s::text[]))
GROUP BY source, event_type, status
ORDER BY count(*) DESC, source, event_type, status;

-- name: window_examples
-- A schedule's digest: the newest few events of the window (same filter as window_counts).
SELECT id, source, event_type, status, tenant, received_at, last_error, payload
FROM hookline.events
WHERE received_at >= %(since)s AND received_at < %(until)s
  AND (cardinality(%(sources)s::text[]) = 0 AND source <> 'schedule' OR source = ANY (%(sources)s::text[]))
  AND (cardinality(%(statuses)s::text[]) = 0 OR status = ANY (%(statuses)s::text[]))
  AND (cardinality(%(types)s::text[]) = 0 OR event_type LIKE ANY (%(types)s::text[]))
ORDER BY id DESC
LIMIT %(limit)s;
