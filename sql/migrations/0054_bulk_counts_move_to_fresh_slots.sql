-- A transaction that writes hookline.events in many statements (a bulk UPDATE of a watched table: one
-- INSERT per row, from hookline.row_event) moves to a fresh count slot every 32 statements, so its cost
-- per row stays flat.
--
-- The statement triggers of hookline.events (migrations 0031, 0046) upsert the counts into the slot of
-- the writing backend, pg_backend_pid() % 16. Within one transaction every statement updated the same
-- row again, and no version of it can be pruned before the transaction ends, so the k-th upsert stepped
-- over k versions: 5,000 rows updated in one transaction cost 0.49 ms per row, 50,000 rows 0.79 ms,
-- 100,000 rows 2.3 ms (0.32 ms per row at 50,000 with the insert count trigger disabled). Now the
-- triggers take their slot from hookline.count_slot(): the first 32 firings of a transaction use the
-- backend's slot as before (a group commit, a claim, a finish: no change, no new row), each further 32
-- one slot of their own, numbered by the transaction's id and the chunk, so no count row is updated more
-- than 32 times in one transaction and two transactions never share such a slot (no new waits). Readers
-- sum every slot, so the counts stay exact at every moment. The worker's maintenance folds committed
-- overflow slots into slot 16 (hookline.fold_count_slots), a slot no writer uses, in bounded batches.
--
-- The events_finished totals of hookline.metric_totals (an UPDATE that finishes events, migration
-- 0026) take the same overflow slots; their first 32 firings keep the backend's shard, 0-7.
--
-- The slot columns widen from smallint to bigint (the overflow slots are 17 + xid * 2^31 + chunk);
-- the base slots keep their meaning. ALTER TABLE holds the three small tables for the rewrite only;
-- writers wait for it, and use the new functions once it commits.

ALTER TABLE hookline.event_status_counts ALTER COLUMN shard TYPE bigint;
ALTER TABLE hookline.dismissed_counts ALTER COLUMN shard TYPE bigint;
ALTER TABLE hookline.metric_totals ALTER COLUMN shard TYPE bigint;
COMMENT ON COLUMN hookline.metric_totals.shard IS
  'Contention shard, not a label: 0-7, pg_backend_pid() % 8 of the writing backend; 16, overflow '
  'slots folded by the maintenance (hookline.fold_count_slots); 17 and up, one transaction''s '
  'events_finished totals past its 32nd count-trigger firing (hookline.count_slot, migration 0054).';
COMMENT ON COLUMN hookline.event_status_counts.shard IS
  'The slot (hookline.count_slot): 0-15, pg_backend_pid() % 16 of the writing backend (0 also for a '
  'recount), so concurrent writers seldom update the same row; 16, the overflow slots folded by the '
  'maintenance (hookline.fold_count_slots); 17 and up, one transaction''s statements past its 32nd, 32 '
  'per slot (migration 0054).';
COMMENT ON COLUMN hookline.dismissed_counts.shard IS
  'The slot, as in hookline.event_status_counts: 0-15 per writing backend, 16 folded, 17 and up one '
  'transaction''s overflow slots (migration 0054).';

CREATE FUNCTION hookline.count_slot() RETURNS bigint
LANGUAGE plpgsql VOLATILE SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    -- firings so far in this transaction (set_config(..., true): back to nothing when it ends, and
    -- rolled back with a savepoint, as the rows written meanwhile are)
    v_fired bigint := coalesce(nullif(current_setting('hookline.count_firings', true), ''), '0')::bigint;
    v_chunk bigint := v_fired / 32;
BEGIN
    PERFORM set_config('hookline.count_firings', (v_fired + 1)::text, true);
    IF v_chunk = 0 THEN
        RETURN pg_backend_pid() % 16;
    END IF;
    RETURN 17 + (txid_current() % 2147483648) * 2147483648 + (v_chunk - 1) % 2147483648;
END
$$;
COMMENT ON FUNCTION hookline.count_slot() IS
  'The count slot for this firing of a count trigger of hookline.events: the backend''s slot '
  '(pg_backend_pid() % 16) for the first 32 firings of a transaction, then a slot of this transaction''s '
  'own for each further 32 (17 + xid * 2^31 + chunk), so no count row is updated more than 32 times in '
  'one transaction (each update leaves a version the next must step over until the transaction ends). '
  'Counts its firings in the transaction-local setting hookline.count_firings.';

CREATE FUNCTION hookline.fold_count_slots(p_batch integer) RETURNS integer
LANGUAGE plpgsql SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    v_status integer;
    v_dismissed integer;
    v_totals integer;
