-- Comments only: hookline.alerts_sent holds more than the loop guard's claims since the cap alert of a
-- tenant's budget claims there (kind budget_cap, apart from the alert_at alert's budget_windows.alerted_at),
-- and retention prunes both kinds (migration 0052). The comments of migrations 0007 and 0052 said
-- loop guard only.

COMMENT ON TABLE hookline.alerts_sent IS
  'Alerts that fire once per window, so that every worker holding an event of a tripped key or tenant '
  'does not alert again: the loop guard (once per ordering key or tenant and hour) and a tenant budget''s '
  'cap (once per tenant, period and window: its first event held or dead at the cap). The alert_at alert '
  'of a budget claims budget_windows.alerted_at instead. Retention deletes rows whose window began more '
  'than a day ago (hookline.prune_alerts_sent).';
COMMENT ON COLUMN hookline.alerts_sent.kind IS 'Alert kind: loop_guard or budget_cap.';
COMMENT ON COLUMN hookline.alerts_sent.subject IS
  'What tripped: the pipeline and ordering key or tenant (loop_guard); the period and tenant, '
  '''day TENANT'' or ''hour TENANT'' (budget_cap).';
COMMENT ON COLUMN hookline.alerts_sent.window_start IS
  'The start of the window the alert covers: the hour (loop_guard), the budget window (budget_cap).';
COMMENT ON INDEX hookline.alerts_sent_window_idx IS
  'Alert claims by window start: what hookline.prune_alerts_sent (retention, every minute) reads.';
COMMENT ON FUNCTION hookline.prune_alerts_sent(integer) IS
  'Retention of hookline.alerts_sent: delete up to p_batch claims (loop guard and budget cap) whose '
  'window began more than a day ago, the oldest first (only current windows are claimed again); returns '
  'how many.';
