-- Watched tables: row changes of business tables become hookline events.
--
-- hookline.watch(table, ...) installs one AFTER ROW trigger per operation on a business table. The
-- trigger inserts into hookline.events (source 'db') in the writer's own transaction, so the
-- existing events_enqueue trigger defers the processing job in that same transaction: a rolled-back
-- change leaves nothing, a committed one always has its event and its job, with nobody listening.
-- Postgres 14 compatible. Every object carries a COMMENT.

-- ---------------------------------------------------------------------------------------------
-- watches: what is watched, and how
-- ---------------------------------------------------------------------------------------------
CREATE TABLE hookline.watches (
    relation         regclass    NOT NULL,
    label            text        NOT NULL,
    operations       text[]      NOT NULL,
    columns          text[],
    condition        text,
    key_columns      text[]      NOT NULL,
    exclude_columns  text[]      NOT NULL DEFAULT '{}',
    max_value_bytes  integer,
    created_at       timestamptz NOT NULL DEFAULT now(),
    updated_at       timestamptz NOT NULL DEFAULT now(),
    CONSTRAINT watches_pkey PRIMARY KEY (relation),
    CONSTRAINT watches_operations_check CHECK (
        cardinality(operations) > 0 AND operations <@ ARRAY['insert', 'update', 'delete']),
    CONSTRAINT watches_key_columns_check CHECK (cardinality(key_columns) > 0),
    CONSTRAINT watches_columns_check CHECK (columns IS NULL OR cardinality(columns) > 0),
    CONSTRAINT watches_max_value_bytes_check CHECK (max_value_bytes IS NULL OR max_value_bytes > 0)
);

COMMENT ON TABLE hookline.watches IS
  'Business tables whose row changes become events (source ''db''). Written by hookline.watch() and '
  'hookline.unwatch() (psql, `hookline watch`, or [[watch]] in hookline.toml at migrate time); read it '
  'through the view hookline.watched. The triggers themselves carry their settings as arguments.';
COMMENT ON COLUMN hookline.watches.relation IS 'The watched table (oid: stays right across renames).';
COMMENT ON COLUMN hookline.watches.label IS 'schema.table as it was named when watched: the prefix of the event types (label.insert, label.update, label.delete) and the payload''s "table". Re-run watch() after a rename to take the new name.';
COMMENT ON COLUMN hookline.watches.operations IS 'Watched operations, a subset of {insert,update,delete}. TRUNCATE is never an event.';
COMMENT ON COLUMN hookline.watches.columns IS 'UPDATE events fire only when one of these columns changed (IS DISTINCT FROM); NULL: any UPDATE.';
COMMENT ON COLUMN hookline.watches.condition IS 'SQL expression on OLD/NEW that must hold for an event (the triggers'' WHEN clause, parsed by Postgres at watch time); NULL: always.';
COMMENT ON COLUMN hookline.watches.key_columns IS 'Columns identifying a row (the primary key unless given): the event''s "key", delivery id and ordering key.';
COMMENT ON COLUMN hookline.watches.exclude_columns IS 'Columns left out of "old" and "new" in the payload (their names still appear in "changed").';
COMMENT ON COLUMN hookline.watches.max_value_bytes IS 'Values whose JSON text is longer are cut (strings: to this many bytes) or nulled (other types), and named in the payload''s "truncated"; NULL: no limit.';
COMMENT ON COLUMN hookline.watches.created_at IS 'When the table was first watched.';
COMMENT ON COLUMN hookline.watches.updated_at IS 'When the watch settings last changed.';
COMMENT ON CONSTRAINT watches_pkey ON hookline.watches IS 'One watch per table.';
COMMENT ON CONSTRAINT watches_operations_check ON hookline.watches IS 'At least one of insert, update, delete.';
COMMENT ON CONSTRAINT watches_key_columns_check ON hookline.watches IS 'A row event needs a key.';
COMMENT ON CONSTRAINT watches_columns_check ON hookline.watches IS 'columns is NULL (any change) or names at least one column.';
COMMENT ON CONSTRAINT watches_max_value_bytes_check ON hookline.watches IS 'A positive byte limit, or NULL for none.';

