-- hookline.alerts_sent is pruned: its rows older than a day are deleted by the maintenance task.
--
-- The loop guard claims one row per (pipeline and ordering key or tenant) and UTC hour before it
-- alerts (claim_once in sql/queries/limits.sql), so that one alert goes out per key and hour however
-- many workers hold that key's events. Only the current hour's rows are ever claimed again; nothing
-- deleted the others, and the ordering keys come from senders' payloads, so a sender looping on many
-- keys added rows for good. hookline.prune_alerts_sent deletes, a batch at a time, the rows of hours
-- that began more than a day ago (a day of them is kept to show an operator which keys tripped);
-- worker.runtime.Runtime.retention calls it every minute, after the job and payload batches.
--
-- alerts_sent_window_idx lets each batch read only the rows due. Plain CREATE INDEX, as in migrations
-- 0030 and 0049: the table holds one row per tripped key and hour, so it is small next to the events
-- table (a SHARE lock while it builds: a loop guard's claim waits for it).

CREATE INDEX IF NOT EXISTS alerts_sent_window_idx ON hookline.alerts_sent (window_start);

COMMENT ON INDEX hookline.alerts_sent_window_idx IS
  'Loop-guard alert claims by hour: what hookline.prune_alerts_sent (retention, every minute) reads.';

CREATE FUNCTION hookline.prune_alerts_sent(p_batch integer)
RETURNS integer
LANGUAGE sql
SET search_path = pg_catalog, pg_temp
SET enable_seqscan = off  -- a lookup by hour, whatever the statistics said when the plan was made
AS $$
    WITH due AS MATERIALIZED (
        SELECT a.kind, a.subject, a.window_start
        FROM hookline.alerts_sent a
        WHERE a.window_start < now() - interval '1 day'
        ORDER BY a.window_start
        LIMIT p_batch
        FOR UPDATE SKIP LOCKED
    ), gone AS (
        DELETE FROM hookline.alerts_sent a
        USING due d
        WHERE (a.kind, a.subject, a.window_start) = (d.kind, d.subject, d.window_start)
        RETURNING 1
    )
    SELECT count(*)::integer FROM gone;
$$;

COMMENT ON FUNCTION hookline.prune_alerts_sent(integer) IS
  'Retention of hookline.alerts_sent: delete up to p_batch claims of hours that began more than a day '
  'ago, the oldest first (only the current hour''s are claimed again); returns how many.';
