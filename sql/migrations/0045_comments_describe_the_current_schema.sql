-- Comments that later migrations left describing an older schema (CREATE OR REPLACE and ADD COLUMN keep
-- the old COMMENT, and `\d+` showed it to DBAs as current):
--
-- * llm_calls.model said "Model id requested"; since migration 0006 it is the model called, and
--   requested_model is the pipeline's own (they differ on a fallback or an escalation).
-- * llm_calls.route listed the routes of migration 0006 only: batch_api, micro_batch:N and the prefixed
--   further calls (escalate:FIELD+repair, micro_batch:N+fallback:overloaded) were missing.
-- * action_runs.result did not say what a python action stores (returned).
-- * events.attempts and events.started_at said "first started"; hookline.replay sets them back (0, NULL),
--   so they count and date the run since the latest replay.
-- * The functions a later version replaced (reserve_budget_v1/_v2, settle_budget_v1, breaker_record_v1/_v2)
--   read as current; they stay only for workers of the previous release during a rolling deploy.
--   breaker_record_v1's also named its result column changed; it is flipped.
-- Comments only: nothing else changes.

COMMENT ON COLUMN hookline.llm_calls.model IS
  'Model id called (e.g. claude-haiku-4-5): the pipeline''s own (requested_model), or the fallback or '
  'escalation model that answered instead (route says which).';

COMMENT ON COLUMN hookline.llm_calls.route IS
  'Why this model answered: primary; fallback:overloaded (529 from the primary); fallback:breaker_open; '
  'escalate:FIELD (the first answer''s boolean FIELD was true); retry:max_tokens (cut answer, larger budget); '
  'repair (schema repair turn); batch_api (a Message Batches request); micro_batch:N (one part of a combined '
  'answer for N events). An escalation''s further calls keep its prefix (escalate:FIELD+repair), and so does '
  'a micro-batch''s fallback (micro_batch:N+fallback:overloaded). NULL for calls made before 0006.';

COMMENT ON COLUMN hookline.action_runs.result IS
  'What the action returned (http, slack_response, discord_followup: status and a body excerpt; slack: '
  'channel and ts; email: message_id; sql: the function and what it returned; python: returned, what '
  'the function returned), as JSON whatever it holds. Kept by retention.';

COMMENT ON COLUMN hookline.events.attempts IS
  'How many times a worker started processing this event since it arrived or was last replayed '
  '(hookline.replay sets it back to 0).';

COMMENT ON COLUMN hookline.events.started_at IS
  'When a worker first started processing it since it arrived or was last replayed (hookline.replay sets '
  'it back to NULL); a retry keeps it.';

COMMENT ON FUNCTION hookline.reserve_budget_v1(text, bigint, numeric, bigint, numeric) IS
  'Superseded by hookline.reserve_budget_v2 (migration 0012) and v3 (0028), which the worker calls; kept '
  'for workers of an older release during a rolling deploy. Reserve a call''s worst case (tokens, USD) '
  'in the tenant''s UTC day, only if settled + reserved + this stays within both caps (NULL = no cap). '
  'granted=false: over a cap, nothing reserved; reopens_at is when the next window starts.';

COMMENT ON FUNCTION hookline.reserve_budget_v2(text, bigint, numeric, bigint, numeric, bigint, text, double precision) IS
  'Superseded by hookline.reserve_budget_v3 (migration 0028), which the worker calls; kept for workers of '
  'the previous release during a rolling deploy. reserve_budget_v1 with a lease: first reclaim the '
  'tenant''s reservations whose lease ended, then reserve the call''s worst case in the UTC day if settled '
  '+ reserved + this stays within both caps, recording it in budget_reservations (reservation_id, settled '
  'by settle_budget_v2). granted=false: nothing reserved.';

COMMENT ON FUNCTION hookline.settle_budget_v1(text, timestamptz, bigint, numeric, bigint, numeric) IS
  'Superseded by hookline.settle_budget_v2 (migration 0012), which the worker calls; kept for workers of '
  'an older release during a rolling deploy. After a call: release its reservation and add what it '
  'actually used; returns the window''s totals.';

COMMENT ON FUNCTION hookline.breaker_record_v1(text, boolean, integer, double precision, double precision, text) IS
  'Superseded by hookline.breaker_record_v3 (migration 0038), which the worker calls; kept for workers of '
  'an older release during a rolling deploy. Record a call''s outcome: a success closes the breaker; '
  'p_failures failures in a row within p_window_seconds open it for p_open_seconds; a failed half-open '
  'probe opens it again. flipped = the state changed.';

COMMENT ON FUNCTION hookline.breaker_record_v2(text, boolean, integer, double precision, double precision, text) IS
  'Superseded by hookline.breaker_record_v3 (migration 0038), which the worker calls; kept for workers of '
  'the previous release during a rolling deploy. Record a call''s outcome: breaker_record_v1, except that '
  'a success while the breaker is open (a call sent before it opened; no half-open probe has been let out) '
  'changes nothing: the breaker keeps its open_seconds and its half-open probe decides. flipped = the state '
  'changed.';
