-- Urgent wake-ups (docs/priority.md "Wake-ups of urgent rows"). A commit that inserts a due row above normal urgency
-- also notifies 'urgent' on the wake-up channel, beside its 'new'. The 'new' notification triggers the new-rows
-- schedule, but while a poll chain runs (a backlog draining, its claims backing off because the normal window is
-- full), Temporal only buffers that run behind the chain, and the urgent row waited for the chain's next claim. On
-- 'urgent' a worker signals the running chain, which claims at once (xnovu/worker/wakeup.py).
-- Only the function body changes (CREATE OR REPLACE FUNCTION): no table lock, the trigger itself stays as 0007 made it.
CREATE OR REPLACE FUNCTION notify.xnovu_wakeup_after_insert() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
  IF NOT notify.xnovu_wakeup_notify_on() THEN
    RETURN NULL;
  END IF;
  IF EXISTS (SELECT 1 FROM xnovu_new_rows n
             WHERE n.notification_status = 'PENDING' AND n.publish_status = 'PUBLISH'
               AND n.deactivated IS NOT TRUE
               AND (n.scheduled_for IS NULL OR n.scheduled_for <= now())
               AND (n.next_attempt_at IS NULL OR n.next_attempt_at <= now())) THEN
    PERFORM pg_notify('xnovu_wakeup', 'new');
    IF EXISTS (SELECT 1 FROM xnovu_new_rows n
               WHERE n.xnovu_priority > 0
                 AND n.notification_status = 'PENDING' AND n.publish_status = 'PUBLISH'
                 AND n.deactivated IS NOT TRUE
                 AND (n.scheduled_for IS NULL OR n.scheduled_for <= now())
                 AND (n.next_attempt_at IS NULL OR n.next_attempt_at <= now())) THEN
      PERFORM pg_notify('xnovu_wakeup', 'urgent');
    END IF;
  END IF;
  IF EXISTS (SELECT 1 FROM xnovu_new_rows n
             WHERE n.notification_status = 'PENDING' AND n.publish_status = 'PUBLISH'
               AND n.deactivated IS NOT TRUE AND n.scheduled_for > now()) THEN
    PERFORM pg_notify('xnovu_wakeup', 'scheduled');
  END IF;
  RETURN NULL;
END $$;
