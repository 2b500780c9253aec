-- A breaker opens after `failures` failed calls within the last window_seconds, successes in between or not.
--
-- breaker_record_v1 (and v2, which calls it) reset the count to 0 at every success while the breaker was
-- closed, so it opened only after `failures` failures in a row: in a partial outage (most calls failing,
-- some answered) it never opened, however many calls failed within the window. And the window was fixed
-- at its first failure: when it ended the count started again at 1, forgetting the failures of its last
-- seconds, so a burst of `failures` failures across that moment did not open it either. The README (and
-- issue 10: "after N failures in a window the breaker opens") say failures within the window.
-- hookline.breakers.failed_at keeps the times of the latest failures (at most `failures` of them);
-- breaker_record_v3 counts those of the last window_seconds, and a success while closed changes nothing
-- (no write on the hot path of every answer). Open and half-open are as in v2: a success while open (a
-- call sent before it opened) changes nothing, the half-open probe's success closes the breaker and
-- forgets the failures, a failure while open or half-open opens it again. breaker_record_v1 and v2 stay
-- for workers of the previous release during a rolling deploy.

ALTER TABLE hookline.breakers ADD COLUMN failed_at timestamptz[] NOT NULL DEFAULT '{}';
COMMENT ON COLUMN hookline.breakers.failed_at IS
  'When the latest failures happened (at most the breaker''s failures, oldest first): breaker_record_v3 opens '
  'the breaker when that many fall within window_seconds. Emptied when the half-open probe closes it.';

CREATE FUNCTION hookline.breaker_record_v3(
    p_model text, p_ok boolean, p_failures integer, p_window_seconds double precision,
    p_open_seconds double precision, p_error text
) RETURNS TABLE (new_state text, flipped boolean)
LANGUAGE plpgsql AS $$
DECLARE
    b hookline.breakers%ROWTYPE;
    recent timestamptz[];
BEGIN
    IF p_ok THEN
        SELECT * INTO b FROM hookline.breakers k WHERE k.model = p_model;  -- no lock: the hot path of every answer
        IF NOT FOUND OR b.state <> 'half_open' THEN
            -- closed: the failures of the window still count; open: sent before it opened, the probe decides
            RETURN QUERY SELECT coalesce(b.state, 'closed'), false;
            RETURN;
        END IF;
        SELECT * INTO b FROM hookline.breakers k WHERE k.model = p_model FOR UPDATE;
        IF b.state <> 'half_open' THEN  -- another worker's outcome came first
            RETURN QUERY SELECT b.state, false;
            RETURN;
        END IF;
        UPDATE hookline.breakers k SET state = 'closed', failures = 0, window_start = NULL, failed_at = '{}',
               probe_at = NULL, changed_at = now()
        WHERE k.model = p_model;
        RETURN QUERY SELECT 'closed'::text, true;
        RETURN;
    END IF;
    INSERT INTO hookline.breakers (model) VALUES (p_model) ON CONFLICT DO NOTHING;
    SELECT * INTO b FROM hookline.breakers k WHERE k.model = p_model FOR UPDATE;
    IF b.state IN ('half_open', 'open') THEN
        UPDATE hookline.breakers k SET state = 'open', open_until = now() + make_interval(secs => p_open_seconds),
               opened_at = CASE WHEN b.state = 'half_open' THEN now() ELSE k.opened_at END,
               probe_at = NULL, last_error = p_error, changed_at = now()
        WHERE k.model = p_model;
        RETURN QUERY SELECT 'open'::text, b.state = 'half_open';
        RETURN;
    END IF;
    -- the latest p_failures failures of the last p_window_seconds, this one included, oldest first
    recent := ARRAY(
        SELECT t FROM (
            SELECT t FROM unnest(b.failed_at || now()) t
            WHERE t >= now() - make_interval(secs => p_window_seconds)
            ORDER BY t DESC LIMIT greatest(p_failures, 1)
        ) latest ORDER BY t
    );
    IF cardinality(recent) >= p_failures THEN
        UPDATE hookline.breakers k SET state = 'open', failures = cardinality(recent), window_start = recent[1],
               failed_at = recent, opened_at = now(), open_until = now() + make_interval(secs => p_open_seconds),
               last_error = p_error, changed_at = now()
        WHERE k.model = p_model;
        RETURN QUERY SELECT 'open'::text, true;
    ELSE
        UPDATE hookline.breakers k SET failures = cardinality(recent), window_start = recent[1], failed_at = recent,
               last_error = p_error
        WHERE k.model = p_model;
        RETURN QUERY SELECT 'closed'::text, false;
    END IF;
END;
$$;
COMMENT ON FUNCTION hookline.breaker_record_v3(text, boolean, integer, double precision, double precision, text) IS
  'Record a call''s outcome: p_failures failures within the last p_window_seconds open the breaker for '
  'p_open_seconds, whatever succeeded in between (a success while closed changes nothing); a success while '
  'open (a call sent before it opened) changes nothing either; the half-open probe''s success closes it and '
  'forgets the failures, a failure while open or half-open opens it again. flipped = the state changed.';

COMMENT ON COLUMN hookline.breakers.failures IS
  'Failed calls (5xx, 529, timeouts, connection errors) within window_seconds at the last failure recorded.';
COMMENT ON COLUMN hookline.breakers.window_start IS 'The oldest of those failures (failed_at[1]).';
