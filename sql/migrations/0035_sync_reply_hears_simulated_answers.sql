-- A synchronous reply carries the simulated answer under `hookline dev --simulate-model`.
--
-- The simulated model's answers are stored with status 'simulated' (never 'succeeded', so no later run
-- reuses them as paid answers). The answer NOTIFY a waiting synchronous request listens for fired
-- for 'succeeded' rows only, and the reply read only 'succeeded' answers (reply_state in
-- sql/queries/ingest.sql): a respond = "sync" pipeline under the simulated model always gave the
-- sender respond_default, after respond_timeout_ms, and the follow-up actions delivered the answer.
-- Now a 'simulated' answer wakes the request as a succeeded one does, and the reply carries it
-- (marked x-hookline-simulated: true). The worker's group commit sends the same NOTIFY after its
-- commit for simulated answers too (worker/callwriter.py).

DROP TRIGGER llm_calls_answer_notify ON hookline.llm_calls;
CREATE TRIGGER llm_calls_answer_notify
    AFTER INSERT ON hookline.llm_calls
    FOR EACH ROW WHEN (NEW.status IN ('succeeded', 'simulated'))
    EXECUTE FUNCTION hookline.notify_answer_stored();
COMMENT ON TRIGGER llm_calls_answer_notify ON hookline.llm_calls IS
  'NOTIFY on channel hookline_events when an answer is stored, succeeded or simulated (hookline dev '
  '--simulate-model; migration 0035), so a waiting synchronous reply carries it (see '
  'hookline.notify_answer_stored).';

COMMENT ON FUNCTION hookline.notify_answer_stored() IS
  'Row trigger: NOTIFY hookline_events {"op":"answer","id":EVENT_ID,"pipeline"} when a validated model '
  'answer is stored, succeeded or simulated (a synchronous reply can be sent before the actions run); '
  'silent in a transaction that set hookline.notify = ''after_commit'', whose writer sends the same '
  'payload right after its commit.';
