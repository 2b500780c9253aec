-- The events_finished totals of hookline.metric_totals are kept per statement instead of per row.
--
-- The worker finishes the events of its group commit in one UPDATE (hookline.finish_events). Counted
-- one row at a time, each finished event cost a trigger call, a lookup of its model calls and an
-- upsert of the same few metric_totals rows (a new row version of the same total for every event of
-- the batch). Counted per statement, as the model-call totals are since migration 0014, a batch adds
-- each (pipeline, status) total once. What is counted is unchanged: an event whose status becomes
-- succeeded, dead or skipped, and differs from its old one, counts once per pipeline that made a model
-- call for it ('' when none did).
--
-- A trigger with transition tables cannot name columns (UPDATE OF status), so this one runs after
-- every UPDATE of hookline.events; an UPDATE that finishes nothing (a claim, say) stops at its first
-- test, over the statement's own new rows.

DROP TRIGGER events_count_finished ON hookline.events;
DROP FUNCTION hookline.count_event_finished();

CREATE FUNCTION hookline.count_events_finished() RETURNS trigger
LANGUAGE plpgsql
SET search_path = pg_catalog, pg_temp
SET enable_seqscan = off  -- each event's model calls by llm_calls_event_idx, whatever the statistics say
AS $$
BEGIN
    IF NOT EXISTS (SELECT FROM new_events n WHERE n.status IN ('succeeded', 'dead', 'skipped')) THEN
        RETURN NULL;
    END IF;
    -- one upsert per total, in key order: concurrent statements lock the rows they share in the same
    -- order, so they queue instead of deadlocking
    INSERT INTO hookline.metric_totals AS t (metric, pipeline, model, tenant, kind, status, shard, value)
    SELECT 'events_finished', coalesce(c.pipeline, ''), '', '', '', n.status, (pg_backend_pid() % 8)::smallint,
           count(*)
    FROM new_events n
    JOIN old_events o ON o.id = n.id
    LEFT JOIN LATERAL (SELECT DISTINCT l.pipeline FROM hookline.llm_calls l WHERE l.event_id = n.id) AS c ON true
    WHERE n.status IN ('succeeded', 'dead', 'skipped') AND o.status IS DISTINCT FROM n.status
    GROUP BY 2, 6
    ORDER BY 2, 6
    ON CONFLICT (metric, pipeline, model, tenant, kind, status, shard)
    DO UPDATE SET value = t.value + excluded.value;
    RETURN NULL;
END
$$;
COMMENT ON FUNCTION hookline.count_events_finished() IS
  'Statement trigger function: counts the events an UPDATE brought to a terminal status (succeeded, '
  'dead, skipped) from another one, once per pipeline that made a model call for each ('''' when none '
  'did), in the events_finished totals of hookline.metric_totals: one upsert per total, in key order.';

CREATE TRIGGER events_count_finished
    AFTER UPDATE ON hookline.events
    REFERENCING OLD TABLE AS old_events NEW TABLE AS new_events
    FOR EACH STATEMENT EXECUTE FUNCTION hookline.count_events_finished();
COMMENT ON TRIGGER events_count_finished ON hookline.events IS
  'Keeps the events_finished totals of hookline.metric_totals up to date, once per UPDATE statement, in '
  'the updating transaction.';
