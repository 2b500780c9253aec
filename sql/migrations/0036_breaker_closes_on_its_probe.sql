-- An open circuit breaker closes on its half-open probe's success, not on a straggler's.
--
-- breaker_record_v1 closed the breaker on any successful call, whatever its state. A call sent while the
-- breaker was still closed and answered after it opened (every call in flight when the last failure
-- came in) closed it again at once: during a partial outage (some calls overloaded, some answered) the
-- breaker opened and closed within a second, over and over, never keeping its open_seconds, and every
-- flip sent an open / closed alert. breaker_record_v2 ignores a success while the breaker is open (no
-- probe has been let out: the call was sent before it opened); half-open (the probe is out, or was) and
-- closed are as before. breaker_record_v1 stays for workers of the previous release during a rolling
-- deploy.

CREATE FUNCTION hookline.breaker_record_v2(
    p_model text, p_ok boolean, p_failures integer, p_window_seconds double precision,
    p_open_seconds double precision, p_error text
) RETURNS TABLE (new_state text, flipped boolean)
LANGUAGE plpgsql AS $$
DECLARE
    b hookline.breakers%ROWTYPE;
BEGIN
    IF p_ok THEN
        SELECT * INTO b FROM hookline.breakers k WHERE k.model = p_model;  -- no lock: the hot path of every answer
        IF FOUND AND b.state = 'open' THEN  -- sent before it opened: only the half-open probe decides
            RETURN QUERY SELECT 'open'::text, false;
            RETURN;
        END IF;
    END IF;
    RETURN QUERY SELECT r.new_state, r.flipped
    FROM hookline.breaker_record_v1(p_model, p_ok, p_failures, p_window_seconds, p_open_seconds, p_error) r;
END;
$$;
COMMENT ON FUNCTION hookline.breaker_record_v2(text, boolean, integer, double precision, double precision, text) IS
  'Record a call''s outcome: breaker_record_v1, except that a success while the breaker is open (a call sent '
  'before it opened; no half-open probe has been let out) changes nothing: the breaker keeps its open_seconds '
  'and its half-open probe decides. flipped = the state changed.';
