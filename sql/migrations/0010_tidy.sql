-- Tidy-ups after the flow-control and actions work.

-- An open breaker whose open_until passed is half-open (its next call is the probe): the code says so too.
CREATE OR REPLACE VIEW hookline.breaker_state AS
SELECT b.model,
       CASE WHEN b.state = 'open' AND b.open_until <= now() THEN 'half_open' ELSE b.state END AS state,
       CASE WHEN b.state = 'closed' THEN 0
            WHEN b.state = 'half_open' OR b.open_until <= now() THEN 2
            ELSE 1 END AS state_code,
       b.failures,
       b.opened_at,
       b.open_until,
       b.last_error,
       b.changed_at
FROM hookline.breakers b;

COMMENT ON COLUMN hookline.action_runs.action_type IS
  'The action''s type: http, log, python, slack, email, sql, slack_response or discord_followup.';
