-- xnovu:no-transaction
-- The notifications that ended (SENT, RETRACTED, FAILED and dead-lettered), in the order they last changed: the
-- prune (docs/retention.md) reads the ones that ended before its cutoff from here, batch by batch, from where the last
-- batch stopped, so it never reads a notification still in the retention window nor one it already pruned. Built
-- concurrently, outside a transaction, like 0008_scale_indexes.sql (inserts go on meanwhile).
CREATE INDEX CONCURRENTLY IF NOT EXISTS ent_notification_xnovu_terminal_idx
  ON notify.ent_notification (updated_at, id)
  WHERE notification_status IN ('SENT', 'RETRACTED')
     OR (notification_status = 'FAILED' AND dead_lettered_at IS NOT NULL);