BEGIN
    WITH picked AS (
        SELECT c.status, c.shard FROM hookline.event_status_counts c
        WHERE c.shard > 16
        ORDER BY c.status, c.shard
        LIMIT p_batch
        FOR UPDATE SKIP LOCKED
    ), moved AS (
        DELETE FROM hookline.event_status_counts c USING picked p
        WHERE c.status = p.status AND c.shard = p.shard
        RETURNING c.status, c.n
    ), folded AS (
        INSERT INTO hookline.event_status_counts AS t (status, shard, n)
        SELECT m.status, 16, sum(m.n) FROM moved m GROUP BY m.status ORDER BY m.status
        ON CONFLICT (status, shard) DO UPDATE SET n = t.n + excluded.n
    )
    SELECT count(*) INTO v_status FROM moved;
    WITH picked AS (
        SELECT c.shard FROM hookline.dismissed_counts c
        WHERE c.shard > 16
        ORDER BY c.shard
        LIMIT p_batch
        FOR UPDATE SKIP LOCKED
    ), moved AS (
        DELETE FROM hookline.dismissed_counts c USING picked p
        WHERE c.shard = p.shard
        RETURNING c.n
    ), folded AS (
        INSERT INTO hookline.dismissed_counts AS t (shard, n)
        SELECT 16, sum(m.n) FROM moved m HAVING count(*) > 0
        ON CONFLICT (shard) DO UPDATE SET n = t.n + excluded.n
    )
    SELECT count(*) INTO v_dismissed FROM moved;
    WITH picked AS (
        SELECT c.metric, c.pipeline, c.model, c.tenant, c.kind, c.status, c.shard
        FROM hookline.metric_totals c
        WHERE c.shard > 16
        ORDER BY c.metric, c.pipeline, c.model, c.tenant, c.kind, c.status, c.shard
        LIMIT p_batch
        FOR UPDATE SKIP LOCKED
    ), moved AS (
        DELETE FROM hookline.metric_totals c USING picked p
        WHERE (c.metric, c.pipeline, c.model, c.tenant, c.kind, c.status, c.shard)
            = (p.metric, p.pipeline, p.model, p.tenant, p.kind, p.status, p.shard)
        RETURNING c.metric, c.pipeline, c.model, c.tenant, c.kind, c.status, c.value
    ), folded AS (
        INSERT INTO hookline.metric_totals AS t (metric, pipeline, model, tenant, kind, status, shard, value)
        SELECT m.metric, m.pipeline, m.model, m.tenant, m.kind, m.status, 16, sum(m.value)
        FROM moved m
        GROUP BY 1, 2, 3, 4, 5, 6
        ORDER BY 1, 2, 3, 4, 5, 6
        ON CONFLICT (metric, pipeline, model, tenant, kind, status, shard)
        DO UPDATE SET value = t.value + excluded.value
    )
    SELECT count(*) INTO v_totals FROM moved;
    RETURN v_status + v_dismissed + v_totals;
END
$$;
COMMENT ON FUNCTION hookline.fold_count_slots(integer) IS
  'Folds up to p_batch committed overflow slots (17 and up) of hookline.event_status_counts, as many of '
  'hookline.dismissed_counts and as many of hookline.metric_totals, into their slot 16, in one statement each: the sums read the same '
  'before and after. Returns how many slots it folded; the worker''s maintenance calls it until it returns '
  '0. Slots of transactions still running are not seen, and no writer uses '
  'slot 16, so it waits for no writer.';

-- 0046's trigger functions, with the slot of hookline.count_slot().
CREATE OR REPLACE FUNCTION hookline.count_events_inserted() RETURNS trigger
LANGUAGE plpgsql SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    v_slot bigint := hookline.count_slot();
BEGIN
    INSERT INTO hookline.event_status_counts AS t (status, shard, n)
    SELECT r.status, v_slot, count(*)
    FROM new_events r
    GROUP BY r.status
    ORDER BY r.status  -- statements sharing a slot lock its rows in the same order
    ON CONFLICT (status, shard) DO UPDATE SET n = t.n + excluded.n;
    INSERT INTO hookline.dismissed_counts AS t (shard, n)
    SELECT v_slot, count(*)
    FROM new_events r
    WHERE r.status = 'dead' AND r.dismissed_at IS NOT NULL
    HAVING count(*) <> 0
    ON CONFLICT (shard) DO UPDATE SET n = t.n + excluded.n;
    RETURN NULL;
