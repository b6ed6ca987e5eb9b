-- xnovu:no-transaction
-- The claim indexes of priority and fair share (docs/priority.md "Claims"): each claim reads the head of every
-- (urgency, enterprise) group it considers, in due order, as one index range: the urgencies from the highest down
-- and the enterprises of each by a bounded skip scan, then each group's first due rows. Built concurrently, outside
-- a transaction, like 0008_scale_indexes.sql; the *_idx3 and retry indexes stay (the oldest due rows of each claim,
-- whatever their group, are read through them, and workers of the previous version claim through them).
CREATE INDEX CONCURRENTLY IF NOT EXISTS ent_notification_xnovu_new_fair_idx
  ON notify.ent_notification (xnovu_priority DESC, enterprise_id, updated_at, id)
  WHERE notification_status = 'PENDING' AND publish_status = 'PUBLISH' AND deactivated IS NOT TRUE
    AND scheduled_for IS NULL AND held_at IS NULL;
CREATE INDEX CONCURRENTLY IF NOT EXISTS ent_notification_xnovu_scheduled_fair_idx
  ON notify.ent_notification (xnovu_priority DESC, enterprise_id, scheduled_for, id)
  WHERE notification_status = 'PENDING' AND publish_status = 'PUBLISH' AND deactivated IS NOT TRUE
    AND scheduled_for IS NOT NULL AND held_at IS NULL;
-- Retries only, those a claim may take (as the new and scheduled ones: published, active, not held, 0014): a walk
-- of enterprises never visits one that only has rows in flight or retries of a paused workflow. Dead attempts
-- (PROCESSING, lease expired) are few and known by id: candidates_failed reads them by primary key.
CREATE INDEX CONCURRENTLY IF NOT EXISTS ent_notification_xnovu_retry_fair_idx
  ON notify.ent_notification (xnovu_priority DESC, enterprise_id, next_attempt_at, id)
  WHERE notification_status = 'FAILED' AND dead_lettered_at IS NULL AND publish_status = 'PUBLISH'
    AND deactivated IS NOT TRUE AND held_at IS NULL;
