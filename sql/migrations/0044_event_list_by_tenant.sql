-- The admin API's event list (hookline.list_events: GET /admin/api/events) filtered by a tenant, or by a
-- source and an event type together, reads those events, not the events table.
--
-- A tenant filter had no index to read: Postgres walked events_pkey backwards from the newest event,
-- skipping every other tenant's, until it had a page, or read the whole table when the tenant had
-- fewer events than a page (a small tenant among many, a misspelt one): 150 ms at 300,000 events,
-- growing with the table. events_tenant_id_idx holds the events of each tenant by id, so a page is a
-- backward scan of its tenant's entries from the cursor.
--
-- A source and an event type given together were estimated as if independent (a quarter of the events
-- of one source times a twentieth of one type), so a pair that no event has (the type of another
-- source, a misspelt type) was expected early in a backward walk of events_pkey, which then read every
-- event (110 ms at 300,000). The statistics object below records which pairs occur (its MCV list, from
-- the next ANALYZE or autoanalyze), so such a pair reads events_source_type_received_idx and finds
-- nothing at once. Creating it takes no lock that writers wait for.
--
-- Plain CREATE INDEX, as in migrations 0030 and 0041: it holds a SHARE lock on hookline.events while it
-- reads the table (ingest and the worker's writes to events wait; about 0.5 s per 300,000 events). On a
-- much larger table, create the same index by hand with CREATE INDEX CONCURRENTLY before
-- `hookline migrate`; this statement then does nothing.

CREATE INDEX IF NOT EXISTS events_tenant_id_idx ON hookline.events (tenant, id) WHERE tenant IS NOT NULL;

COMMENT ON INDEX hookline.events_tenant_id_idx IS
  'The events of each tenant by id: what the admin event list (hookline.list_events) reads for a tenant '
  'filter, newest first, a page at a time.';

CREATE STATISTICS IF NOT EXISTS hookline.events_source_type_stats (mcv) ON source, event_type
FROM hookline.events;

COMMENT ON STATISTICS hookline.events_source_type_stats IS
  'Which (source, event_type) pairs occur, for the planner: a pair no event has is estimated as such, '
  'so the admin event list (hookline.list_events) reads events_source_type_received_idx for it instead '
  'of walking every event by id.';
