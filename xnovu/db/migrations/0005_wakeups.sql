-- Wake-ups (README "Operations → Wake-ups"): one pg_notify('xnovu_wakeup', kind) per statement that makes rows
-- PENDING and sendable, so workers can trigger the poll schedule at once instead of waiting for the next tick.
-- kind 'new' = rows are due now (xnovu-poll-new), 'scheduled' = rows have a send time in the future
-- (xnovu-poll-scheduled; its look-ahead decides whether the run claims them yet).
--
-- Statement-level AFTER triggers with transition tables: one check and at most one notification per kind per
-- statement, whatever the number of rows. Postgres only allows a transition table on a trigger with a single
-- event and without an UPDATE column list, hence two triggers and no `UPDATE OF`. NOTIFY is delivered at commit
-- (never for a rolled-back transaction), and identical payloads within one transaction are delivered once.
-- Additive: functions and triggers only, no table rewrite; safe to run twice.

CREATE OR REPLACE FUNCTION notify.xnovu_wakeup_after_insert() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
  IF EXISTS (SELECT 1 FROM xnovu_new_rows n
             WHERE n.notification_status = 'PENDING' AND n.publish_status = 'PUBLISH'
               AND n.deactivated IS NOT TRUE
               AND (n.scheduled_for IS NULL OR n.scheduled_for <= now())
               AND (n.next_attempt_at IS NULL OR n.next_attempt_at <= now())) THEN
    PERFORM pg_notify('xnovu_wakeup', 'new');
  END IF;
  IF EXISTS (SELECT 1 FROM xnovu_new_rows n
             WHERE n.notification_status = 'PENDING' AND n.publish_status = 'PUBLISH'
               AND n.deactivated IS NOT TRUE AND n.scheduled_for > now()) THEN
    PERFORM pg_notify('xnovu_wakeup', 'scheduled');
  END IF;
  RETURN NULL;
END $$;

-- An update wakes only on a transition into "sendable PENDING": a requeue (FAILED -> PENDING), a republish or
-- reactivation of a PENDING row, or a PENDING row's send time moved. Not PROCESSING -> PENDING: that is a row
-- xnovu itself gave back because it must not be sent now, and waking on it would claim it again in a loop.
-- Rows xnovu claims or finalizes are never PENDING afterwards, so the hot path only scans its own new rows.
CREATE OR REPLACE FUNCTION notify.xnovu_wakeup_after_update() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
  IF EXISTS (SELECT 1 FROM xnovu_new_rows n JOIN xnovu_old_rows o ON o.id = n.id
             WHERE n.notification_status = 'PENDING' AND n.publish_status = 'PUBLISH'
               AND n.deactivated IS NOT TRUE
               AND (n.scheduled_for IS NULL OR n.scheduled_for <= now())
               AND (n.next_attempt_at IS NULL OR n.next_attempt_at <= now())
               AND ((o.notification_status IS DISTINCT FROM 'PENDING'
                     AND o.notification_status IS DISTINCT FROM 'PROCESSING')
                    OR o.publish_status IS DISTINCT FROM 'PUBLISH' OR o.deactivated IS TRUE
                    OR o.scheduled_for IS DISTINCT FROM n.scheduled_for)) THEN
    PERFORM pg_notify('xnovu_wakeup', 'new');
  END IF;
  IF EXISTS (SELECT 1 FROM xnovu_new_rows n JOIN xnovu_old_rows o ON o.id = n.id
             WHERE n.notification_status = 'PENDING' AND n.publish_status = 'PUBLISH'
               AND n.deactivated IS NOT TRUE AND n.scheduled_for > now()
               AND ((o.notification_status IS DISTINCT FROM 'PENDING'
                     AND o.notification_status IS DISTINCT FROM 'PROCESSING')
                    OR o.publish_status IS DISTINCT FROM 'PUBLISH' OR o.deactivated IS TRUE
                    OR o.scheduled_for IS DISTINCT FROM n.scheduled_for)) THEN
    PERFORM pg_notify('xnovu_wakeup', 'scheduled');
  END IF;
  RETURN NULL;
END $$;

DROP TRIGGER IF EXISTS xnovu_wakeup_after_insert ON notify.ent_notification;
CREATE TRIGGER xnovu_wakeup_after_insert AFTER INSERT ON notify.ent_notification
  REFERENCING NEW TABLE AS xnovu_new_rows
  FOR EACH STATEMENT EXECUTE FUNCTION notify.xnovu_wakeup_after_insert();

DROP TRIGGER IF EXISTS xnovu_wakeup_after_update ON notify.ent_notification;
CREATE TRIGGER xnovu_wakeup_after_update AFTER UPDATE ON notify.ent_notification
  REFERENCING OLD TABLE AS xnovu_old_rows NEW TABLE AS xnovu_new_rows
  FOR EACH STATEMENT EXECUTE FUNCTION notify.xnovu_wakeup_after_update();
