-- xnovu:no-transaction
-- The second half of 0011_priority.sql, where inserts into a large ent_notification go on (docs/design.md
-- "Migrations"), as 0006_rules_index.sql is for 0006. Safe to run again.

-- Rows by priority (a partial index: most rows have none): the foreign key's ON DELETE SET NULL, and the rows whose
-- urgency follows a priority whose sort_order changed.
CREATE INDEX CONCURRENTLY IF NOT EXISTS ent_notification_priority_id_idx
  ON notify.ent_notification (typ_notification_priority_id) WHERE typ_notification_priority_id IS NOT NULL;

-- Validate the foreign key 0011_priority.sql added NOT VALID, in a transaction of its own (SHARE UPDATE EXCLUSIVE:
-- inserts do not wait for it).
DO $$
DECLARE
  fk record;
BEGIN
  FOR fk IN
    SELECT conname FROM pg_constraint
    WHERE conrelid = 'notify.ent_notification'::regclass AND contype = 'f'
      AND confrelid = 'notify.typ_notification_priority'::regclass AND NOT convalidated
  LOOP
    EXECUTE format('ALTER TABLE notify.ent_notification VALIDATE CONSTRAINT %I', fk.conname);
  END LOOP;
END $$;
