-- The model-call totals of hookline.metric_totals are kept per statement instead of per row.
--
-- The worker stores the answers of concurrent jobs in one statement (its group commit). Counted one
-- row at a time, each answer cost a trigger call, a tenant lookup and up to six upserts of the same
-- few metric_totals rows; counted per statement, a batch adds each (metric, labels) total once.
-- Totals and labels are unchanged: model_calls by model and call status; tokens by model, tenant
-- and kind; cost_usd by model and tenant.

DROP TRIGGER llm_calls_count ON hookline.llm_calls;
DROP FUNCTION hookline.count_llm_call();

CREATE FUNCTION hookline.count_llm_calls() RETURNS trigger
LANGUAGE plpgsql SET search_path = pg_catalog, pg_temp AS $$
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
        JOIN hookline.events e ON e.id = n.event_id
        CROSS JOIN LATERAL (VALUES ('input', n.input_tokens), ('output', n.output_tokens),
                                   ('cache_creation', n.cache_creation_input_tokens),
                                   ('cache_read', n.cache_read_input_tokens)) AS x(kind, v)
        WHERE coalesce(x.v, 0) <> 0
        UNION ALL
        SELECT 'cost_usd', n.model, coalesce(e.tenant, ''), '', '', n.cost_usd
        FROM new_calls n
        JOIN hookline.events e ON e.id = n.event_id
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
  'cost_usd totals of hookline.metric_totals, one upsert per total (in key order).';

CREATE TRIGGER llm_calls_count
    AFTER INSERT ON hookline.llm_calls
    REFERENCING NEW TABLE AS new_calls
    FOR EACH STATEMENT EXECUTE FUNCTION hookline.count_llm_calls();
COMMENT ON TRIGGER llm_calls_count ON hookline.llm_calls IS
  'Keeps hookline.metric_totals (model_calls, tokens, cost_usd) up to date, once per INSERT statement, '
  'in the inserting transaction.';
