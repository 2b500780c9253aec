-- Status changes as NOTIFY on one channel, for the web process's single LISTEN connection
-- (synchronous replies, the dashboard's live stream) and `hookline tail`.
--
-- Channel hookline_events. Payloads are small JSON objects:
--   {"op": "insert", "min_id": N, "max_id": M, "count": K}   one per INSERT statement (a batch of any size)
--   {"op": "status", "id": N, "status": "succeeded"}          one per status change of a row
-- Listeners read the rows they care about by id; nothing large travels through NOTIFY.

CREATE FUNCTION hookline.notify_events_inserted() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
    PERFORM pg_notify('hookline_events', json_build_object(
        'op', 'insert', 'min_id', min(n.id), 'max_id', max(n.id), 'count', count(*))::text)
    FROM new_rows n
    HAVING count(*) > 0;
    RETURN NULL;
END
$$;
COMMENT ON FUNCTION hookline.notify_events_inserted() IS
  'Statement trigger: one NOTIFY hookline_events {"op":"insert","min_id","max_id","count"} per INSERT '
  'statement into hookline.events, however many rows it wrote.';

CREATE FUNCTION hookline.notify_event_status() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
    PERFORM pg_notify('hookline_events',
        json_build_object('op', 'status', 'id', NEW.id, 'status', NEW.status)::text);
    RETURN NULL;
END
$$;
COMMENT ON FUNCTION hookline.notify_event_status() IS
  'Row trigger: NOTIFY hookline_events {"op":"status","id","status"} when an event''s status changes.';

CREATE TRIGGER events_inserted_notify
    AFTER INSERT ON hookline.events
    REFERENCING NEW TABLE AS new_rows
    FOR EACH STATEMENT EXECUTE FUNCTION hookline.notify_events_inserted();
COMMENT ON TRIGGER events_inserted_notify ON hookline.events IS
  'One NOTIFY on channel hookline_events per INSERT statement (see hookline.notify_events_inserted).';

CREATE TRIGGER events_status_notify
    AFTER UPDATE OF status ON hookline.events
    FOR EACH ROW WHEN (OLD.status IS DISTINCT FROM NEW.status)
    EXECUTE FUNCTION hookline.notify_event_status();
COMMENT ON TRIGGER events_status_notify ON hookline.events IS
  'NOTIFY on channel hookline_events for every status change (see hookline.notify_event_status).';
