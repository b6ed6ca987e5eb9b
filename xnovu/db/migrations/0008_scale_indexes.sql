-- xnovu:no-transaction
-- Claims and deletes that cost the same however large the tables grow (docs/performance.md "Costs that do not grow
-- with the table"). Built concurrently, outside a transaction, like 0004_claim_indexes.sql.

-- claim_new and claim_scheduled without held rows (0008_held_rows.sql): a claim reads only rows it may take.
CREATE INDEX CONCURRENTLY IF NOT EXISTS ent_notification_xnovu_new_idx3 ON notify.ent_notification (updated_at, id)
  WHERE notification_status = 'PENDING' AND publish_status = 'PUBLISH' AND deactivated IS NOT TRUE
    AND scheduled_for IS NULL AND held_at IS NULL;
CREATE INDEX CONCURRENTLY IF NOT EXISTS ent_notification_xnovu_scheduled_idx3 ON notify.ent_notification (scheduled_for, id)
  WHERE notification_status = 'PENDING' AND publish_status = 'PUBLISH' AND deactivated IS NOT TRUE
    AND scheduled_for IS NOT NULL AND held_at IS NULL;

-- The hold sweep: the unmarked PENDING rows of a held workflow, and the marked rows of a workflow published again,
-- each found per workflow without reading any other row.
CREATE INDEX CONCURRENTLY IF NOT EXISTS ent_notification_xnovu_holdable_idx ON notify.ent_notification (notification_workflow_id, id)
  WHERE notification_status = 'PENDING' AND publish_status = 'PUBLISH' AND deactivated IS NOT TRUE
    AND held_at IS NULL;
CREATE INDEX CONCURRENTLY IF NOT EXISTS ent_notification_xnovu_held_idx ON notify.ent_notification (notification_workflow_id, id)
  WHERE held_at IS NOT NULL;

-- The foreign key xnovu_rule_fire.notification_id (ON DELETE SET NULL): deleting a notification looks up its fire
-- through this index instead of reading the whole table.
CREATE INDEX CONCURRENTLY IF NOT EXISTS xnovu_rule_fire_notification_idx ON notify.xnovu_rule_fire (notification_id)
  WHERE notification_id IS NOT NULL;

-- Superseded by the *_idx3 indexes above. Dropped, not kept: the planner may prefer an index that still lists the
-- held rows (it did, for the scheduled claim) and read them all again. A worker of the previous version, whose claims
-- do not say `held_at IS NULL`, claims without an index until it is replaced: upgrade workers promptly after migrating
-- (README "Operations").
DROP INDEX CONCURRENTLY IF EXISTS notify.ent_notification_xnovu_new_idx2;
DROP INDEX CONCURRENTLY IF EXISTS notify.ent_notification_xnovu_scheduled_idx2;
