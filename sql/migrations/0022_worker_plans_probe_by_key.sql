-- Three more statements of the worker keep probing by key, whatever statistics their plans were made
-- with.
--
-- Found by logging every sequential scan of hookline.events and procrastinate_jobs during the bench's
-- throughput and ack rows (a test build of Postgres with an ExecutorEnd hook): after migration 0021,
-- the first two below made all of them (3,174 and 1,864 scans in 70 s, 26 million rows read); the
-- third showed up in the test written for the second.
--
-- hookline.count_llm_calls (migration 0014; the statement trigger of every insert into llm_calls, so
-- once per group commit of answers) joined the new calls to hookline.events for their tenant, twice.
-- Its plan is made once per session, usually while events is small: a hash join over a sequential
-- scan of the whole events table, so every batch of answers read every event twice. Each call now
-- looks its event up by primary key (a lateral probe), planned with sequential scans off.
--
-- The worker's fetch (fetch_job in sql/queries/worker.sql) asks whether another job is runnable
-- (more_waiting, which decides between claiming the lone job's event at once and a batch claim). Its
-- prepared plan, made on a near-empty queue, scanned procrastinate_jobs, which keeps every finished job
-- until retention prunes it: the scan stopped early while a backlog waited, and read the whole table
-- when nothing else was waiting, the usual case at a steady rate. It is now hookline.job_waiting, which
-- plans with sequential and bitmap scans off: an index scan over the todo jobs alone (a partial index)
-- that stops at the first one runnable.
--
-- procrastinate_fetch_job_v2 itself (planned with sorting off since migration 0013) updates the job it
-- picked with UPDATE procrastinate_jobs ... FROM candidate WHERE id = candidate.id. With statistics taken
-- during a burst (nearly every job todo), its cached plan hash-joined that one candidate to a sequential
-- scan of the whole table: every fetch read every job ever kept (10,200 rows in the test). It now plans
-- with sequential scans off as well: the candidate is found by walking the todo index, the update by
-- primary key.

ALTER FUNCTION procrastinate_fetch_job_v2(character varying[], bigint) SET enable_seqscan = off;

CREATE OR REPLACE FUNCTION hookline.count_llm_calls() RETURNS trigger
LANGUAGE plpgsql
SET search_path = pg_catalog, pg_temp
SET enable_seqscan = off  -- by primary key, whatever the statistics say (see above)
AS $$
BEGIN
    -- one upsert per total, in key order: concurrent statements lock the rows they share in the
    -- same order, so they queue instead of deadlocking
    INSERT INTO hookline.metric_totals AS t (metric, pipeline, model, tenant, kind, status, shard, value)
    SELECT k.metric, '', k.model, k.tenant, k.kind, k.status, (pg_backend_pid() % 8)::smallint, sum(k.v)
    FROM (
        SELECT 'model_calls' AS metric, n.model, '' AS tenant, '' AS kind, n.status, 1::numeric AS v
        FROM new_calls n
        UNION ALL
        SELECT 'tokens', n.model, coalesce(e.tenant, ''), x.kind, '', x.v::numeric
        FROM new_calls n
        CROSS JOIN LATERAL (SELECT e.tenant FROM hookline.events e WHERE e.id = n.event_id LIMIT 1) AS e
        CROSS JOIN LATERAL (VALUES ('input', n.input_tokens), ('output', n.output_tokens),
                                   ('cache_creation', n.cache_creation_input_tokens),
                                   ('cache_read', n.cache_read_input_tokens)) AS x(kind, v)
        WHERE coalesce(x.v, 0) <> 0
        UNION ALL
        SELECT 'cost_usd', n.model, coalesce(e.tenant, ''), '', '', n.cost_usd
        FROM new_calls n
        CROSS JOIN LATERAL (SELECT e.tenant FROM hookline.events e WHERE e.id = n.event_id LIMIT 1) AS e
        WHERE n.cost_usd IS NOT NULL
    ) AS k
    GROUP BY k.metric, k.model, k.tenant, k.kind, k.status
    ORDER BY k.metric, k.model, k.tenant, k.kind, k.status
    ON CONFLICT (metric, pipeline, model, tenant, kind, status, shard)
    DO UPDATE SET value = t.value + excluded.value;
    RETURN NULL;
END
$$;

COMMENT ON FUNCTION hookline.count_llm_calls() IS
  'Statement trigger function: adds the model calls an INSERT stored to the model_calls, tokens and '
  'cost_usd totals of hookline.metric_totals, one upsert per total (in key order). Each call''s tenant '
  'is read from its event by primary key, planned with sequential scans off (migration 0022).';

CREATE FUNCTION hookline.job_waiting(p_queues character varying[], p_except bigint) RETURNS boolean
LANGUAGE sql
STABLE
SET enable_seqscan = off     -- the todo jobs alone, whatever the statistics say (see above)
SET enable_bitmapscan = off  -- an index scan stops at the first match; a bitmap reads every todo job
AS $$
    SELECT EXISTS (
        SELECT 1 FROM procrastinate_jobs j
        WHERE j.status = 'todo' AND j.id <> p_except
          -- an expression: the queue_name index holds every job ever kept (see fetch_job)
          AND (p_queues IS NULL OR (j.queue_name || '') = ANY (p_queues))
          AND (j.scheduled_at IS NULL OR j.scheduled_at <= now())
    )
$$;

COMMENT ON FUNCTION hookline.job_waiting(character varying[], bigint) IS
  'Whether a job other than p_except is runnable now (todo, due) in queues p_queues (NULL: any queue): '
  'the more_waiting column of the worker''s fetch (fetch_job in sql/queries/worker.sql). Planned with '
  'sequential and bitmap scans off, so it walks a partial index of todo jobs and stops at the first '
  'runnable one, however many finished jobs the table keeps (migration 0022).';
