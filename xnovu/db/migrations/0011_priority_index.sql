-- xnovu:no-transaction
-- The second half of 0011_priority.sql, where inserts into a large ent_notification go on (docs/design.md
-- "Migrations"), as 0006_rules_index.sql is for 0006. Safe to run again.

-- Rows by priority (a partial index: most rows have none), for the foreign key's ON DELETE SET NULL.
CREATE INDEX CONCURRENTLY IF NOT EXISTS ent_notification_priority_id_idx
  ON notify.ent_notification (typ_notification_priority_id) WHERE typ_notification_priority_id IS NOT NULL;

-- The queued rows of each priority in id order: the walk that recomputes their urgency after a change, 5 000 at a
-- time (queries.sql `priority_recompute_step`), reads only them, however much history the priority has.
CREATE INDEX CONCURRENTLY IF NOT EXISTS ent_notification_priority_queued_idx
  ON notify.ent_notification (typ_notification_priority_id, id)
  WHERE typ_notification_priority_id IS NOT NULL AND notification_status IN ('PENDING', 'FAILED', 'PROCESSING');

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

-- The urgency of the rows that named a priority before 0011_priority.sql added the column (every row reads 0 until
-- then): the non-terminal ones (SENT and RETRACTED rows are history), by ranges of 5 000 ids, each range in a
-- transaction of its own (COMMIT inside the block, which runs outside any transaction), so no row lock is held for
-- longer than one short range and inserts never wait (they take no lock these updates hold). updated_at is kept
-- (`xnovu.keep_updated_at`, 0011_priority.sql): it is a PENDING row's place in the queue. Nothing to do, and nothing
-- read but one index probe, where no row names a priority.
DO $$
DECLARE
  lo bigint;
  hi bigint;
BEGIN
  SELECT min(id) - 1, max(id) INTO lo, hi FROM notify.ent_notification WHERE typ_notification_priority_id IS NOT NULL;
  WHILE lo < hi LOOP
    PERFORM set_config('xnovu.keep_updated_at', 'on', true);
    UPDATE notify.ent_notification n SET xnovu_priority = coalesce(notify.xnovu_urgency(p.sort_order), 0)
    FROM notify.typ_notification_priority p
    WHERE n.id > lo AND n.id <= lo + 5000
      AND p.id = n.typ_notification_priority_id
      AND n.notification_status IN ('PENDING', 'FAILED', 'PROCESSING')
      AND n.xnovu_priority IS DISTINCT FROM coalesce(notify.xnovu_urgency(p.sort_order), 0);
    COMMIT;
    lo := lo + 5000;
  END LOOP;
END $$;
