-- Watched tables: a business write never fails because of hookline, and renamed columns keep their
-- meaning.
--
-- Before: hookline.row_event() turned the whole OLD/NEW row into jsonb and only then dropped the
-- excluded columns, so
--   * a json value jsonb refuses (\u0000, a lone surrogate "\ud83d", 1e200000), even in an excluded
--     column, failed every INSERT/UPDATE/DELETE of that row;
--   * an excluded wide value (bytea over ~134 MB, text over ~256 MB) failed them too ("string too long
--     to represent as jsonb string");
--   * a long key (text over ~2.7 kB) failed the INSERT of the event: delivery_id and the job lock sit in
--     B-tree indexes with a 2,704-byte limit;
--   * key and excluded columns were trigger arguments by name: after RENAME COLUMN the key became null
--     (every row one ordering key) and the renamed excluded column went into the payload.
--
-- Now:
--   * The row is converted inside a BEGIN/EXCEPTION block that writes nothing: the subtransaction gets
--     no transaction id (so no subxid overflow). A cheap test that could skip the block is not sound
--     (pg_column_size sees compressed sizes; json columns need a catalog read per row, 10-15 us,
--     more than the block's 4-5 us). Measured as backend CPU per row of a 10,000-row INSERT ... SELECT
--     into the README's orders table, event row only (events_enqueue disabled): 72 us before, 80 us
--     now, of which the block is ~4-5 us; a full row event with its job is ~200 us. If the
--     conversion fails, or an image is over 100 MB, the row is converted column by column
--     (hookline.row_value, EXECUTE on the column's %I-quoted catalog name): excluded columns are never
--     converted, a value that cannot be converted, or is over 64 MB, becomes null and is named in the
--     payload's "truncated", and with max_value_bytes a text/varchar/bytea value is cut before it is
--     converted.
--   * A row over 64 kB (as stored) with excluded columns has them set to null before conversion
--     (json_populate_record), so an excluded wide value is not converted at all.
--   * A key whose JSON text is over 1,024 bytes is replaced by "sha256:<hex of it>" in delivery_id and
--     ordering_key (so in the job lock); the payload keeps the full key. The same key always gives the
--     same hash, so its events still run one at a time, in order.
--   * The triggers carry, besides the names, the table's column names at watch time, the attnums of
--     the key and excluded columns and the watched table's oid. While the row has every key column
--     name and (with excluded columns) exactly the column names it had at watch time (two jsonb
--     operations per row, no catalog read) the names are used. Otherwise (a column renamed, added or
--     dropped since) the names are resolved from pg_attribute:
--     a key column is found by its name, else by its attnum (a rename keeps it); an excluded column is
--     left out by its old name AND by its attnum (whichever column now has either, so neither a rename
--     nor "rename away, add a new column of the old name" can leak it). hookline.watched shows the
--     current names and says what to re-run.
--   * hookline.watch() refuses a virtual generated column (Postgres 18) that is not excluded (its value
--     is not in a trigger's row: it would always be null), and warns when the table has inheritance
--     children (not partitions): their rows are not events unless they are watched themselves.
--
-- Triggers installed before this migration keep working (names only, with the new conversion);
-- hookline.watch() (or `hookline migrate` for [[watch]] entries) replaces them.

-- ---------------------------------------------------------------------------------------------
-- watches: what the triggers need to follow renames
-- ---------------------------------------------------------------------------------------------
ALTER TABLE hookline.watches
    ADD COLUMN table_columns   text[],
    ADD COLUMN key_attnums     int2[],
    ADD COLUMN exclude_attnums int2[],
    ADD COLUMN columns_attnums int2[];

COMMENT ON COLUMN hookline.watches.key_columns IS 'Columns identifying a row (the primary key unless given), by name at watch time: the event''s "key", delivery id and ordering key. hookline.watched shows their current names.';
COMMENT ON COLUMN hookline.watches.exclude_columns IS 'Columns left out of "old" and "new" in the payload (their names still appear in "changed"), by name at watch time; hookline.watched shows their current names.';
COMMENT ON COLUMN hookline.watches.columns IS 'UPDATE events fire only when one of these columns changed (IS DISTINCT FROM); NULL: any UPDATE. By name at watch time; the trigger''s WHEN follows renames.';
COMMENT ON COLUMN hookline.watches.max_value_bytes IS 'Values whose JSON text is longer are cut (strings: to this many bytes) or nulled (other types), and named in the payload''s "truncated"; NULL: no limit. Values jsonb cannot hold are nulled and named there whatever this is.';
COMMENT ON COLUMN hookline.watches.table_columns IS 'The table''s column names (attnum order) at watch time: while a row has exactly these, the triggers use the names they were given; otherwise they resolve key and excluded columns from pg_attribute. NULL: watched before migration 0032.';
COMMENT ON COLUMN hookline.watches.key_attnums IS 'attnums of key_columns at watch time (a renamed key column is found by it). NULL: watched before migration 0032.';
COMMENT ON COLUMN hookline.watches.exclude_attnums IS 'attnums of exclude_columns at watch time (a renamed excluded column stays excluded). NULL: watched before migration 0032.';
COMMENT ON COLUMN hookline.watches.columns_attnums IS 'attnums of columns at watch time (the trigger''s WHEN refers to them). NULL: any UPDATE, or watched before migration 0032.';

-- ---------------------------------------------------------------------------------------------
-- Helpers
-- ---------------------------------------------------------------------------------------------
CREATE FUNCTION hookline.watch_columns(p_relation oid, p_names text[], p_attnums int2[], p_union boolean)
RETURNS text[]
LANGUAGE sql STABLE
SET search_path = pg_catalog, pg_temp AS $$
    SELECT CASE WHEN p_union THEN
        (SELECT coalesce(array_agg(a.attname::text ORDER BY a.attnum), '{}')
         FROM pg_catalog.pg_attribute a
         WHERE a.attrelid = p_relation AND a.attnum > 0 AND NOT a.attisdropped
           AND (a.attname::text = ANY (p_names) OR a.attnum = ANY (p_attnums)))
    ELSE
        (SELECT array_agg(coalesce(byname.attname, bynum.attname)::text ORDER BY k.ord)
         FROM unnest(p_names, p_attnums) WITH ORDINALITY AS k(name, attnum, ord)
         LEFT JOIN pg_catalog.pg_attribute byname
                ON byname.attrelid = p_relation AND byname.attname = k.name
               AND byname.attnum > 0 AND NOT byname.attisdropped
         LEFT JOIN pg_catalog.pg_attribute bynum
                ON bynum.attrelid = p_relation AND bynum.attnum = k.attnum
               AND bynum.attnum > 0 AND NOT bynum.attisdropped)
    END
$$;
COMMENT ON FUNCTION hookline.watch_columns(oid, text[], int2[], boolean) IS
  'Current names of watch columns given by name and attnum at watch time. p_union false (key columns): '
  'per position, the column of that name, else the column at that attnum (a rename), else NULL (gone). '
  'p_union true (excluded columns): every column that has one of the names or one of the attnums, so '
  'neither a rename nor a new column taking an old name lets an excluded value through.';

CREATE FUNCTION hookline.row_value(p_row anyelement, p_column text, p_max integer,
                                   OUT value jsonb, OUT cut boolean)
LANGUAGE plpgsql
SET search_path = pg_catalog, pg_temp AS $$
-- Only on row_event's slow path; p_column comes from pg_attribute and is quoted with %I.
DECLARE
    v_type oid;
    v_size bigint;
BEGIN
    cut := false;
    BEGIN
        EXECUTE format('SELECT pg_catalog.pg_typeof(s.x)::oid, pg_catalog.pg_column_size(s.x) '
                       'FROM (SELECT ($1).%I AS x) s', p_column)
            INTO v_type, v_size USING p_row;
        IF v_size IS NULL THEN
            value := 'null';
            RETURN;
        END IF;
        IF v_type IN (17, 25, 1043) THEN  -- bytea, text, varchar: the raw size, without detoasting
            EXECUTE format('SELECT pg_catalog.octet_length(($1).%I)::bigint', p_column) INTO v_size USING p_row;
        END IF;
        IF p_max IS NOT NULL AND v_size > p_max AND v_type IN (25, 1043) THEN
            -- cut before converting; clip_values then cuts to bytes and names the column
            EXECUTE format('SELECT pg_catalog.to_jsonb(pg_catalog.left(($1).%I::text, $2))', p_column)
                INTO value USING p_row, p_max;
        ELSIF p_max IS NOT NULL AND v_size > p_max AND v_type = 17 THEN
            EXECUTE format('SELECT pg_catalog.to_jsonb(pg_catalog.substring(($1).%I, 1, $2 / 2 + 1))', p_column)
                INTO value USING p_row, p_max;
        ELSIF v_size > 67108864 THEN
            value := 'null';
            cut := true;
        ELSE
            EXECUTE format('SELECT pg_catalog.to_jsonb(($1).%I)', p_column) INTO value USING p_row;
        END IF;
    EXCEPTION WHEN OTHERS THEN
        value := 'null';
        cut := true;
    END;
END;
$$;
COMMENT ON FUNCTION hookline.row_value(anyelement, text, integer) IS
  'Row-event helper for rows that cannot be converted whole: one column of a row as jsonb. A value '
  'jsonb cannot hold (a json value with \u0000, a lone surrogate or a number out of range, a string '
  'over 256 MB, ...) or over 64 MB as stored becomes null with cut = true, never an error. With p_max, '
  'a longer text/varchar/bytea value is cut before it is converted.';

CREATE FUNCTION hookline.row_value_changed(p_old anyelement, p_new anyelement, p_column text)
RETURNS boolean
LANGUAGE plpgsql
SET search_path = pg_catalog, pg_temp AS $$
-- Only on row_event's slow path; p_column comes from pg_attribute and is quoted with %I.
DECLARE
    v_changed boolean;
BEGIN
    BEGIN
        EXECUTE format('SELECT ($1).%1$I IS DISTINCT FROM ($2).%1$I', p_column) INTO v_changed USING p_old, p_new;
        RETURN v_changed;
    EXCEPTION WHEN OTHERS THEN
        NULL;  -- no equality operator (json, xml, point, ...): compare the text
    END;
    BEGIN
        EXECUTE format('SELECT ($1).%1$I::text IS DISTINCT FROM ($2).%1$I::text', p_column)
            INTO v_changed USING p_old, p_new;
        RETURN v_changed;
    EXCEPTION WHEN OTHERS THEN
        RETURN true;
    END;
END;
$$;
COMMENT ON FUNCTION hookline.row_value_changed(anyelement, anyelement, text) IS
  'Row-event helper: whether one column differs between OLD and NEW (IS DISTINCT FROM, as text for '
  'types without equality; true when neither works), for excluded or unconvertible columns whose '
  'values are not in the jsonb images.';

-- ---------------------------------------------------------------------------------------------
-- The trigger function
-- ---------------------------------------------------------------------------------------------
CREATE OR REPLACE FUNCTION hookline.row_event() RETURNS trigger
LANGUAGE plpgsql
SECURITY DEFINER
SET search_path = pg_catalog, pg_temp AS $$
-- TG_ARGV: [0] label (schema.table at watch time), [1] key columns, [2] excluded columns (text[]
-- literals, names at watch time), [3] max value bytes ('' for no limit); since migration 0032 also
-- [4] the table's column names at watch time, [5] key attnums, [6] excluded attnums (int2[] literals),
-- [7] oid of the watched table. Triggers installed earlier have [0]..[3] only.
DECLARE
    v_label     text    := TG_ARGV[0];
    v_keys      text[]  := TG_ARGV[1]::text[];
    v_exclude   text[]  := TG_ARGV[2]::text[];
    v_max       integer := nullif(TG_ARGV[3], '')::integer;
    v_rel       oid;
    v_op        text    := pg_catalog.lower(TG_OP);
    v_old       jsonb;
    v_new       jsonb;
    v_row       jsonb;
    v_nulls     json;
    v_early     text[]  := '{}';  -- columns set to null before the conversion (excluded, wide row)
    v_salvage   boolean := false;
    v_col       text;
    v_val       jsonb;
    v_isc       boolean;
    v_size_old  bigint  := 0;
    v_size_new  bigint  := 0;
    v_missing   text[]  := '{}';  -- not converted: named in "truncated"
    v_key       jsonb;
    v_key_text  text;
    v_changed   text[];
    v_cut_old   text[];
    v_cut_new   text[];
    v_cut       text[];
    v_txid      bigint  := pg_catalog.txid_current();
    v_seq       bigint;
    v_payload   jsonb;
BEGIN
    -- 1. The whole row, as before, but inside a block that writes nothing (no subtransaction id).
    --    A wide row (over 64 kB as stored) leaves its excluded columns out before converting.
    BEGIN
        IF pg_catalog.cardinality(v_exclude) > 0
           AND ((TG_OP <> 'INSERT' AND pg_catalog.pg_column_size(OLD) > 65536)
                OR (TG_OP <> 'DELETE' AND pg_catalog.pg_column_size(NEW) > 65536)) THEN
            v_nulls := pg_catalog.json_object(v_exclude, pg_catalog.array_fill(NULL::text, ARRAY[pg_catalog.cardinality(v_exclude)]));
            v_early := v_exclude;
            IF TG_OP <> 'INSERT' THEN
                v_old := pg_catalog.to_jsonb(pg_catalog.json_populate_record(OLD, v_nulls));
            END IF;
            IF TG_OP <> 'DELETE' THEN
                v_new := pg_catalog.to_jsonb(pg_catalog.json_populate_record(NEW, v_nulls));
            END IF;
        ELSE
            IF TG_OP <> 'INSERT' THEN
                v_old := pg_catalog.to_jsonb(OLD);
            END IF;
            IF TG_OP <> 'DELETE' THEN
                v_new := pg_catalog.to_jsonb(NEW);
            END IF;
        END IF;
    EXCEPTION WHEN OTHERS THEN
        v_old := NULL;
        v_new := NULL;
        v_early := '{}';
        v_salvage := true;
    END;
    v_row := coalesce(v_new, v_old);

    -- 2. Column names: the given ones while they still name the same columns, i.e. while the row has
    --    every key column name and (with excluded columns) exactly the column names it had at watch
    --    time; otherwise from pg_attribute (renamed key columns by attnum, excluded ones by name and
    --    by attnum). Two jsonb operations per row, no catalog read.
    IF TG_NARGS >= 8
       AND (v_salvage OR NOT v_row ?& v_keys
            OR (pg_catalog.cardinality(v_exclude) > 0
                AND NOT (v_row ?& TG_ARGV[4]::text[] AND (v_row - TG_ARGV[4]::text[]) = '{}'::jsonb))) THEN
        v_rel := TG_ARGV[7]::oid;
        IF v_rel <> TG_RELID AND NOT EXISTS (SELECT 1 FROM pg_catalog.pg_partition_ancestors(TG_RELID) p
                                             WHERE p.relid = v_rel) THEN
            v_rel := NULL;  -- the oid is not this table's (restored from a dump?): names only
        END IF;
        IF v_rel IS NOT NULL THEN
            v_keys := hookline.watch_columns(v_rel, v_keys, TG_ARGV[5]::int2[], false);
            v_exclude := hookline.watch_columns(v_rel, v_exclude, TG_ARGV[6]::int2[], true);
            IF pg_catalog.array_position(v_keys, NULL) IS NOT NULL THEN
                RAISE WARNING 'hookline: a key column of % no longer exists; its events have a partial key', v_label
                    USING HINT = 'Run hookline.watch() again with the key_columns that now identify a row.';
                v_keys := pg_catalog.array_remove(v_keys, NULL);
            END IF;
        END IF;
    END IF;

    -- 3. Too big for one payload (old and new together must stay well under jsonb's 256 MB)?
    IF NOT v_salvage AND greatest(pg_catalog.pg_column_size(v_old), pg_catalog.pg_column_size(v_new)) > 100000000 THEN
        v_salvage := true;
    END IF;

    -- 4. Slow path: column by column; excluded columns are never converted.
    IF v_salvage THEN
        v_old := CASE WHEN TG_OP <> 'INSERT' THEN '{}'::jsonb END;
        v_new := CASE WHEN TG_OP <> 'DELETE' THEN '{}'::jsonb END;
        FOR v_col IN
            SELECT a.attname::text FROM pg_catalog.pg_attribute a
            WHERE a.attrelid = TG_RELID AND a.attnum > 0 AND NOT a.attisdropped ORDER BY a.attnum
        LOOP
            CONTINUE WHEN v_col = ANY (v_exclude);
            IF TG_OP <> 'INSERT' THEN
                SELECT r.value, r.cut INTO v_val, v_isc FROM hookline.row_value(OLD, v_col, v_max) AS r;
                v_size_old := v_size_old + pg_catalog.pg_column_size(v_val);
                IF v_isc OR v_size_old > 100000000 THEN
                    v_val := 'null';
                    v_missing := v_missing || v_col;
                END IF;
                v_old := v_old || pg_catalog.jsonb_build_object(v_col, v_val);
            END IF;
            IF TG_OP <> 'DELETE' THEN
                SELECT r.value, r.cut INTO v_val, v_isc FROM hookline.row_value(NEW, v_col, v_max) AS r;
                v_size_new := v_size_new + pg_catalog.pg_column_size(v_val);
                IF v_isc OR v_size_new > 100000000 THEN
                    v_val := 'null';
                    v_missing := v_missing || v_col;
                END IF;
                v_new := v_new || pg_catalog.jsonb_build_object(v_col, v_val);
            END IF;
        END LOOP;
        v_early := v_exclude || v_missing;
        v_row := coalesce(v_new, v_old);
    END IF;

    -- 5. The key: from the row, or (excluded before conversion, not converted) column by column.
    IF pg_catalog.cardinality(v_keys) = 1 AND v_row ? v_keys[1] AND NOT v_keys[1] = ANY (v_early) THEN
        v_key := pg_catalog.jsonb_build_object(v_keys[1], v_row -> v_keys[1]);
    ELSE
        SELECT pg_catalog.jsonb_object_agg(k.name,
                   CASE WHEN k.name = ANY (v_early) OR NOT v_row ? k.name
                        THEN (SELECT r.value FROM hookline.row_value(CASE WHEN TG_OP = 'DELETE' THEN OLD ELSE NEW END,
                                                                      k.name, NULL) AS r)
                        ELSE v_row -> k.name END)
        INTO v_key
        FROM pg_catalog.unnest(v_keys) AS k(name);
        v_key := coalesce(v_key, '{}'::jsonb);
    END IF;

    -- 6. Changed columns: by their jsonb values, and by their own values where those are not converted.
    IF TG_OP = 'UPDATE' THEN
        SELECT coalesce(pg_catalog.array_agg(n.key ORDER BY n.key), '{}') INTO v_changed
        FROM pg_catalog.jsonb_each(v_new) AS n
        WHERE NOT n.key = ANY (v_early) AND n.value IS DISTINCT FROM v_old -> n.key;
        IF pg_catalog.cardinality(v_early) > 0 THEN
            SELECT coalesce(pg_catalog.array_agg(DISTINCT c.name ORDER BY c.name), '{}') INTO v_changed
            FROM (SELECT pg_catalog.unnest(v_changed)
                  UNION ALL
                  SELECT e.name FROM pg_catalog.unnest(v_early) AS e(name)
                  WHERE EXISTS (SELECT 1 FROM pg_catalog.pg_attribute a
                                WHERE a.attrelid = TG_RELID AND a.attname = e.name AND a.attnum > 0
                                  AND NOT a.attisdropped)
                    AND hookline.row_value_changed(OLD, NEW, e.name)) AS c(name);
        END IF;
    END IF;

    -- 7. Exclude, clip.
    IF pg_catalog.cardinality(v_exclude) > 0 THEN
        v_old := v_old - v_exclude;
        v_new := v_new - v_exclude;
    END IF;
    IF v_max IS NOT NULL THEN
        SELECT c.clipped, c.columns INTO v_old, v_cut_old FROM hookline.clip_values(v_old, v_max) AS c;
        SELECT c.clipped, c.columns INTO v_new, v_cut_new FROM hookline.clip_values(v_new, v_max) AS c;
    END IF;
    IF v_max IS NOT NULL OR pg_catalog.cardinality(v_missing) > 0 THEN
        SELECT pg_catalog.array_agg(DISTINCT u.name ORDER BY u.name) INTO v_cut
        FROM pg_catalog.unnest(v_cut_old || v_cut_new || v_missing) AS u(name);
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

    -- delivery_id and ordering_key are in B-tree indexes (2,704 bytes a row): a long key goes by its hash
    v_key_text := v_key::text;
    IF pg_catalog.octet_length(v_key_text) > 1024 THEN
        v_key_text := 'sha256:' || pg_catalog.encode(pg_catalog.sha256(pg_catalog.convert_to(v_key_text, 'UTF8')), 'hex');
    END IF;

    INSERT INTO hookline.events
        (source, delivery_id, event_type, ordering_key, occurred_at, status, headers, payload, content_type)
    VALUES (
        'db',
        v_label || ':' || v_key_text || ':' || v_txid || ':' || v_op || ':' || v_seq,
        v_label || '.' || v_op,
        v_label || ':' || v_key_text,
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
-- CREATE OR REPLACE resets the function's settings: put procrastinate's schema back on its path (0003)
DO $$
DECLARE
    v_schema text := (SELECT n.nspname FROM pg_catalog.pg_proc p
                      JOIN pg_catalog.pg_namespace n ON n.oid = p.pronamespace
                      WHERE p.proname = 'procrastinate_defer_jobs_v1' ORDER BY n.nspname LIMIT 1);
BEGIN
    EXECUTE format('ALTER FUNCTION hookline.row_event() SET search_path = pg_catalog, %I, pg_temp', v_schema);
END;
$$;
REVOKE ALL ON FUNCTION hookline.row_event() FROM PUBLIC;
COMMENT ON FUNCTION hookline.row_event() IS
  'Trigger function installed by hookline.watch(): stores one row change as a hookline.events row '
  '(source ''db'', type schema.table.op, payload {op, table, key, old, new, changed, txid[, truncated]}), '
  'whose job events_enqueue defers in the same transaction. It never fails the writer''s statement '
  'over a value: values jsonb cannot hold, or too big, become null and are named in "truncated"; '
  'excluded columns of wide rows are never converted; a key over 1 kB goes into delivery_id and '
  'ordering_key as sha256:<hex>. Key and excluded columns follow renames (attnums). SECURITY DEFINER '
  'with search_path pg_catalog, <procrastinate''s schema>, pg_temp: writers need no rights on '
  'hookline.*; EXECUTE is revoked from PUBLIC so only roles granted it (and the owner) can attach it to '
  'a table. Settings come from the trigger arguments (label, key and excluded column names, max value '
  'bytes, the table''s column names, key and excluded attnums, the table''s oid).';

-- ---------------------------------------------------------------------------------------------
-- watch(): attnums in the arguments; virtual generated columns; inheritance children
-- ---------------------------------------------------------------------------------------------
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

    -- nothing to do when the same settings are installed already
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
        v_sql := format('CREATE TRIGGER %I AFTER %s ON %s FOR EACH ROW%s EXECUTE FUNCTION hookline.row_event(%L, %L, %L, %L, %L, %L, %L, %L)',
                        v_trigger, upper(v_op), v_rel,
                        CASE WHEN cardinality(v_when) > 0 THEN ' WHEN (' || array_to_string(v_when, ' AND ') || ')' ELSE '' END,
                        v_args[1], v_args[2], v_args[3], v_args[4], v_args[5], v_args[6], v_args[7], v_args[8]);
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
  'columns: UPDATE events only when one of them changed; condition: SQL expression on OLD/NEW (the '
  'trigger''s WHEN clause, e.g. NEW.status = ''cancelled''); key_columns: default the primary key (a table '
  'without one is refused); exclude_columns, max_value_bytes: keep wide values out of the payload. '
  'Key and excluded columns follow later renames. A virtual generated column must be excluded (its '
  'value is not in a trigger''s row); inheritance children (not partitions) get a WARNING: their rows '
  'are not events unless watched themselves. Returns created, replaced or unchanged (same settings and '
  'same table columns: nothing is touched). Runs with the caller''s rights: needs TRIGGER on the table '
  'and EXECUTE on hookline.row_event(). '
  'Example: SELECT hookline.watch(''public.orders'', ''{update}'', columns => ''{status}'');';

-- ---------------------------------------------------------------------------------------------
-- watched: current column names, and what needs attention
-- ---------------------------------------------------------------------------------------------
CREATE OR REPLACE VIEW hookline.watched AS
SELECT
    format('%I.%I', n.nspname, c.relname) AS table_name,
    w.relation,
    ARRAY(SELECT w.label || '.' || o FROM unnest(w.operations) AS o) AS event_types,
    w.operations,
    CASE WHEN w.columns_attnums IS NULL THEN w.columns
         ELSE ARRAY(SELECT a.attname::text COLLATE "default" FROM unnest(w.columns_attnums) WITH ORDINALITY AS k(attnum, ord)
                    JOIN pg_catalog.pg_attribute a ON a.attrelid = w.relation AND a.attnum = k.attnum
                    WHERE NOT a.attisdropped ORDER BY k.ord) END AS columns,
    w.condition,
    r.key_columns,
    r.exclude_columns,
    w.max_value_bytes,
    (SELECT count(*) FROM pg_catalog.pg_trigger t
     WHERE t.tgrelid = w.relation AND t.tgfoid = 'hookline.row_event()'::regprocedure AND t.tgenabled <> 'D'
       AND t.tgname IN (SELECT 'hookline_watch_' || o FROM unnest(w.operations) AS o))
        = cardinality(w.operations)
    AND array_position(r.key_columns, NULL) IS NULL AS active,
    w.created_at,
    w.updated_at,
    CASE
        WHEN array_position(r.key_columns, NULL) IS NOT NULL
            THEN 'a key column no longer exists: events get a partial key; run hookline.watch() again with key_columns'
        WHEN w.table_columns IS NULL
            THEN 'watched before hookline migration 0032: run hookline.watch() again so that renamed columns keep their meaning'
        WHEN w.table_columns IS DISTINCT FROM
             ARRAY(SELECT a.attname::text FROM pg_catalog.pg_attribute a
                   WHERE a.attrelid = w.relation AND a.attnum > 0 AND NOT a.attisdropped ORDER BY a.attnum)
            THEN 'columns renamed, added or dropped since hookline.watch(): events follow the renames (key '
                 'and excluded columns as shown); run hookline.watch() again with these names to confirm'
    END AS attention
FROM hookline.watches w
JOIN pg_catalog.pg_class c ON c.oid = w.relation
JOIN pg_catalog.pg_namespace n ON n.oid = c.relnamespace
CROSS JOIN LATERAL (
    SELECT CASE WHEN w.key_attnums IS NULL THEN w.key_columns
                ELSE hookline.watch_columns(w.relation, w.key_columns, w.key_attnums, false) END AS key_columns,
           CASE WHEN w.exclude_attnums IS NULL THEN w.exclude_columns
                ELSE hookline.watch_columns(w.relation, w.exclude_columns, w.exclude_attnums, true) END AS exclude_columns
) r;

COMMENT ON VIEW hookline.watched IS
  'Watched tables (hookline.watch()): which row changes become which event types, with what filters, '
  'under the columns'' current names. A table dropped since it was watched no longer appears.';
COMMENT ON COLUMN hookline.watched.columns IS 'UPDATE events only when one of these columns changed (current names); NULL: any UPDATE.';
COMMENT ON COLUMN hookline.watched.key_columns IS 'Columns identifying a row (primary key unless given), as they are named now; NULL in the array: a key column that no longer exists.';
COMMENT ON COLUMN hookline.watched.exclude_columns IS 'Columns left out of the payload''s old/new, as they are named now (a column that took an excluded column''s old name is left out too).';
COMMENT ON COLUMN hookline.watched.active IS 'True when every trigger of the watch exists and is enabled (false after ALTER TABLE … DISABLE TRIGGER, or a trigger dropped by hand) and every key column still exists.';
COMMENT ON COLUMN hookline.watched.attention IS 'NULL, or what to do: a key column dropped, a watch from before migration 0032, or columns renamed, added or dropped since hookline.watch() (events still right; re-run watch() to confirm).';
