-- hookline.watch(): a `columns` filter never fails the writes it filters.
--
-- The UPDATE trigger's WHEN compares each of `columns` with IS DISTINCT FROM, or as text when the
-- column's type has no equality operator. watch() found out which by parsing
-- NULL::type IS DISTINCT FROM NULL::type, which Postgres accepts for every array and composite type:
-- it finds the element's or field's equality only when it compares two values. So `columns` on a
-- point[], json[] or xml[] column, or on a composite type with a json field, installed a trigger that
-- failed every UPDATE of the table that compared such a value ("could not identify an equality
-- operator for type point"), where the README promises a business write never fails because of
-- hookline. hookline.watch_comparable(type) now looks through domains, array elements and composite
-- fields; such columns are compared as text. Calling watch() again with the same settings replaces an
-- UPDATE trigger made before this migration that compares them any other way (it answered
-- "unchanged"). Nothing else changes: the function below is 0033's with that probe.

CREATE FUNCTION hookline.watch_comparable(p_type oid) RETURNS boolean
LANGUAGE plpgsql STABLE
SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    v_type pg_catalog.pg_type%ROWTYPE;
BEGIN
    SELECT * INTO v_type FROM pg_catalog.pg_type WHERE oid = p_type;
    IF NOT FOUND THEN
        RETURN false;
    END IF;
    IF v_type.typtype = 'd' THEN
        RETURN hookline.watch_comparable(v_type.typbasetype);
    END IF;
    BEGIN
        EXECUTE format('SELECT NULL::%1$s IS DISTINCT FROM NULL::%1$s', pg_catalog.format_type(p_type, NULL));
    EXCEPTION WHEN undefined_function THEN
        RETURN false;
    END;
    IF v_type.typsubscript = 'pg_catalog.array_subscript_handler'::pg_catalog.regproc THEN
        RETURN hookline.watch_comparable(v_type.typelem);
    END IF;
    IF v_type.typtype = 'c' THEN
        RETURN NOT EXISTS (SELECT 1 FROM pg_catalog.pg_attribute a
                           WHERE a.attrelid = v_type.typrelid AND a.attnum > 0 AND NOT a.attisdropped
                             AND NOT hookline.watch_comparable(a.atttypid));
    END IF;
    RETURN true;
END;
$$;
COMMENT ON FUNCTION hookline.watch_comparable(oid) IS
  'Whether IS DISTINCT FROM can compare two values of a type without an error: the type (a domain''s '
  'base type), the elements of an array and every field of a composite have an equality operator. '
  'hookline.watch() compares the `columns` of a type that has not as text in the UPDATE trigger''s WHEN '
  '(json, xml, point, point[], a composite with a json field, ...).';

CREATE OR REPLACE FUNCTION hookline.watch(
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
    v_all       text[];
    v_key_nums  int2[];
    v_excl_nums int2[];
    v_col_nums  int2[];
    v_args      text[];
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
    v_text_cols text[];
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

    -- virtual generated columns (Postgres 18) are not computed in a trigger's row: always null there
    SELECT array_agg(a.attname::text ORDER BY a.attnum) INTO v_bad
    FROM pg_catalog.pg_attribute a
    WHERE a.attrelid = v_rel AND a.attnum > 0 AND NOT a.attisdropped AND a.attgenerated = 'v'
      AND (NOT a.attname::text = ANY (v_excl) OR a.attname::text = ANY (v_keys));
    IF v_bad IS NOT NULL THEN
        RAISE EXCEPTION 'hookline.watch: column(s) % of % are virtual generated columns: a row trigger does not see their values (they would always be null in the payload)',
            array_to_string(v_bad, ', '), v_rel
            USING ERRCODE = 'feature_not_supported',
                  HINT = format('Leave them out with exclude_columns => %L (and out of key_columns), or make them STORED generated columns.',
                                (v_excl || v_bad)::text);
    END IF;

    -- what the triggers need to follow renames: attnums, and the column names as they are now
    SELECT array_agg(a.attname::text ORDER BY a.attnum) INTO v_all
    FROM pg_catalog.pg_attribute a WHERE a.attrelid = v_rel AND a.attnum > 0 AND NOT a.attisdropped;
    SELECT array_agg(a.attnum ORDER BY k.ord) INTO v_key_nums
    FROM unnest(v_keys) WITH ORDINALITY AS k(name, ord)
    JOIN pg_catalog.pg_attribute a ON a.attrelid = v_rel AND a.attname = k.name AND a.attnum > 0 AND NOT a.attisdropped;
    SELECT coalesce(array_agg(a.attnum ORDER BY k.ord), '{}') INTO v_excl_nums
    FROM unnest(v_excl) WITH ORDINALITY AS k(name, ord)
    JOIN pg_catalog.pg_attribute a ON a.attrelid = v_rel AND a.attname = k.name AND a.attnum > 0 AND NOT a.attisdropped;
    SELECT array_agg(a.attnum ORDER BY k.ord) INTO v_col_nums
    FROM unnest(v_cols) WITH ORDINALITY AS k(name, ord)
    JOIN pg_catalog.pg_attribute a ON a.attrelid = v_rel AND a.attname = k.name AND a.attnum > 0 AND NOT a.attisdropped;
    v_args := ARRAY[v_label, v_keys::text, v_excl::text, coalesce(v_max::text, ''),
                    v_all::text, v_key_nums::text, v_excl_nums::text, v_rel::oid::text];

    -- condition: one SQL expression, spliced into WHEN (...) and then parsed by Postgres as exactly that
    v_cond := nullif(btrim(condition), '');
    IF v_cond IS NOT NULL AND (strpos(v_cond, ';') > 0 OR strpos(v_cond, '--') > 0 OR strpos(v_cond, '/*') > 0) THEN
        RAISE EXCEPTION 'hookline.watch: condition must be a single SQL expression (no ";" and no comments)'
            USING ERRCODE = 'invalid_parameter_value';
    END IF;

    -- inheritance children (not partitions) are tables of their own: their rows are not this table's events
    SELECT array_agg(i.inhrelid::regclass::text ORDER BY i.inhrelid::regclass::text) INTO v_bad
    FROM pg_catalog.pg_inherits i WHERE i.inhparent = v_rel AND v_class.relkind = 'r';
    IF v_bad IS NOT NULL THEN
        RAISE WARNING 'hookline.watch: % has inheritance children (%): rows written to them are not events of %, even through % (UPDATE/DELETE on the parent), unless they are watched themselves',
            v_rel, array_to_string(v_bad, ', '), v_label, v_rel
            USING HINT = 'Watch each child too: SELECT hookline.watch(''child''); (its events are named after the child).';
    END IF;

    -- columns compared as text in the UPDATE trigger's WHEN: their type has no equality a write can use
    SELECT coalesce(array_agg(k.name ORDER BY k.ord), '{}') INTO v_text_cols
    FROM unnest(v_cols) WITH ORDINALITY AS k(name, ord)
    JOIN pg_catalog.pg_attribute a ON a.attrelid = v_rel AND a.attname = k.name AND a.attnum > 0 AND NOT a.attisdropped
    WHERE NOT hookline.watch_comparable(a.atttypid);

    -- nothing to do when the same settings are installed already (and an UPDATE trigger made before
    -- migration 0050 compares those columns as text too: one that does not fails every UPDATE)
    SELECT * INTO v_old FROM hookline.watches w WHERE w.relation = v_rel;
    IF FOUND
       AND v_old.label = v_label AND v_old.operations = v_ops AND v_old.columns IS NOT DISTINCT FROM v_cols
       AND v_old.condition IS NOT DISTINCT FROM v_cond AND v_old.key_columns = v_keys
       AND v_old.exclude_columns = v_excl AND v_old.max_value_bytes IS NOT DISTINCT FROM v_max
       AND v_old.table_columns IS NOT DISTINCT FROM v_all AND v_old.key_attnums IS NOT DISTINCT FROM v_key_nums
       AND v_old.exclude_attnums IS NOT DISTINCT FROM v_excl_nums
       AND v_old.columns_attnums IS NOT DISTINCT FROM v_col_nums
       AND (SELECT count(*) FROM pg_catalog.pg_trigger t
            WHERE t.tgrelid = v_rel AND t.tgfoid = 'hookline.row_event()'::regprocedure AND NOT t.tgisinternal
              AND t.tgnargs = cardinality(v_args)
              AND t.tgname IN (SELECT 'hookline_watch_' || o FROM unnest(v_ops) AS o))
           = cardinality(v_ops)
       AND NOT EXISTS (SELECT 1 FROM pg_catalog.pg_trigger t
                       WHERE t.tgrelid = v_rel AND t.tgname LIKE 'hookline\_watch\_%'
                         AND t.tgname NOT IN (SELECT 'hookline_watch_' || o FROM unnest(v_ops) AS o))
       AND NOT EXISTS (SELECT 1 FROM unnest(v_text_cols) AS c(name)
                       JOIN pg_catalog.pg_trigger t ON t.tgrelid = v_rel AND t.tgname = 'hookline_watch_update'
                                                   AND NOT t.tgisinternal
                       WHERE strpos(pg_catalog.pg_get_triggerdef(t.oid), format('(old.%I)::text', c.name)) = 0) THEN
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
                -- types without a usable equality (json, xml, point, and arrays and composites of them)
                -- are compared as text
                v_ok := NOT v_col = ANY (v_text_cols);
                v_changes := concat_ws(' OR ', v_changes,
                    CASE WHEN v_ok THEN format('OLD.%1$I IS DISTINCT FROM NEW.%1$I', v_col)
                         ELSE format('OLD.%1$I::text IS DISTINCT FROM NEW.%1$I::text', v_col) END);
            END LOOP;
            v_when := v_when || ('(' || v_changes || ')');
        END IF;
        v_sql := format('CREATE TRIGGER %I AFTER %s ON %s FOR EACH ROW%s EXECUTE FUNCTION hookline.row_event(%L, %L, %L, %L, %L, %L, %L, %L)',
                        v_trigger, upper(v_op), v_rel,
                        CASE WHEN cardinality(v_when) > 0 THEN ' WHEN (' || array_to_string(v_when, ' AND ') || ')' ELSE '' END,
                        v_args[1], v_args[2], v_args[3], v_args[4], v_args[5], v_args[6], v_args[7], v_args[8]);
        BEGIN  -- a subtransaction: Postgres parses the condition; its error becomes ours
            EXECUTE v_sql;
        EXCEPTION WHEN OTHERS THEN
            IF v_cond IS NULL OR SQLSTATE IN ('55P03', '40P01') THEN  -- lock_not_available, deadlock_detected
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
          AND t.tgfoid = 'hookline.row_event()'::regprocedure AND t.tgtype = v_tgtype
          AND t.tgnargs = cardinality(v_args)
          AND cardinality(t.tgattr::int2[]) = 0
          AND t.tgargs = (SELECT string_agg(convert_to(a.arg, getdatabaseencoding()) || '\x00'::bytea, ''::bytea ORDER BY a.ord)
                          FROM unnest(v_args) WITH ORDINALITY AS a(arg, ord));
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
        (relation, label, operations, columns, condition, key_columns, exclude_columns, max_value_bytes,
         table_columns, key_attnums, exclude_attnums, columns_attnums)
    VALUES (v_rel, v_label, v_ops, v_cols, v_cond, v_keys, v_excl, v_max, v_all, v_key_nums, v_excl_nums, v_col_nums)
    ON CONFLICT (relation) DO UPDATE
    SET label = EXCLUDED.label, operations = EXCLUDED.operations, columns = EXCLUDED.columns,
        condition = EXCLUDED.condition, key_columns = EXCLUDED.key_columns,
        exclude_columns = EXCLUDED.exclude_columns, max_value_bytes = EXCLUDED.max_value_bytes,
        table_columns = EXCLUDED.table_columns, key_attnums = EXCLUDED.key_attnums,
        exclude_attnums = EXCLUDED.exclude_attnums, columns_attnums = EXCLUDED.columns_attnums,
        updated_at = now();
    RETURN CASE WHEN v_old.relation IS NULL THEN 'created' ELSE 'replaced' END;
END;
$$;
COMMENT ON FUNCTION hookline.watch(regclass, text[], text[], text, text[], text[], integer) IS
  'Watch a business table: its row changes become hookline events (source ''db'', type '
  'schema.table.insert|update|delete) written in the same transaction, deduplicated and processed like '
  'webhooks. Installs AFTER ROW triggers hookline_watch_<op>. operations: subset of {insert,update,delete}; '
  'columns: UPDATE events only when one of them changed (compared as text when their type, or an '
  'element or field of it, has no equality operator); condition: SQL expression on OLD/NEW (the '
  'trigger''s WHEN clause, e.g. NEW.status = ''cancelled''); key_columns: default the primary key (a table '
  'without one is refused); exclude_columns, max_value_bytes: keep wide values out of the payload. '
  'Key and excluded columns follow later renames. A virtual generated column must be excluded (its '
  'value is not in a trigger''s row); inheritance children (not partitions) get a WARNING: their rows '
  'are not events unless watched themselves. Returns created, replaced or unchanged (same settings and '
  'same table columns: nothing is touched). Runs with the caller''s rights: needs TRIGGER on the table '
  'and EXECUTE on hookline.row_event(). '
  'Example: SELECT hookline.watch(''public.orders'', ''{update}'', columns => ''{status}'');';
