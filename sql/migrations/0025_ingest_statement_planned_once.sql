-- Ingest's group commit is planned once per session, not at every batch.
--
-- store_events (sql/queries/ingest.sql) was a statement of its own, prepared on the web process's
-- connections. For the small batches of a moderate request rate (one to a few rows, the rate at which
-- ack latency and synchronous replies are measured) Postgres made a custom plan at every execution and
-- never switched to the generic one (pg_prepared_statements after 60 one-row batches: 0 generic plans,
-- 60 custom): with the arrays' lengths known, a custom plan always looks cheaper. Planning took about
-- a third of the backend's time for such a batch (the BIND alone 0.45-0.68 ms in the log of a
-- synchronous request). Batches of ten rows and more already settled on the generic plan.
--
-- The statement is now this function, planned once per session (plan_cache_mode =
-- force_generic_plan, as migration 0024 did for the worker's fetch and claim); store_events calls it
-- with the same fourteen arrays and gets the same columns. SQL-language functions keep their plans for
-- the session since Postgres 18; on older servers the body is planned at each call, as the statement
-- was. Measured as the backend's own CPU time, the old statement and the function interleaved on two
-- connections, 1,000 one-row batches each: see the README's performance notes ("This round").
--
-- The body is the statement as it was (migration 0018's notify mode), with one change: the lookup of
-- stored deliveries names the unique index's columns in a row comparison, so that a plan made once
-- probes that index whatever the table held when it was made (see the comment at the lookup).
-- set_config(..., true) inside the body lasts for the transaction: a function's SET clause restores
-- only the parameters it names.

CREATE FUNCTION hookline.store_events(
    p_source text[], p_delivery_id text[], p_event_type text[], p_tenant text[], p_ordering_key text[],
    p_occurred_at timestamptz[], p_headers text[], p_body bytea[], p_payload text[], p_content_type text[],
    p_remote_addr text[], p_request_id text[], p_priority integer[], p_respond_sync boolean[]
)
RETURNS TABLE (n bigint, id bigint, inserted boolean)
LANGUAGE sql
SET plan_cache_mode = force_generic_plan  -- planned once per session (see above)
AS $$
    WITH input AS MATERIALIZED (
        SELECT *, set_config('hookline.notify',
                             CASE WHEN true = ANY (p_respond_sync) THEN 'inline' ELSE 'after_commit' END,
                             true) AS notify_mode
        FROM unnest(p_source, p_delivery_id, p_event_type, p_tenant, p_ordering_key, p_occurred_at,
                    p_headers, p_body, p_payload, p_content_type, p_remote_addr, p_request_id, p_priority,
                    p_respond_sync)
            WITH ORDINALITY AS i (source, delivery_id, event_type, tenant, ordering_key, occurred_at,
                                  headers, body, payload, content_type, remote_addr, request_id, priority,
                                  respond_sync, n)
    ),
    known AS (
        -- One probe of the unique index per input row, whatever the statistics say: the plan is made
        -- once, maybe while the table is empty (a new deployment), and kept while it fills. As a plain
        -- join it hash-joined a scan of the whole table (migration 0018's notes). With the two
        -- equalities alone, a plan made while the table was empty probed events_source_type_received_idx
        -- by source and filtered on delivery_id, reading every stored event of the source for each
        -- input row (ingest fell to half its rate within seconds). The row comparison repeats the
        -- equalities; only the (source, delivery_id) index can take it as an index condition.
        SELECT i.n, e.id
        FROM input i
        CROSS JOIN LATERAL (
            SELECT e.id FROM hookline.events e
            WHERE e.source = i.source AND e.delivery_id = i.delivery_id
              AND (e.source, e.delivery_id) >= (i.source, i.delivery_id)
            LIMIT 1
        ) AS e
    ),
    ins AS (
        INSERT INTO hookline.events
            (source, delivery_id, event_type, tenant, ordering_key, occurred_at,
             headers, body, payload, content_type, remote_addr, request_id, priority, respond_sync)
        SELECT i.source, i.delivery_id, i.event_type, i.tenant, i.ordering_key, i.occurred_at,
               i.headers::jsonb, i.body, i.payload::jsonb, i.content_type, i.remote_addr, i.request_id,
               i.priority, i.respond_sync
        FROM input i
        WHERE i.n NOT IN (SELECT k.n FROM known k)
        ORDER BY i.n
        ON CONFLICT (source, delivery_id) DO NOTHING
        RETURNING hookline.events.id, hookline.events.source, hookline.events.delivery_id
    )
    SELECT k.n, k.id, false FROM known k
    UNION ALL
    SELECT i.n, ins.id, true
    FROM ins JOIN input i ON i.source = ins.source AND i.delivery_id = ins.delivery_id
$$;

COMMENT ON FUNCTION hookline.store_events(text[], text[], text[], text[], text[], timestamptz[], text[], bytea[],
                                          text[], text[], text[], text[], integer[], boolean[]) IS
  'Ingest''s group commit (store_events in sql/queries/ingest.sql, app/web/batcher.py): many verified '
  'deliveries as parallel arrays in hookline.events'' column order (headers and payload as JSON text), '
  'inserted with ON CONFLICT (source, delivery_id) DO NOTHING. One row back per input row that is stored: '
  'n (1-based position in the arrays), id, inserted (false: already stored before this statement); an '
  'input row missing from the answer conflicted with a delivery committed meanwhile. Sets hookline.notify '
  'for the transaction: ''inline'' when a row is a synchronous request (p_respond_sync), else '
  '''after_commit'' (the writer calls hookline.notify_events_stored after its commit; migration 0018). '
  'Planned once per session (migration 0025).';
