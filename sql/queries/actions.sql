-- Runtime SQL of the worker's actions (psycopg: %(name)s placeholders).

-- name: sql_function_check
-- type = "sql": is schema.function(bigint, jsonb) there, a plain function, callable by this role?
SELECT n.nspname AS schema, p.proname AS function,
       pg_get_function_identity_arguments(p.oid) AS arguments,
       p.prokind = 'f' AS is_function,
       p.proargtypes = '20 3802'::oidvector AS signature_ok,
       has_schema_privilege(n.oid, 'USAGE') AS schema_usage,
       has_function_privilege(p.oid, 'EXECUTE') AS can_execute
FROM pg_proc p
JOIN pg_namespace n ON n.oid = p.pronamespace
WHERE n.nspname = %(schema)s AND p.proname = %(function)s
ORDER BY signature_ok DESC;

-- name: record_action_succeeded
-- The last statement of a sql action's transaction: the call and this record commit together.
UPDATE hookline.action_runs
SET status = 'succeeded', result = %(result)s, error = NULL, finished_at = now()
WHERE id = %(id)s AND status = 'running';

-- name: action_run_status
-- A sql action whose record found its run no longer running (another worker's run of the same event,
-- whose job was taken for stalled, recorded it first): what that run recorded. A statement of its own,
-- so that it sees the commit record_action_succeeded waited for.
SELECT status FROM hookline.action_runs WHERE id = %(id)s;
