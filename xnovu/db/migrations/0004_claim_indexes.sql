-- xnovu:no-transaction
-- One partial index per claim query, built with CREATE INDEX CONCURRENTLY so inserts and updates of a large
-- ent_notification never wait for the build. Runs outside a transaction, one statement at a time; migrate drops and
-- rebuilds an index that an interrupted build left INVALID. Statements end with ';' at the end of a line.

-- claim_new: due, published, unscheduled PENDING rows, oldest first.
CREATE INDEX CONCURRENTLY IF NOT EXISTS ent_notification_xnovu_new_idx2 ON notify.ent_notification (updated_at, id)
  WHERE notification_status = 'PENDING' AND publish_status = 'PUBLISH' AND deactivated IS NOT TRUE
    AND scheduled_for IS NULL;

-- claim_scheduled: published PENDING rows with a send time.
CREATE INDEX CONCURRENTLY IF NOT EXISTS ent_notification_xnovu_scheduled_idx2 ON notify.ent_notification (scheduled_for, id)
  WHERE notification_status = 'PENDING' AND publish_status = 'PUBLISH' AND deactivated IS NOT TRUE
    AND scheduled_for IS NOT NULL;

-- claim_failed: retries due and expired PROCESSING leases.
CREATE INDEX CONCURRENTLY IF NOT EXISTS ent_notification_xnovu_retry_idx ON notify.ent_notification (next_attempt_at, id)
  WHERE notification_status IN ('FAILED', 'PROCESSING') AND dead_lettered_at IS NULL;

-- Rows in flight (bounding claims by what is being sent).
CREATE INDEX CONCURRENTLY IF NOT EXISTS ent_notification_xnovu_inflight_idx ON notify.ent_notification (id)
  WHERE notification_status = 'PROCESSING';

-- dlq list
CREATE INDEX CONCURRENTLY IF NOT EXISTS ent_notification_xnovu_dlq_idx ON notify.ent_notification (dead_lettered_at)
  WHERE dead_lettered_at IS NOT NULL;

-- Superseded by the *_idx2 indexes above (xnovu's own, built by an earlier 0002).
DROP INDEX CONCURRENTLY IF EXISTS notify.ent_notification_xnovu_new_idx;
DROP INDEX CONCURRENTLY IF EXISTS notify.ent_notification_xnovu_scheduled_idx;
