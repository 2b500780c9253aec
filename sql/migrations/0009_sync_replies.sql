-- Synchronous replies (pipelines with respond = "sync"): the web process stores the event as usual and
-- waits, on its one LISTEN connection, for the model's answer to reply in the HTTP response.
--
-- * hookline.events.respond_sync marks an event whose sender waits for the answer. The enqueue
--   trigger sends its job to the queue 'hookline-sync' with priority 1000, so workers (which listen
--   on that queue first) take it ahead of any backlog.
-- * hookline.events.sync_reply records whether the HTTP reply carried the answer or the default, so
--   that follow-up actions (slack_response, discord_followup) post a late answer exactly once.
-- * One NOTIFY hookline_events {"op":"answer","id":EVENT_ID,"pipeline":"..."} when a validated answer
--   is stored in hookline.llm_calls: the reply is ready before the pipeline's actions run (an action
--   may be slow; the sender's deadline is not).

ALTER TABLE hookline.events ADD COLUMN respond_sync boolean NOT NULL DEFAULT false;
COMMENT ON COLUMN hookline.events.respond_sync IS
  'True when a respond = "sync" pipeline matched at ingest: the sender waits for the answer in its HTTP '
  'response, so the job goes to the high-priority queue hookline-sync.';

ALTER TABLE hookline.events ADD COLUMN sync_reply text
    CONSTRAINT events_sync_reply_check CHECK (sync_reply IN ('answer', 'default'));
COMMENT ON COLUMN hookline.events.sync_reply IS
  'What the sender''s HTTP reply carried, for respond_sync events: ''answer'' (the model''s answer, in '
  'time) or ''default'' (respond_default; follow-up actions such as slack_response then deliver the '
  'late answer). Set once, by whichever of the web process and the worker decides first.';
COMMENT ON CONSTRAINT events_sync_reply_check ON hookline.events IS 'Allowed sync_reply values.';

CREATE OR REPLACE FUNCTION hookline.enqueue_events() RETURNS trigger
LANGUAGE plpgsql
SET search_path = pg_catalog, pg_temp AS $$
BEGIN
    PERFORM hookline.defer_jobs(
        'hookline:process_event',
        array_agg(CASE WHEN n.respond_sync THEN 'hookline-sync' ELSE 'hookline' END ORDER BY n.id),
        array_agg(jsonb_build_object('event_id', n.id) ORDER BY n.id),
        array_agg(CASE WHEN n.ordering_key IS NULL THEN NULL
                       ELSE 'hookline:' || n.source || ':' || n.ordering_key END ORDER BY n.id),
        array_agg(CASE WHEN n.respond_sync THEN 1000 ELSE n.priority END ORDER BY n.id))
    FROM new_rows n
    WHERE n.status = 'queued'
    HAVING count(*) > 0;
    RETURN NULL;
END;
$$;
COMMENT ON FUNCTION hookline.enqueue_events() IS
  'Statement trigger function: defers process_event(event_id) for every queued row the INSERT wrote, in '
  'one hookline.defer_jobs call, with each event''s ordering key as procrastinate lock so events of one '
  'entity run one at a time, in order. Events a synchronous reply waits for (respond_sync) go to queue '
  'hookline-sync at priority 1000; the others to queue hookline at the event''s priority.';

CREATE FUNCTION hookline.notify_answer_stored() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
    PERFORM pg_notify('hookline_events',
        json_build_object('op', 'answer', 'id', NEW.event_id, 'pipeline', NEW.pipeline)::text);
    RETURN NULL;
END
$$;
COMMENT ON FUNCTION hookline.notify_answer_stored() IS
  'Row trigger: NOTIFY hookline_events {"op":"answer","id":EVENT_ID,"pipeline"} when a validated model '
  'answer is stored (a synchronous reply can be sent before the actions run).';

CREATE TRIGGER llm_calls_answer_notify
    AFTER INSERT ON hookline.llm_calls
    FOR EACH ROW WHEN (NEW.status = 'succeeded')
    EXECUTE FUNCTION hookline.notify_answer_stored();
COMMENT ON TRIGGER llm_calls_answer_notify ON hookline.llm_calls IS
  'NOTIFY on channel hookline_events when a succeeded answer is stored (see hookline.notify_answer_stored).';