-- ---------------------------------------------------------------------------------------------
-- The trigger function (one, generic: its settings come from the trigger's arguments)
-- ---------------------------------------------------------------------------------------------
CREATE FUNCTION hookline.clip_values(p_row jsonb, p_max_bytes integer, OUT clipped jsonb, OUT columns text[])
LANGUAGE plpgsql IMMUTABLE PARALLEL SAFE
SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    v_key   text;
    v_value jsonb;
    v_text  text;
BEGIN
    clipped := p_row;
    IF p_row IS NULL OR p_max_bytes IS NULL THEN
        RETURN;
    END IF;
    FOR v_key, v_value IN
        SELECT e.key, e.value FROM pg_catalog.jsonb_each(p_row) AS e
        WHERE pg_catalog.octet_length(e.value::text) > p_max_bytes
        ORDER BY e.key
    LOOP
        IF pg_catalog.jsonb_typeof(v_value) = 'string' THEN
            v_text := v_value #>> '{}';
            v_text := pg_catalog.left(v_text, p_max_bytes);
            WHILE pg_catalog.octet_length(v_text) > p_max_bytes LOOP
                v_text := pg_catalog.left(v_text, pg_catalog.length(v_text)
                                         - greatest(1, (pg_catalog.octet_length(v_text) - p_max_bytes) / 4));
            END LOOP;
            clipped := pg_catalog.jsonb_set(clipped, ARRAY[v_key], pg_catalog.to_jsonb(v_text));
        ELSE
            clipped := pg_catalog.jsonb_set(clipped, ARRAY[v_key], 'null'::jsonb);
        END IF;
        columns := pg_catalog.array_append(columns, v_key);
    END LOOP;
END;
$$;
COMMENT ON FUNCTION hookline.clip_values(jsonb, integer) IS
  'Row-event helper: top-level values of a row (as jsonb) whose JSON text exceeds p_max_bytes are cut '
  '(strings, to at most p_max_bytes bytes, never inside a character) or set to null (numbers, arrays, '
  'objects); returns the clipped row and the names of the clipped columns.';

CREATE FUNCTION hookline.row_event() RETURNS trigger
LANGUAGE plpgsql
SECURITY DEFINER
SET search_path = pg_catalog, pg_temp AS $$
-- TG_ARGV: [0] label (schema.table at watch time), [1] key columns (text[] literal),
--          [2] excluded columns (text[] literal), [3] max value bytes ('' for no limit).
DECLARE
    v_label    text    := TG_ARGV[0];
    v_keys     text[]  := TG_ARGV[1]::text[];
    v_exclude  text[]  := TG_ARGV[2]::text[];
    v_max      integer := nullif(TG_ARGV[3], '')::integer;
    v_op       text    := pg_catalog.lower(TG_OP);
    v_old      jsonb;
    v_new      jsonb;
    v_row      jsonb;
    v_key      jsonb;
    v_changed  text[];
    v_cut_old  text[];
    v_cut_new  text[];
    v_cut      text[];
    v_txid     bigint  := pg_catalog.txid_current();
    v_seq      bigint;
    v_payload  jsonb;
BEGIN
    IF TG_OP <> 'INSERT' THEN
        v_old := pg_catalog.to_jsonb(OLD);
    END IF;
    IF TG_OP <> 'DELETE' THEN
        v_new := pg_catalog.to_jsonb(NEW);
    END IF;
    v_row := coalesce(v_new, v_old);

    IF pg_catalog.cardinality(v_keys) = 1 THEN
        v_key := pg_catalog.jsonb_build_object(v_keys[1], v_row -> v_keys[1]);
    ELSE
        SELECT pg_catalog.jsonb_object_agg(k.name, v_row -> k.name) INTO v_key
        FROM pg_catalog.unnest(v_keys) AS k(name);
    END IF;

    IF TG_OP = 'UPDATE' THEN
        SELECT coalesce(pg_catalog.array_agg(n.key ORDER BY n.key), '{}') INTO v_changed
        FROM pg_catalog.jsonb_each(v_new) AS n
        WHERE n.value IS DISTINCT FROM v_old -> n.key;
    END IF;

    IF pg_catalog.cardinality(v_exclude) > 0 THEN
        v_old := v_old - v_exclude;
        v_new := v_new - v_exclude;
    END IF;
    IF v_max IS NOT NULL THEN
        SELECT c.clipped, c.columns INTO v_old, v_cut_old FROM hookline.clip_values(v_old, v_max) AS c;
        SELECT c.clipped, c.columns INTO v_new, v_cut_new FROM hookline.clip_values(v_new, v_max) AS c;
        SELECT pg_catalog.array_agg(DISTINCT u.name ORDER BY u.name) INTO v_cut
        FROM pg_catalog.unnest(v_cut_old || v_cut_new) AS u(name);
    END IF;

    -- Per-transaction sequence number: a row changed twice in one transaction gives two events.
    -- Transaction-local setting: it restarts with every transaction and rolls back with a savepoint
    -- (together with the events that used it).
    v_seq := coalesce(nullif(pg_catalog.current_setting('hookline.row_event_seq', true), '')::bigint, 0) + 1;
    PERFORM pg_catalog.set_config('hookline.row_event_seq', v_seq::text, true);

    v_payload := pg_catalog.jsonb_build_object(
        'op', v_op, 'table', v_label, 'key', v_key, 'old', v_old, 'new', v_new,
        'changed', pg_catalog.to_jsonb(v_changed), 'txid', v_txid);
    IF v_cut IS NOT NULL THEN
        v_payload := v_payload || pg_catalog.jsonb_build_object('truncated', pg_catalog.to_jsonb(v_cut));
    END IF;

    INSERT INTO hookline.events
        (source, delivery_id, event_type, ordering_key, occurred_at, status, headers, payload, content_type)
    VALUES (
        'db',
        v_label || ':' || v_key::text || ':' || v_txid || ':' || v_op || ':' || v_seq,
        v_label || '.' || v_op,
        v_label || ':' || v_key::text,
        pg_catalog.clock_timestamp(),
        'queued',
        pg_catalog.jsonb_build_object('db-user', session_user::text,
                                      'application-name', pg_catalog.current_setting('application_name')),
        v_payload,
        'application/json')
    ON CONFLICT (source, delivery_id) DO NOTHING;
    RETURN NULL;
END;
$$;
REVOKE ALL ON FUNCTION hookline.row_event() FROM PUBLIC;
-- The events_enqueue trigger (0002) names procrastinate's defer function and type unqualified, so the
-- definer's search_path must also hold the schema procrastinate was installed in (public, normally);
-- it is looked up here rather than assumed. Everything row_event itself names is schema-qualified.
DO $$
DECLARE
    v_schema text := (SELECT n.nspname FROM pg_catalog.pg_proc p
                      JOIN pg_catalog.pg_namespace n ON n.oid = p.pronamespace
                      WHERE p.proname = 'procrastinate_defer_jobs_v1' ORDER BY n.nspname LIMIT 1);
BEGIN
    IF v_schema IS NULL THEN
        RAISE EXCEPTION 'procrastinate_defer_jobs_v1 not found: migration 0001 must be applied first';
    END IF;
    EXECUTE format('ALTER FUNCTION hookline.row_event() SET search_path = pg_catalog, %I, pg_temp', v_schema);
END;
$$;
COMMENT ON FUNCTION hookline.row_event() IS
  'Trigger function installed by hookline.watch(): stores one row change as a hookline.events row '
  '(source ''db'', type schema.table.op, payload {op, table, key, old, new, changed, txid}), whose job '
  'events_enqueue defers in the same transaction. SECURITY DEFINER with search_path pg_catalog, '
  '<procrastinate''s schema>, pg_temp: '
  'writers need no rights on hookline.*; EXECUTE is revoked from PUBLIC so only roles granted it (and '
  'the owner) can attach it to a table. Settings come from the trigger arguments (label, key columns, '
  'excluded columns, max value bytes).';

-- ---------------------------------------------------------------------------------------------
-- Safety of the SECURITY DEFINER chain: row_event → events_enqueue → hookline.defer_job →
-- procrastinate's functions and triggers, which name some objects unqualified. If another role may
-- CREATE in the schemas on that path, it could plant a function (an exact-type overload wins over
-- pg_catalog's, whatever the search_path) that then runs with the definer's rights.
-- ---------------------------------------------------------------------------------------------
CREATE FUNCTION hookline.unsafe_schema_creators() RETURNS TABLE (schema_name text, role_name text)
LANGUAGE sql STABLE
SET search_path = pg_catalog, pg_temp AS $$
    SELECT n.nspname::text,
           CASE WHEN a.grantee = 0 THEN 'PUBLIC' ELSE a.grantee::regrole::text END
    FROM pg_namespace n
    CROSS JOIN LATERAL aclexplode(coalesce(n.nspacl, acldefault('n', n.nspowner))) a
    WHERE n.oid IN (SELECT pronamespace FROM pg_proc WHERE proname = 'procrastinate_defer_jobs_v1'
                    UNION SELECT 'hookline'::regnamespace::oid)
      AND a.privilege_type = 'CREATE'
      AND (a.grantee = 0 OR NOT (
              pg_has_role((SELECT proowner FROM pg_proc WHERE oid = 'hookline.row_event()'::regprocedure),
                          a.grantee, 'MEMBER')
              OR (SELECT rolsuper FROM pg_roles WHERE oid = a.grantee)));
$$;
COMMENT ON FUNCTION hookline.unsafe_schema_creators() IS
  'Roles (or PUBLIC) other than the owner of hookline.row_event() that may CREATE objects in the '
  'schemas its SECURITY DEFINER chain uses (hookline and procrastinate''s). hookline.watch() refuses '
  'to install a watch while this returns rows: such a role could run code with the owner''s rights.';

-- ---------------------------------------------------------------------------------------------
-- watch / unwatch
-- ---------------------------------------------------------------------------------------------
CREATE FUNCTION hookline.watch(
    "table"         regclass,
    operations      text[]  DEFAULT '{insert,update,delete}',
    columns         text[]  DEFAULT NULL,
    condition       text    DEFAULT NULL,
    key_columns     text[]  DEFAULT NULL,
    exclude_columns text[]  DEFAULT NULL,
    max_value_bytes integer DEFAULT NULL
) RETURNS text
LANGUAGE plpgsql
SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    v_rel       regclass := watch."table";
    v_class     pg_catalog.pg_class%ROWTYPE;
    v_schema    text;
    v_label     text;
    v_ops       text[];
    v_bad       text[];
    v_cols      text[];
    v_cond      text;
    v_keys      text[];
    v_excl      text[];
    v_max       integer := watch.max_value_bytes;
    v_old       hookline.watches%ROWTYPE;
    v_op        text;
    v_trigger   text;
    v_when      text[];
    v_changes   text;
    v_sql       text;
    v_col       text;
    v_tgtype    integer;
    v_comment   text;
    v_ok        boolean;
BEGIN
    IF v_rel IS NULL THEN
        RAISE EXCEPTION 'hookline.watch: table is required' USING ERRCODE = 'invalid_parameter_value';
    END IF;
    SELECT string_agg(format('%s may CREATE in schema %I', u.role_name, u.schema_name), '; ')
    INTO v_label FROM hookline.unsafe_schema_creators() u;
    IF v_label IS NOT NULL THEN
        RAISE EXCEPTION 'hookline.watch: refused, % (the row-change trigger runs with its owner''s rights, '
                        'and such a role could plant a function it calls)', v_label
            USING ERRCODE = 'insufficient_privilege',
                  HINT = 'REVOKE CREATE ON SCHEMA public FROM PUBLIC; (the default since Postgres 15), '
                         'and revoke CREATE from the other roles named.';
    END IF;
    SELECT * INTO v_class FROM pg_catalog.pg_class WHERE oid = v_rel;
    v_schema := (SELECT nspname FROM pg_catalog.pg_namespace WHERE oid = v_class.relnamespace);
    v_label := v_schema || '.' || v_class.relname;
    IF v_class.relkind NOT IN ('r', 'p') THEN
        RAISE EXCEPTION 'hookline.watch: % is not a table (views, sequences and foreign tables cannot be watched)', v_rel
            USING ERRCODE = 'wrong_object_type';
    END IF;
    IF v_class.relpersistence = 't' THEN
        RAISE EXCEPTION 'hookline.watch: % is a temporary table; only permanent tables can be watched', v_rel
            USING ERRCODE = 'wrong_object_type';
    END IF;
    IF v_schema = 'hookline' OR v_class.relname LIKE 'procrastinate\_%' THEN
        RAISE EXCEPTION 'hookline.watch: % belongs to hookline or its job queue; watching it would feed events into themselves', v_rel
            USING ERRCODE = 'invalid_parameter_value';
    END IF;

    -- operations: lower case, known, each once, in a fixed order
    IF operations IS NULL OR cardinality(operations) = 0 THEN
        RAISE EXCEPTION 'hookline.watch: operations must name at least one of insert, update, delete'
            USING ERRCODE = 'invalid_parameter_value';
    END IF;
    SELECT array_agg(DISTINCT lower(btrim(o))) FILTER (WHERE lower(btrim(o)) NOT IN ('insert', 'update', 'delete'))
      INTO v_bad FROM unnest(operations) AS o;
    IF v_bad IS NOT NULL THEN
        RAISE EXCEPTION 'hookline.watch: unknown operation(s) %; use insert, update, delete (TRUNCATE is not a row change)',
            array_to_string(v_bad, ', ') USING ERRCODE = 'invalid_parameter_value';
    END IF;
    SELECT array_agg(k.op ORDER BY k.ord) INTO v_ops
    FROM unnest(ARRAY['insert', 'update', 'delete']) WITH ORDINALITY AS k(op, ord)
    WHERE k.op IN (SELECT lower(btrim(o)) FROM unnest(operations) AS o);

    -- column lists: existing columns only (names as stored, not SQL identifiers)
    v_cols := CASE WHEN cardinality(columns) > 0 THEN columns END;
    v_excl := coalesce(exclude_columns, '{}');
    v_keys := key_columns;
    IF v_keys IS NULL OR cardinality(v_keys) = 0 THEN
        SELECT array_agg(a.attname::text ORDER BY k.ord) INTO v_keys
        FROM pg_catalog.pg_index i
        CROSS JOIN LATERAL unnest(i.indkey::int2[]) WITH ORDINALITY AS k(attnum, ord)
        JOIN pg_catalog.pg_attribute a ON a.attrelid = i.indrelid AND a.attnum = k.attnum
        WHERE i.indrelid = v_rel AND i.indisprimary;
        IF v_keys IS NULL THEN
            RAISE EXCEPTION 'hookline.watch: table % has no primary key', v_rel
                USING ERRCODE = 'invalid_table_definition',
                      HINT = 'Add a primary key, or name the columns that identify a row: key_columns => ''{col}''.';
        END IF;
    END IF;
    SELECT array_agg(DISTINCT c) INTO v_bad
    FROM unnest(coalesce(v_cols, '{}') || v_keys || v_excl) AS c
    WHERE NOT EXISTS (SELECT 1 FROM pg_catalog.pg_attribute a
                      WHERE a.attrelid = v_rel AND a.attname = c AND a.attnum > 0 AND NOT a.attisdropped);
    IF v_bad IS NOT NULL THEN
        RAISE EXCEPTION 'hookline.watch: table % has no column(s) %', v_rel, array_to_string(v_bad, ', ')
            USING ERRCODE = 'undefined_column';
    END IF;
    IF v_cols IS NOT NULL AND NOT 'update' = ANY (v_ops) THEN
        RAISE EXCEPTION 'hookline.watch: columns only filters UPDATE events, and update is not among the operations'
            USING ERRCODE = 'invalid_parameter_value';
    END IF;
    IF v_max IS NOT NULL AND v_max <= 0 THEN
        RAISE EXCEPTION 'hookline.watch: max_value_bytes must be positive' USING ERRCODE = 'invalid_parameter_value';
    END IF;

    -- condition: one SQL expression, spliced into WHEN (...) and then parsed by Postgres as exactly that
    v_cond := nullif(btrim(condition), '');
    IF v_cond IS NOT NULL AND (strpos(v_cond, ';') > 0 OR strpos(v_cond, '--') > 0 OR strpos(v_cond, '/*') > 0) THEN
        RAISE EXCEPTION 'hookline.watch: condition must be a single SQL expression (no ";" and no comments)'
            USING ERRCODE = 'invalid_parameter_value';
    END IF;

    -- nothing to do when the same settings are installed already
    SELECT * INTO v_old FROM hookline.watches w WHERE w.relation = v_rel;
    IF FOUND
       AND v_old.label = v_label AND v_old.operations = v_ops AND v_old.columns IS NOT DISTINCT FROM v_cols
       AND v_old.condition IS NOT DISTINCT FROM v_cond AND v_old.key_columns = v_keys
       AND v_old.exclude_columns = v_excl AND v_old.max_value_bytes IS NOT DISTINCT FROM v_max
       AND (SELECT count(*) FROM pg_catalog.pg_trigger t
            WHERE t.tgrelid = v_rel AND t.tgfoid = 'hookline.row_event()'::regprocedure AND NOT t.tgisinternal
              AND t.tgname IN (SELECT 'hookline_watch_' || o FROM unnest(v_ops) AS o))
           = cardinality(v_ops)
       AND NOT EXISTS (SELECT 1 FROM pg_catalog.pg_trigger t
                       WHERE t.tgrelid = v_rel AND t.tgname LIKE 'hookline\_watch\_%'
                         AND t.tgname NOT IN (SELECT 'hookline_watch_' || o FROM unnest(v_ops) AS o)) THEN
        RETURN 'unchanged';
    END IF;

    -- one watch() at a time per table; then replace the triggers
    PERFORM pg_advisory_xact_lock(hashtextextended('hookline.watch:' || v_rel::oid::text, 0));
    DELETE FROM hookline.watches w WHERE NOT EXISTS (SELECT 1 FROM pg_catalog.pg_class c WHERE c.oid = w.relation);
    FOR v_trigger IN
        SELECT t.tgname FROM pg_catalog.pg_trigger t
        WHERE t.tgrelid = v_rel AND NOT t.tgisinternal
          AND t.tgname IN ('hookline_watch_insert', 'hookline_watch_update', 'hookline_watch_delete')
    LOOP
        EXECUTE format('DROP TRIGGER %I ON %s', v_trigger, v_rel);
    END LOOP;

    FOREACH v_op IN ARRAY v_ops LOOP
        v_trigger := 'hookline_watch_' || v_op;
        v_when := '{}';
        IF v_cond IS NOT NULL THEN
            v_when := v_when || ('(' || v_cond || ')');
        END IF;
        IF v_op = 'update' AND v_cols IS NOT NULL THEN
            v_changes := NULL;
            FOREACH v_col IN ARRAY v_cols LOOP
                -- types without an equality operator (json, xml, point, ...) are compared as text
                v_ok := true;
                BEGIN
                    EXECUTE format('SELECT NULL::%1$s IS DISTINCT FROM NULL::%1$s',
                                   (SELECT format_type(a.atttypid, a.atttypmod) FROM pg_catalog.pg_attribute a
                                    WHERE a.attrelid = v_rel AND a.attname = v_col));
                EXCEPTION WHEN undefined_function THEN
                    v_ok := false;
                END;
                v_changes := concat_ws(' OR ', v_changes,
                    CASE WHEN v_ok THEN format('OLD.%1$I IS DISTINCT FROM NEW.%1$I', v_col)
                         ELSE format('OLD.%1$I::text IS DISTINCT FROM NEW.%1$I::text', v_col) END);
            END LOOP;
            v_when := v_when || ('(' || v_changes || ')');
        END IF;
        v_sql := format('CREATE TRIGGER %I AFTER %s ON %s FOR EACH ROW%s EXECUTE FUNCTION hookline.row_event(%L, %L, %L, %L)',
                        v_trigger, upper(v_op), v_rel,
                        CASE WHEN cardinality(v_when) > 0 THEN ' WHEN (' || array_to_string(v_when, ' AND ') || ')' ELSE '' END,
                        v_label, v_keys::text, v_excl::text, coalesce(v_max::text, ''));
        BEGIN  -- a subtransaction: Postgres parses the condition; its error becomes ours
            EXECUTE v_sql;
        EXCEPTION WHEN OTHERS THEN
            IF v_cond IS NULL THEN
                RAISE;
            END IF;
            RAISE EXCEPTION 'hookline.watch: invalid condition for % events on %: %', upper(v_op), v_rel, SQLERRM
                USING ERRCODE = 'invalid_parameter_value',
                      HINT = 'The condition is one SQL expression on OLD and NEW (e.g. NEW.status = ''cancelled''): '
                             'no subqueries; NEW does not exist for delete nor OLD for insert (narrow operations).';
        END;
        -- the trigger must be exactly what we meant: our function, our arguments, AFTER ROW <op>
        v_tgtype := 1 | CASE v_op WHEN 'insert' THEN 4 WHEN 'delete' THEN 8 ELSE 16 END;
        SELECT count(*) = 1 INTO v_ok FROM pg_catalog.pg_trigger t
        WHERE t.tgrelid = v_rel AND t.tgname = v_trigger AND NOT t.tgisinternal
          AND t.tgfoid = 'hookline.row_event()'::regprocedure AND t.tgtype = v_tgtype AND t.tgnargs = 4
          AND cardinality(t.tgattr::int2[]) = 0
          AND t.tgargs = convert_to(v_label, getdatabaseencoding()) || '\x00'::bytea
                      || convert_to(v_keys::text, getdatabaseencoding()) || '\x00'::bytea
                      || convert_to(v_excl::text, getdatabaseencoding()) || '\x00'::bytea
                      || convert_to(coalesce(v_max::text, ''), getdatabaseencoding()) || '\x00'::bytea;
        IF NOT v_ok OR (SELECT count(*) FROM pg_catalog.pg_trigger t
                        WHERE t.tgrelid = v_rel AND NOT t.tgisinternal AND t.tgname LIKE 'hookline\_watch\_%')
                       <> array_position(v_ops, v_op) THEN
            RAISE EXCEPTION 'hookline.watch: the condition changed the trigger definition; it must be one SQL expression'
                USING ERRCODE = 'invalid_parameter_value';
        END IF;
        v_comment := format('hookline: %s of this table become events of type %s.%s (source db) in the writing transaction.',
                            upper(v_op), v_label, v_op)
                  || CASE WHEN v_op = 'update' AND v_cols IS NOT NULL
                          THEN format(' Only when one of %s changed.', array_to_string(v_cols, ', ')) ELSE '' END
                  || CASE WHEN v_cond IS NOT NULL THEN format(' Only when %s.', v_cond) ELSE '' END
                  || ' Installed by hookline.watch(); see hookline.watched, remove with hookline.unwatch().';
        EXECUTE format('COMMENT ON TRIGGER %I ON %s IS %L', v_trigger, v_rel, v_comment);
    END LOOP;

    INSERT INTO hookline.watches AS w
        (relation, label, operations, columns, condition, key_columns, exclude_columns, max_value_bytes)
    VALUES (v_rel, v_label, v_ops, v_cols, v_cond, v_keys, v_excl, v_max)
    ON CONFLICT (relation) DO UPDATE
    SET label = EXCLUDED.label, operations = EXCLUDED.operations, columns = EXCLUDED.columns,
        condition = EXCLUDED.condition, key_columns = EXCLUDED.key_columns,
        exclude_columns = EXCLUDED.exclude_columns, max_value_bytes = EXCLUDED.max_value_bytes,
        updated_at = now();
    RETURN CASE WHEN v_old.relation IS NULL THEN 'created' ELSE 'replaced' END;
END;
$$;
COMMENT ON FUNCTION hookline.watch(regclass, text[], text[], text, text[], text[], integer) IS
  'Watch a business table: its row changes become hookline events (source ''db'', type '
  'schema.table.insert|update|delete) written in the same transaction, deduplicated and processed like '
  'webhooks. Installs AFTER ROW triggers hookline_watch_<op>. operations: subset of {insert,update,delete}; '
  'columns: UPDATE events only when one of them changed; condition: SQL expression on OLD/NEW (the '
  'trigger''s WHEN clause, e.g. NEW.status = ''cancelled''); key_columns: default the primary key (a table '
  'without one is refused); exclude_columns, max_value_bytes: keep wide values out of the payload. '
  'Returns created, replaced or unchanged (same settings: nothing is touched). Runs with the caller''s '
  'rights: needs TRIGGER on the table and EXECUTE on hookline.row_event(). '
  'Example: SELECT hookline.watch(''public.orders'', ''{update}'', columns => ''{status}'');';

CREATE FUNCTION hookline.unwatch("table" regclass) RETURNS boolean
LANGUAGE plpgsql
SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    v_rel     regclass := unwatch."table";
    v_trigger text;
    v_found   boolean := false;
BEGIN
    PERFORM pg_advisory_xact_lock(hashtextextended('hookline.watch:' || v_rel::oid::text, 0));
    FOR v_trigger IN
        SELECT t.tgname FROM pg_catalog.pg_trigger t
        WHERE t.tgrelid = v_rel AND NOT t.tgisinternal
          AND t.tgname IN ('hookline_watch_insert', 'hookline_watch_update', 'hookline_watch_delete')
    LOOP
        EXECUTE format('DROP TRIGGER %I ON %s', v_trigger, v_rel);
        v_found := true;
    END LOOP;
    DELETE FROM hookline.watches w WHERE w.relation = v_rel;
    v_found := v_found OR FOUND;
    DELETE FROM hookline.watches w WHERE NOT EXISTS (SELECT 1 FROM pg_catalog.pg_class c WHERE c.oid = w.relation);
    RETURN v_found;
END;
$$;
COMMENT ON FUNCTION hookline.unwatch(regclass) IS
  'Stop watching a table: drops its hookline_watch_* triggers and its hookline.watches row. Events '
  'already stored stay. Returns false when the table was not watched.';

-- ---------------------------------------------------------------------------------------------
-- watched: what is watched, for people
-- ---------------------------------------------------------------------------------------------
CREATE VIEW hookline.watched AS
SELECT
    format('%I.%I', n.nspname, c.relname) AS table_name,
    w.relation,
    ARRAY(SELECT w.label || '.' || o FROM unnest(w.operations) AS o) AS event_types,
    w.operations,
    w.columns,
    w.condition,
    w.key_columns,
    w.exclude_columns,
    w.max_value_bytes,
    (SELECT count(*) FROM pg_catalog.pg_trigger t
     WHERE t.tgrelid = w.relation AND t.tgfoid = 'hookline.row_event()'::regprocedure AND t.tgenabled <> 'D'
       AND t.tgname IN (SELECT 'hookline_watch_' || o FROM unnest(w.operations) AS o))
        = cardinality(w.operations) AS active,
    w.created_at,
    w.updated_at
FROM hookline.watches w
JOIN pg_catalog.pg_class c ON c.oid = w.relation
JOIN pg_catalog.pg_namespace n ON n.oid = c.relnamespace;

COMMENT ON VIEW hookline.watched IS
  'Watched tables (hookline.watch()): which row changes become which event types, with what filters. '
  'A table dropped since it was watched no longer appears.';
COMMENT ON COLUMN hookline.watched.table_name IS 'The watched table, schema-qualified, as it is named now.';
COMMENT ON COLUMN hookline.watched.relation IS 'The watched table as regclass (for joins with pg_catalog).';
COMMENT ON COLUMN hookline.watched.event_types IS 'Event types its changes produce; put these in a pipeline''s events with source = "db".';
COMMENT ON COLUMN hookline.watched.operations IS 'Watched operations (insert, update, delete).';
COMMENT ON COLUMN hookline.watched.columns IS 'UPDATE events only when one of these columns changed; NULL: any UPDATE.';
COMMENT ON COLUMN hookline.watched.condition IS 'SQL expression on OLD/NEW that must hold (trigger WHEN clause); NULL: always.';
COMMENT ON COLUMN hookline.watched.key_columns IS 'Columns identifying a row (primary key unless given).';
COMMENT ON COLUMN hookline.watched.exclude_columns IS 'Columns left out of the payload''s old/new.';
COMMENT ON COLUMN hookline.watched.max_value_bytes IS 'Longer values are cut or nulled in the payload; NULL: no limit.';
COMMENT ON COLUMN hookline.watched.active IS 'True when every trigger of the watch exists and is enabled (false after ALTER TABLE … DISABLE TRIGGER, or a trigger dropped by hand).';
COMMENT ON COLUMN hookline.watched.created_at IS 'When the table was first watched.';
COMMENT ON COLUMN hookline.watched.updated_at IS 'When the watch settings last changed.';
