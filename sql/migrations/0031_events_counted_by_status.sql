-- Events per status come from a counter kept by statement triggers, not from a scan of the events
-- table; the admin event list is planned for the filters of each call.
--
-- The dashboard (on load, and every 2 s for each open tab), `hookline status` and GET /metrics counted
-- the events by status with a scan of hookline.events: 0.4-0.5 s at 2M rows, growing with the table.
-- hookline.event_status_counts now holds the counts, kept exactly in the writing transaction by
-- statement triggers on hookline.events (INSERT, UPDATE, DELETE, TRUNCATE): each statement adds its
-- net change per status, so the group commit of many rows costs one upsert per status it changed, and
-- an UPDATE that changes no status (a claim's admitted_at, a payload prune) none. The upserts go to
-- one of 16 slots per status, chosen by the writing backend (pg_backend_pid() % 16) as the
-- metric_totals shards are, so concurrent ingest and worker transactions do not queue on one row per
-- status; readers sum the slots (hookline.events_by_status). A statement upserts its statuses in
-- status order, so two statements sharing a slot queue instead of deadlocking. The transition tables
-- the triggers read are the ones the INSERT (enqueue, notify) and UPDATE (events_finished) triggers
-- already collect.
--
-- hookline.list_events is the admin list's query (sql/queries/admin.sql) made a function that is
-- planned for each call's values: as a prepared statement it fell to a generic plan after five calls,
-- in which "status = $3 OR $3 IS NULL" cannot use events_status_received_idx, and a status with no
-- events (retrying) read the whole table backwards by id (1.5 s at 2M rows) to return nothing.

CREATE TABLE hookline.event_status_counts (
    status text NOT NULL,
    shard smallint NOT NULL,
    n bigint NOT NULL,
    CONSTRAINT event_status_counts_pkey PRIMARY KEY (status, shard)
);
COMMENT ON TABLE hookline.event_status_counts IS
  'Events per status, kept by the statement triggers of hookline.events in the writing transaction, '
  'in slots (shard) summed on read: read hookline.events_by_status.';
COMMENT ON COLUMN hookline.event_status_counts.status IS 'An event status (hookline.events.status).';
COMMENT ON COLUMN hookline.event_status_counts.shard IS
  'The slot: pg_backend_pid() % 16 of the writing backend (0 for the initial count), so concurrent '
  'writers seldom update the same row.';
COMMENT ON COLUMN hookline.event_status_counts.n IS
  'This slot''s share of the count (may be negative: a slot counts what its writers changed).';
COMMENT ON CONSTRAINT event_status_counts_pkey ON hookline.event_status_counts IS
  'One row per status and slot (the upserts'' conflict target).';

CREATE VIEW hookline.events_by_status AS
SELECT status, sum(n)::bigint AS n
FROM hookline.event_status_counts
GROUP BY status
HAVING sum(n) <> 0;
COMMENT ON VIEW hookline.events_by_status IS
  'Events per status, exact (the slots of hookline.event_status_counts summed); statuses with no '
  'events are left out. Same answer as SELECT status, count(*) FROM hookline.events GROUP BY status, '
  'without reading the events table.';
COMMENT ON COLUMN hookline.events_by_status.status IS 'The event status.';
COMMENT ON COLUMN hookline.events_by_status.n IS 'Events with that status.';

CREATE FUNCTION hookline.count_events_inserted() RETURNS trigger
LANGUAGE plpgsql SET search_path = pg_catalog, pg_temp AS $$
BEGIN
    INSERT INTO hookline.event_status_counts AS t (status, shard, n)
    SELECT r.status, (pg_backend_pid() % 16)::smallint, count(*)
    FROM new_events r
    GROUP BY r.status
    ORDER BY r.status  -- statements sharing a slot lock its rows in the same order
    ON CONFLICT (status, shard) DO UPDATE SET n = t.n + excluded.n;
    RETURN NULL;
END
$$;
COMMENT ON FUNCTION hookline.count_events_inserted() IS
  'Statement trigger function: adds the events an INSERT stored to hookline.event_status_counts, one '
  'upsert per status (in status order).';

CREATE FUNCTION hookline.count_events_updated() RETURNS trigger
LANGUAGE plpgsql SET search_path = pg_catalog, pg_temp AS $$
BEGIN
    INSERT INTO hookline.event_status_counts AS t (status, shard, n)
    SELECT d.status, (pg_backend_pid() % 16)::smallint, sum(d.n)
    FROM (SELECT r.status, 1 AS n FROM new_events r
          UNION ALL
          SELECT r.status, -1 FROM old_events r) AS d
    GROUP BY d.status
    HAVING sum(d.n) <> 0  -- an UPDATE that changes no status writes nothing
    ORDER BY d.status
    ON CONFLICT (status, shard) DO UPDATE SET n = t.n + excluded.n;
    RETURN NULL;
END
$$;
COMMENT ON FUNCTION hookline.count_events_updated() IS
  'Statement trigger function: moves the events an UPDATE changed the status of between the counts of '
  'hookline.event_status_counts, one upsert per status whose count changed (in status order).';

CREATE FUNCTION hookline.count_events_deleted() RETURNS trigger
LANGUAGE plpgsql SET search_path = pg_catalog, pg_temp AS $$
BEGIN
    INSERT INTO hookline.event_status_counts AS t (status, shard, n)
    SELECT r.status, (pg_backend_pid() % 16)::smallint, -count(*)
    FROM old_events r
    GROUP BY r.status
    ORDER BY r.status
    ON CONFLICT (status, shard) DO UPDATE SET n = t.n + excluded.n;
    RETURN NULL;
END
$$;
COMMENT ON FUNCTION hookline.count_events_deleted() IS
  'Statement trigger function: takes the events a DELETE removed off hookline.event_status_counts, one '
  'upsert per status (in status order).';

CREATE FUNCTION hookline.count_events_truncated() RETURNS trigger
LANGUAGE plpgsql SET search_path = pg_catalog, pg_temp AS $$
BEGIN
    DELETE FROM hookline.event_status_counts;
    RETURN NULL;
END
$$;
COMMENT ON FUNCTION hookline.count_events_truncated() IS
  'Statement trigger function: a TRUNCATE of hookline.events empties hookline.event_status_counts.';

CREATE TRIGGER events_count_inserted
    AFTER INSERT ON hookline.events
    REFERENCING NEW TABLE AS new_events
    FOR EACH STATEMENT EXECUTE FUNCTION hookline.count_events_inserted();
COMMENT ON TRIGGER events_count_inserted ON hookline.events IS
  'Keeps hookline.event_status_counts up to date, once per INSERT statement, in the inserting transaction.';

CREATE TRIGGER events_count_updated
    AFTER UPDATE ON hookline.events
    REFERENCING OLD TABLE AS old_events NEW TABLE AS new_events
    FOR EACH STATEMENT EXECUTE FUNCTION hookline.count_events_updated();
COMMENT ON TRIGGER events_count_updated ON hookline.events IS
  'Keeps hookline.event_status_counts up to date, once per UPDATE statement, in the updating transaction.';

CREATE TRIGGER events_count_deleted
    AFTER DELETE ON hookline.events
    REFERENCING OLD TABLE AS old_events
    FOR EACH STATEMENT EXECUTE FUNCTION hookline.count_events_deleted();
COMMENT ON TRIGGER events_count_deleted ON hookline.events IS
  'Keeps hookline.event_status_counts up to date, once per DELETE statement, in the deleting transaction.';

CREATE TRIGGER events_count_truncated
    AFTER TRUNCATE ON hookline.events
    FOR EACH STATEMENT EXECUTE FUNCTION hookline.count_events_truncated();
COMMENT ON TRIGGER events_count_truncated ON hookline.events IS
  'Empties hookline.event_status_counts when hookline.events is truncated.';

CREATE FUNCTION hookline.recount_events_by_status() RETURNS void
LANGUAGE plpgsql SET search_path = pg_catalog, pg_temp AS $$
BEGIN
    LOCK TABLE hookline.events IN SHARE MODE;  -- writers wait until this transaction ends; readers do not
    DELETE FROM hookline.event_status_counts;
    INSERT INTO hookline.event_status_counts (status, shard, n)
    SELECT e.status, 0, count(*) FROM hookline.events e GROUP BY e.status;
END
$$;
COMMENT ON FUNCTION hookline.recount_events_by_status() IS
  'Recounts hookline.event_status_counts from hookline.events (one scan; writers of events wait for it). '
  'Only needed after writes that skipped the triggers (session_replication_role = replica, ALTER TABLE '
  '... DISABLE TRIGGER, a data-only restore with --disable-triggers).';

-- The initial count. CREATE TRIGGER holds a lock on hookline.events that keeps writers out until this
-- migration commits, so no write falls between the count and the triggers.
SELECT hookline.recount_events_by_status();

CREATE FUNCTION hookline.list_events(
    p_source text, p_event_type text, p_status text, p_tenant text,
    p_since timestamptz, p_until timestamptz, p_before bigint, p_limit integer
) RETURNS TABLE (
    id bigint, source text, delivery_id text, event_type text, tenant text, status text, attempts integer,
    replays integer, dry_run boolean, detail text, last_error text,
    received_at timestamptz, started_at timestamptz, finished_at timestamptz
)
LANGUAGE plpgsql STABLE
SET search_path = pg_catalog, pg_temp
SET plan_cache_mode = force_custom_plan  -- planned for the filters given, never one generic plan for all
AS $$
BEGIN
    RETURN QUERY
    SELECT e.id, e.source, e.delivery_id, e.event_type, e.tenant, e.status, e.attempts, e.replays, e.dry_run,
           e.detail, e.last_error, e.received_at, e.started_at, e.finished_at
    FROM hookline.events e
    WHERE (p_source IS NULL OR e.source = p_source)
      AND (p_event_type IS NULL OR e.event_type = p_event_type)
      AND (p_status IS NULL OR e.status = p_status)
      AND (p_tenant IS NULL OR e.tenant = p_tenant)
      AND (p_since IS NULL OR e.received_at >= p_since)
      AND (p_until IS NULL OR e.received_at < p_until)
      AND (p_before IS NULL OR e.id < p_before)
    ORDER BY e.id DESC
    LIMIT p_limit;
END
$$;
COMMENT ON FUNCTION hookline.list_events(text, text, text, text, timestamptz, timestamptz, bigint, integer) IS
  'The admin event list: events matching every filter given (NULL = any), newest first, ids below '
  'p_before, at most p_limit. Planned for each call''s values (plan_cache_mode = force_custom_plan), '
  'so a status filter uses events_status_received_idx.';
