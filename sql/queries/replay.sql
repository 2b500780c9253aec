-- Runtime SQL of `hookline replay` (psycopg: %(name)s placeholders).

-- name: replay_one
-- Replay one finished event; returns the new job id.
SELECT hookline.replay(%(event_id)s::bigint, %(recompute)s, %(force)s) AS job_id;

-- name: replay_matching
-- Bulk replay of finished events matching the filters.
SELECT event_id, job_id FROM hookline.replay(
    p_source => %(source)s::text, p_event_type => %(event_type)s::text, p_status => %(status)s::text,
    p_since => %(since)s::timestamptz, p_until => %(until)s::timestamptz,
    p_recompute => %(recompute)s, p_force => %(force)s);

-- name: dismiss
-- Dismiss the dead letters named and those matching the filters (hookline.dismiss); returns those
-- dismissed now.
SELECT event_id, dismissed_at FROM hookline.dismiss(
    p_ids => %(ids)s::bigint[], p_source => %(source)s::text, p_event_type => %(event_type)s::text,
    p_since => %(since)s::timestamptz, p_until => %(until)s::timestamptz,
    p_reason => %(reason)s::text, p_by => %(by)s::text) ORDER BY event_id;

-- name: progress
-- How far a set of replayed events has come.
SELECT count(*) FILTER (WHERE status IN ('succeeded', 'skipped', 'dead')) AS done,
       count(*) FILTER (WHERE status = 'dead') AS dead,
       count(*) AS total
FROM hookline.events WHERE id = ANY(%(ids)s::bigint[]);
