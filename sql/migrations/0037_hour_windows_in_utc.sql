-- events_per_hour counts in UTC hours, whatever the session's TimeZone.
--
-- admit_event_v1 (0007) and admit_guarded_v1 (0027) took the hour as date_trunc('hour', now()), which
-- truncates in the session's TimeZone setting. Under a zone with a half-hour offset (Asia/Kolkata,
-- +05:30; a server's timezone, a role's ALTER ROLE ... SET timezone, a connection's options) the window
-- started at :30 UTC, and two processes whose sessions had different zones counted one tenant's events in
-- two different windows: up to twice events_per_hour in an hour. Both now truncate in UTC, as the day
-- windows always did (date_trunc('hour', now() AT TIME ZONE 'UTC') AT TIME ZONE 'UTC'). Same names and
-- arguments: workers of the previous release get the fix too. A window a half-hour session already
-- started (window_start at :30) is left as it was; the current UTC hour counts in a row of its own.

-- 0007's function, the hour taken in UTC.
CREATE OR REPLACE FUNCTION hookline.admit_event_v1(p_event_id bigint, p_tenant text, p_events_cap integer)
RETURNS timestamptz
LANGUAGE plpgsql AS $$
DECLARE
    already timestamptz;
    hour timestamptz := date_trunc('hour', now() AT TIME ZONE 'UTC') AT TIME ZONE 'UTC';
BEGIN
    SELECT admitted_at INTO already FROM hookline.events WHERE id = p_event_id;
    IF already IS NOT NULL THEN
        RETURN NULL;
    END IF;
    INSERT INTO hookline.budget_windows (tenant, period, window_start)
    VALUES (p_tenant, 'hour', hour) ON CONFLICT DO NOTHING;
    UPDATE hookline.budget_windows SET events = events + 1
    WHERE tenant = p_tenant AND period = 'hour' AND window_start = hour
      AND (p_events_cap IS NULL OR events < p_events_cap);
    IF NOT FOUND THEN
        RETURN hour + interval '1 hour';
    END IF;
    UPDATE hookline.events SET admitted_at = now() WHERE id = p_event_id;
    RETURN NULL;
END;
$$;
COMMENT ON FUNCTION hookline.admit_event_v1(bigint, text, integer) IS
  'Count an event once against its tenant''s events_per_hour: NULL when admitted (or admitted before), '
  'else when the next hour opens (nothing counted). Hours are UTC hours, whatever the session''s TimeZone '
  '(migration 0037).';

-- 0027's function, the hour taken in UTC.
CREATE OR REPLACE FUNCTION hookline.admit_guarded_v1(
    p_event_id bigint, p_max_events integer[], p_window_seconds double precision[], p_count_hour boolean,
    p_events_cap integer
) RETURNS TABLE (blocked integer, n bigint, frees_at timestamptz, reopens_at timestamptz)
LANGUAGE plpgsql
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    ev record;
    counted bigint;
    oldest timestamptz;
    hour timestamptz := date_trunc('hour', now() AT TIME ZONE 'UTC') AT TIME ZONE 'UTC';
BEGIN
    SELECT e.source, e.ordering_key, e.tenant, e.admitted_at INTO ev FROM hookline.events e WHERE e.id = p_event_id;
    IF NOT FOUND THEN
        RETURN QUERY SELECT NULL::integer, NULL::bigint, NULL::timestamptz, NULL::timestamptz;
        RETURN;
    END IF;
    -- one admission at a time per ordering key and per tenant (a keyed event counts for its tenant too):
    -- the next one counts after this one committed. Key before tenant, always: no deadlock.
    IF ev.ordering_key IS NOT NULL THEN
        PERFORM pg_advisory_xact_lock(
            hashtextextended('hookline.loop_guard:key:' || ev.source || ':' || ev.ordering_key, 0));
    END IF;
    PERFORM pg_advisory_xact_lock(hashtextextended('hookline.loop_guard:tenant:' || coalesce(ev.tenant, ''), 0));
    FOR i IN 1 .. coalesce(array_length(p_max_events, 1), 0) LOOP
        IF ev.ordering_key IS NOT NULL THEN
            SELECT count(*), min(e.admitted_at) INTO counted, oldest FROM hookline.events e
            WHERE e.source = ev.source AND e.ordering_key = ev.ordering_key AND e.admitted_at IS NOT NULL
              AND e.admitted_at > now() - make_interval(secs => p_window_seconds[i]) AND e.id <> p_event_id;
        ELSIF ev.tenant IS NULL THEN
            SELECT count(*), min(e.admitted_at) INTO counted, oldest FROM hookline.events e
            WHERE e.tenant IS NULL AND e.admitted_at IS NOT NULL
              AND e.admitted_at > now() - make_interval(secs => p_window_seconds[i]) AND e.id <> p_event_id;
        ELSE
            SELECT count(*), min(e.admitted_at) INTO counted, oldest FROM hookline.events e
            WHERE e.tenant = ev.tenant AND e.admitted_at IS NOT NULL
              AND e.admitted_at > now() - make_interval(secs => p_window_seconds[i]) AND e.id <> p_event_id;
        END IF;
        IF counted >= p_max_events[i] THEN  -- nothing admitted, nothing counted
            RETURN QUERY SELECT i, counted, oldest + make_interval(secs => p_window_seconds[i]), NULL::timestamptz;
            RETURN;
        END IF;
    END LOOP;
    IF ev.admitted_at IS NULL THEN
        IF p_count_hour THEN  -- hookline.admit_event_v1's count against events_per_hour
            INSERT INTO hookline.budget_windows (tenant, period, window_start)
            VALUES (coalesce(ev.tenant, ''), 'hour', hour) ON CONFLICT DO NOTHING;
            UPDATE hookline.budget_windows w SET events = w.events + 1
            WHERE w.tenant = coalesce(ev.tenant, '') AND w.period = 'hour' AND w.window_start = hour
              AND (p_events_cap IS NULL OR w.events < p_events_cap);
            IF NOT FOUND THEN
                RETURN QUERY SELECT NULL::integer, NULL::bigint, NULL::timestamptz, hour + interval '1 hour';
                RETURN;
            END IF;
        END IF;
        UPDATE hookline.events SET admitted_at = now() WHERE id = p_event_id;
    END IF;
    RETURN QUERY SELECT NULL::integer, NULL::bigint, NULL::timestamptz, NULL::timestamptz;
END;
$$;
COMMENT ON FUNCTION hookline.admit_guarded_v1(bigint, integer[], double precision[], boolean, integer) IS
  'Admit an event under its pipelines'' loop guards (parallel arrays: max_events, window_seconds), counting '
  'and admitting under a transaction-scoped advisory lock per ordering key and per tenant, so concurrent '
  'events of one key or tenant never all see room. Returns blocked = the 1-based index of the first guard '
  'whose window is full, with its count (other events admitted in the window, per ordering key, else per '
  'tenant) and when its oldest leaves it; else, with p_count_hour, counts the event once against '
  'events_per_hour (p_events_cap, NULL = no cap) as hookline.admit_event_v1 does: reopens_at = when the next '
  'hour opens if it is full. Nothing is counted or admitted unless every column comes back NULL; an event '
  'admitted before is checked against the guards again but not counted again. Hours are UTC hours, '
  'whatever the session''s TimeZone (migration 0037).';

COMMENT ON COLUMN hookline.budget_windows.window_start IS
  'Start of the UTC hour (period hour) / UTC day (period day), whatever the session''s TimeZone.';
