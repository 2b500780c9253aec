-- hookline.action_runs.idempotency_key is no longer one key per action for good: a forced replay
-- (hookline.replay(id, p_force => true), `hookline replay --force`) of an action that ran before sends
-- a new key, the old one with '-replay-' and the event's replays appended, so that a receiver which
-- drops repeats by key (Idempotency-Key, webhook-id, Message-ID) takes the repeat asked for; the
-- retries of that run send it again (claim_action in sql/queries/worker.sql). The column keeps the
-- key the last run sent. Only its description changes here.

COMMENT ON COLUMN hookline.action_runs.idempotency_key IS
  'The key the action''s last run sent (Idempotency-Key / webhook-id for http, Message-ID and '
  'X-Hookline-Idempotency-Key for email) so receivers can drop repeats: hookline-EVENT-PIPELINE-ACTION, '
  'the same for every attempt, retry and replay, except a forced replay of an action that ran before, '
  'which sends that key with -replay-N appended (N: hookline.events.replays), kept by its retries.';