END
$$;
COMMENT ON FUNCTION hookline.count_events_inserted() IS
  'Statement trigger function: adds the events an INSERT stored to hookline.event_status_counts, one '
  'upsert per status (in status order), then the dismissed dead ones to hookline.dismissed_counts, in '
  'the slot of hookline.count_slot().';

CREATE OR REPLACE FUNCTION hookline.count_events_updated() RETURNS trigger
LANGUAGE plpgsql SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    v_slot bigint := hookline.count_slot();
BEGIN
    INSERT INTO hookline.event_status_counts AS t (status, shard, n)
    SELECT d.status, v_slot, sum(d.n)
    FROM (SELECT r.status, 1 AS n FROM new_events r
          UNION ALL
          SELECT r.status, -1 FROM old_events r) AS d
    GROUP BY d.status
    HAVING sum(d.n) <> 0  -- an UPDATE that changes no status writes nothing
    ORDER BY d.status
    ON CONFLICT (status, shard) DO UPDATE SET n = t.n + excluded.n;
    INSERT INTO hookline.dismissed_counts AS t (shard, n)
    SELECT v_slot, sum(d.n)
    FROM (SELECT 1 AS n FROM new_events r WHERE r.status = 'dead' AND r.dismissed_at IS NOT NULL
          UNION ALL
          SELECT -1 FROM old_events r WHERE r.status = 'dead' AND r.dismissed_at IS NOT NULL) AS d
    HAVING coalesce(sum(d.n), 0) <> 0  -- nothing dismissed or un-dismissed: nothing written
    ON CONFLICT (shard) DO UPDATE SET n = t.n + excluded.n;
    RETURN NULL;
END
$$;
COMMENT ON FUNCTION hookline.count_events_updated() IS
  'Statement trigger function: moves the events an UPDATE changed the status of between the counts of '
  'hookline.event_status_counts, one upsert per status whose count changed (in status order), then '
  'hookline.dismissed_counts by the dead events it dismissed or took out of the dismissed (a replay), '
  'in the slot of hookline.count_slot().';

CREATE OR REPLACE FUNCTION hookline.count_events_deleted() RETURNS trigger
LANGUAGE plpgsql SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    v_slot bigint := hookline.count_slot();
BEGIN
    INSERT INTO hookline.event_status_counts AS t (status, shard, n)
    SELECT r.status, v_slot, -count(*)
    FROM old_events r
    GROUP BY r.status
    ORDER BY r.status
    ON CONFLICT (status, shard) DO UPDATE SET n = t.n + excluded.n;
    INSERT INTO hookline.dismissed_counts AS t (shard, n)
    SELECT v_slot, -count(*)
    FROM old_events r
    WHERE r.status = 'dead' AND r.dismissed_at IS NOT NULL
    HAVING count(*) <> 0
    ON CONFLICT (shard) DO UPDATE SET n = t.n + excluded.n;
    RETURN NULL;
END
$$;
COMMENT ON FUNCTION hookline.count_events_deleted() IS
  'Statement trigger function: takes the events a DELETE removed off hookline.event_status_counts, one '
  'upsert per status (in status order), and the dismissed dead ones off hookline.dismissed_counts, in '
  'the slot of hookline.count_slot().';

-- 0026's function, with the slot of hookline.count_slot() past a transaction's 32nd firing.
CREATE OR REPLACE FUNCTION hookline.count_events_finished() RETURNS trigger
LANGUAGE plpgsql
SET search_path = pg_catalog, pg_temp
SET enable_seqscan = off  -- each event's model calls by llm_calls_event_idx, whatever the statistics say
AS $$
DECLARE
    v_slot bigint;
BEGIN
    IF NOT EXISTS (SELECT FROM new_events n WHERE n.status IN ('succeeded', 'dead', 'skipped')) THEN
        RETURN NULL;
    END IF;
    v_slot := hookline.count_slot();
    IF v_slot < 16 THEN
        v_slot := pg_backend_pid() % 8;  -- the metric_totals shards of the backend, as before
    END IF;
    -- one upsert per total, in key order: concurrent statements lock the rows they share in the same
    -- order, so they queue instead of deadlocking
    INSERT INTO hookline.metric_totals AS t (metric, pipeline, model, tenant, kind, status, shard, value)
    SELECT 'events_finished', coalesce(c.pipeline, ''), '', '', '', n.status, v_slot, count(*)
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
  'did), in the events_finished totals of hookline.metric_totals: one upsert per total, in key order, '
  'in the backend''s shard (pg_backend_pid() % 8) or, past the transaction''s 32nd count-trigger '
  'firing, in the overflow slot of hookline.count_slot().';
