-- Least-privilege roles for hookline (issue 12). Run it as the role that owns hookline's schema
-- (the one `hookline migrate` runs as), after `hookline migrate`, and again after upgrades that
-- add tables: it is idempotent.
--
--   psql "$DATABASE_URL" -v ON_ERROR_STOP=1 -f sql/roles.sql
--
-- It creates three group roles without LOGIN, and grants them what each process needs:
--   hookline_web       the web process: store events (INSERT; SELECT for duplicates and health),
--                      which also defers the event's job through the table trigger (procrastinate's
--                      defer function runs with the caller's rights, so it needs INSERT on the job
--                      tables it writes); read the schema version, queue depth and what /metrics shows.
--   hookline_worker    the worker: read and update events, insert a schedule's firings (source
--                      'schedule', which defer their jobs through the same trigger), write llm_calls and
--                      action_runs, run procrastinate (fetch, finish, retry, heartbeats, periodic defers,
--                      pruning).
--   hookline_readonly  DBAs and analysts: SELECT on everything, nothing else.
-- None may create objects, alter or drop tables, or TRUNCATE. Give them to login roles:
--   CREATE ROLE hookline_web_login LOGIN PASSWORD '…' IN ROLE hookline_web;
-- and point each process's DATABASE_URL at its own login. Migrations keep the owner's URL.

DO $$
DECLARE
    r text;
BEGIN
    FOREACH r IN ARRAY ARRAY['hookline_web', 'hookline_worker', 'hookline_readonly'] LOOP
        IF NOT EXISTS (SELECT 1 FROM pg_roles WHERE rolname = r) THEN
            EXECUTE format('CREATE ROLE %I NOLOGIN', r);
        END IF;
    END LOOP;
END;
$$;

COMMENT ON ROLE hookline_web IS 'hookline web process: inserts events (and so defers their jobs), reads health data.';
COMMENT ON ROLE hookline_worker IS 'hookline worker: processes events, runs procrastinate; no DDL.';
COMMENT ON ROLE hookline_readonly IS 'Read-only access to hookline and procrastinate tables for DBAs and analysts.';

-- Every role reaches the schemas (procrastinate's objects live in the schema of the migrations'
-- search_path, usually public).
DO $$
DECLARE
    t text;
    s text := (SELECT n.nspname FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
               WHERE c.relname = 'procrastinate_jobs' AND c.relkind = 'r' LIMIT 1);
BEGIN
    IF s IS NULL THEN
        RAISE EXCEPTION 'procrastinate_jobs not found: run hookline migrate first';
    END IF;
    EXECUTE format('GRANT USAGE ON SCHEMA hookline, %I TO hookline_web, hookline_worker, hookline_readonly', s);

    -- web: store events; the trigger chain writes the job and its audit row
    EXECUTE 'GRANT SELECT, INSERT ON hookline.events TO hookline_web';
    EXECUTE 'GRANT SELECT ON hookline.schema_migrations TO hookline_web';
    -- the views /metrics reads (views are not in the bookkeeping tables' loop below)
    EXECUTE 'GRANT SELECT ON hookline.dead_letter_counts, hookline.breaker_state TO hookline_web';
    EXECUTE format('GRANT SELECT, INSERT ON %I.procrastinate_jobs, %I.procrastinate_events TO hookline_web', s, s);
    EXECUTE format('GRANT USAGE ON ALL SEQUENCES IN SCHEMA %I TO hookline_web', s);

    -- worker: data, never DDL; INSERT for schedule firings (sql/queries/schedules.sql insert_firing)
    EXECUTE 'GRANT SELECT, INSERT, UPDATE ON hookline.events TO hookline_worker';
    EXECUTE 'GRANT SELECT, INSERT, UPDATE ON hookline.llm_calls, hookline.action_runs TO hookline_worker';
    EXECUTE 'GRANT SELECT ON hookline.schema_migrations, hookline.watches TO hookline_worker';
    EXECUTE format('GRANT SELECT, INSERT, UPDATE, DELETE ON ALL TABLES IN SCHEMA %I TO hookline_worker', s);
    EXECUTE format('GRANT USAGE ON ALL SEQUENCES IN SCHEMA %I TO hookline_worker', s);
    EXECUTE 'GRANT USAGE ON ALL SEQUENCES IN SCHEMA hookline TO hookline_worker';

    -- bookkeeping tables the triggers and the worker keep (metric counters, budgets and their
    -- reservations, breakers, rate buckets, concurrency slots, alerts, batches): written by both
    -- processes' statements, never dropped by them
    FOR t IN SELECT c.relname FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
             WHERE n.nspname = 'hookline' AND c.relkind IN ('r', 'p')
               AND c.relname NOT IN ('events', 'llm_calls', 'action_runs', 'watches', 'schema_migrations') LOOP
        EXECUTE format('GRANT SELECT, INSERT, UPDATE, DELETE ON hookline.%I TO hookline_web, hookline_worker', t);
    END LOOP;
    EXECUTE 'GRANT USAGE ON ALL SEQUENCES IN SCHEMA hookline TO hookline_web';

    -- read-only: everything, now and (for tables the owner adds later) in the future
    EXECUTE 'GRANT SELECT ON ALL TABLES IN SCHEMA hookline TO hookline_readonly';
    EXECUTE format('GRANT SELECT ON ALL TABLES IN SCHEMA %I TO hookline_readonly', s);
    EXECUTE 'ALTER DEFAULT PRIVILEGES IN SCHEMA hookline GRANT SELECT ON TABLES TO hookline_readonly';
END;
$$;

-- The SECURITY DEFINER row-event trigger stays out of reach (its EXECUTE is revoked from PUBLIC by
-- migration 0003); replay is an operator tool, run as the owner or a role granted it explicitly.
REVOKE EXECUTE ON FUNCTION hookline.row_event() FROM hookline_web, hookline_worker, hookline_readonly;
