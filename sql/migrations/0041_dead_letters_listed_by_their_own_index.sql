-- The admin API's and the dashboard's list of dead letters reads the dead letters of its page, not the
-- events table.
--
-- sql/queries/admin.sql's dead_letters (GET /admin/api/dead-letters, and the dashboard's overview on every
-- load) asks for the newest dead letters by id. No index holds the dead events in id order, so Postgres
-- walked events_pkey backwards from the newest event, skipping every event that was not dead, until it
-- had a page; the join that added each one's tenant then read the whole table again by id. Dead letters
-- from an incident a while ago under 297,000 newer events: 594,000 rows read and 120 ms for one page,
-- growing with the table. events_dead_idx holds only the dead events, by id: a page reads its own rows
-- (a backward scan from the cursor), and the query now looks up each one's tenant by primary key.
--
-- Plain CREATE INDEX, as in migration 0030: it holds a SHARE lock on hookline.events while it reads the
-- table (ingest and the worker's writes to events wait; about 1 s per 2 million events). On a much larger
-- table, create the same index by hand with CREATE INDEX CONCURRENTLY before `hookline migrate`; this
-- statement then does nothing.

CREATE INDEX IF NOT EXISTS events_dead_idx ON hookline.events (id) WHERE status = 'dead';

COMMENT ON INDEX hookline.events_dead_idx IS
  'The dead letters (status dead) by id: what the admin API''s and the dashboard''s list of '
  'hookline.dead_letters reads, newest first, a page at a time. An event leaves it when it is replayed.';
