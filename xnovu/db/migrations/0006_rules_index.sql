-- xnovu:no-transaction
-- The second half of 0006_rules.sql, where inserts into a large ent_notification go on (docs/design.md
-- "Migrations"): it runs right after 0006_rules.sql (files run in byte order of their names, '.' < '_') and before
-- any 0007. Outside a transaction, one statement at a time; statements end with ';' at the end of a line (inside a
-- $$ block too). Safe to run again, and a no-op where an earlier 0006 already built the index and validated the key.

-- Notifications a rule made (a partial index: most rows have no rule).
CREATE INDEX CONCURRENTLY IF NOT EXISTS ent_notification_rule_id_idx
  ON notify.ent_notification (notification_rule_id) WHERE notification_rule_id IS NOT NULL;

-- Validate the foreign key 0006_rules.sql added NOT VALID, in a transaction of its own: VALIDATE CONSTRAINT reads the
-- table under SHARE UPDATE EXCLUSIVE, which inserts do not wait for (and ROW SHARE on the rules table).
DO $$
DECLARE
  fk record;
BEGIN
  FOR fk IN
    SELECT conname FROM pg_constraint
    WHERE conrelid = 'notify.ent_notification'::regclass AND contype = 'f'
      AND confrelid = 'notify.ent_notification_rule'::regclass AND NOT convalidated
  LOOP
    EXECUTE format('ALTER TABLE notify.ent_notification VALIDATE CONSTRAINT %I', fk.conname);
  END LOOP;
END $$;
