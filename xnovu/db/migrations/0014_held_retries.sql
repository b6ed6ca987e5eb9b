-- xnovu:no-transaction
-- Held retries leave the claim indexes too (docs/design.md "Held rows"): a FAILED row whose Novu workflow is
-- DRAFT/NONE or deactivated is marked with held_at by the hold sweep, like a PENDING one, and the failed poll reads
-- its oldest due retries through the index below, which leaves marked rows out. Before, 20 000 due retries of a paused
-- workflow were read and rejected (the workflow check) by every failed claim under the claim lock: 528 buffers, and
-- growing with them. The mark is a hint only: every claim, acquire and fence still checks the workflow (I1). Built
-- concurrently, outside a transaction, like 0008_scale_indexes.sql (inserts go on meanwhile).

-- candidates_failed: the retries a claim may take (published, active, not held), due or left by the original worker
-- (no next_attempt_at: the NULLs at the end). The 0004 retry index stays: PROCESSING rows whose lease ran out are
-- found through it (expired_leases), and workers of the previous version claim through it.
CREATE INDEX CONCURRENTLY IF NOT EXISTS ent_notification_xnovu_retry_idx2
  ON notify.ent_notification (next_attempt_at, id)
  WHERE notification_status = 'FAILED' AND dead_lettered_at IS NULL AND publish_status = 'PUBLISH'
    AND deactivated IS NOT TRUE AND held_at IS NULL;

-- The hold sweep: the unmarked retries of a held workflow, found per workflow without reading any other row (as
-- 0008's holdable index is for PENDING rows; the marked rows of a workflow published again are found through 0008's
-- held-rows index whatever their status). `notification_workflow_id IS NOT NULL` keeps it to the sweep: with the
-- same predicate as the index above, the planner read all of it to find the legacy retries of candidates_failed
-- (a column's NULL fraction is the table's, mostly sent rows without next_attempt_at).
CREATE INDEX CONCURRENTLY IF NOT EXISTS ent_notification_xnovu_holdable_failed_idx
  ON notify.ent_notification (notification_workflow_id, id)
  WHERE notification_status = 'FAILED' AND dead_lettered_at IS NULL AND publish_status = 'PUBLISH'
    AND deactivated IS NOT TRUE AND held_at IS NULL AND notification_workflow_id IS NOT NULL;
