-- xnovu:no-transaction
-- Operators see urgent rows wait (docs/priority.md "Operating it"): the due rows above normal urgency, in due order,
-- for the backlog sample of /status and /metrics (queries.sql `due_backlog`); and claims read through them too
-- (`heads_*`): the highest urgency's oldest due rows, and whether an urgency has anything due at all. Partial indexes
-- on urgent rows only: they are few (an emergency, a password reset), so the indexes stay small however large the
-- table and its normal backlog grow, and the sample reads the oldest urgent rows without visiting a normal one, the
-- highest urgency first (so a large backlog of a lower urgency never hides the highest one's oldest row). 0012's
-- fair-share indexes lead with urgency too, but by enterprise before due time: through them the sample would read
-- every urgent row (measured on 200 000 rows with 30 000 urgent ones due: 30 005 rows, 1 028 buffers, against 10 000
-- and 254). The retry one holds only the retries a claim may take (published, active, not held: 0014). Built
-- concurrently, outside a transaction, like 0008_scale_indexes.sql (inserts go on meanwhile).
CREATE INDEX CONCURRENTLY IF NOT EXISTS ent_notification_xnovu_urgent_new_idx
  ON notify.ent_notification (xnovu_priority DESC, updated_at, id)
  WHERE xnovu_priority > 0 AND notification_status = 'PENDING' AND publish_status = 'PUBLISH'
    AND deactivated IS NOT TRUE AND scheduled_for IS NULL AND held_at IS NULL;
CREATE INDEX CONCURRENTLY IF NOT EXISTS ent_notification_xnovu_urgent_scheduled_idx
  ON notify.ent_notification (xnovu_priority DESC, scheduled_for, id)
  WHERE xnovu_priority > 0 AND notification_status = 'PENDING' AND publish_status = 'PUBLISH'
    AND deactivated IS NOT TRUE AND scheduled_for IS NOT NULL AND held_at IS NULL;
CREATE INDEX CONCURRENTLY IF NOT EXISTS ent_notification_xnovu_urgent_retry_idx
  ON notify.ent_notification (xnovu_priority DESC, next_attempt_at, id)
  WHERE xnovu_priority > 0 AND notification_status = 'FAILED' AND dead_lettered_at IS NULL
    AND publish_status = 'PUBLISH' AND deactivated IS NOT TRUE AND held_at IS NULL;
