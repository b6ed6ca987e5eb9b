-- Wake-ups, second version (README "Operations → Wake-ups", docs/performance.md "Cost of the wake-up triggers").
-- Same notifications as 0005 (pg_notify('xnovu_wakeup', 'new' | 'scheduled') when a commit makes rows sendable
-- PENDING), at a cost linear in the rows a statement touches, and with a switch in the database.
--
-- 1. The UPDATE trigger becomes two row-level triggers `AFTER UPDATE ... FOR EACH ROW WHEN (<transition>)`.
--    0005's statement trigger joined its OLD and NEW transition tables; the planner knows nothing of their sizes
--    and joined them in a nested loop, so a bulk edit was quadratic: a payload edit of 20 000 PENDING rows took
--    63 s instead of 0.24 s, with every row locked meanwhile. A WHEN clause is evaluated on OLD/NEW in the
--    executor without calling the function and without queueing a trigger event, and an UPDATE with no
--    statement trigger needing transition tables captures no copy of its rows at all, so an edit that makes
--    nothing sendable (a payload edit, and every claim and finalize xnovu itself runs) costs two expression
--    evaluations per row. A row that does become sendable calls the function, whose pg_notify is folded with the
--    identical ones of the same transaction: a requeue of many rows still delivers one notification per kind.
--    Measured against the other option, 0005's statement trigger with its join forced off the nested loop
--    (`SET enable_nestloop TO off` on the function), on 100 000 PENDING rows against the same UPDATE with no
--    trigger: a payload edit costs 1.10x with the row triggers and 1.23x with the statement trigger (it still
--    copies every old and new row into the transition tables), an edit that makes every row sendable 1.58x and
--    1.13x (docs/performance.md). The row triggers are chosen: the common case (payload edits, and xnovu's own
--    claims and finalizes, several per notification) pays nothing, and nothing depends on a plan choice.
-- 2. The INSERT trigger stays a statement trigger (one EXISTS over the new rows, stopping at the first match: one
--    notification per statement however many rows it inserts, and linear).
-- 3. notify.xnovu_wakeup_switch: one row, `notify` on by default. Where nobody listens (every worker behind a
--    transaction pooler, or WAKEUP_ENABLED=false), an operator switches the pg_notify off (`xnovu db wakeups off`)
--    and commits that insert rows stop taking Postgres' global notify lock. A table rather than a custom setting
--    (`ALTER DATABASE ... SET xnovu.wakeup_notify`): a setting is read when a session starts, so the pooled,
--    long-lived server connections of pgbouncer/Supavisor and of every producer's pool would keep notifying until
--    they reconnect, and a session could override it; a table is read at each statement, so the switch holds for
--    every session from the commit that changes it on, through any pooler, and it needs no database ownership.
--    SELECT is granted to PUBLIC: producers' roles insert into ent_notification and their triggers read it.
--
-- Live-database safety (xnovu/db/migrate.py): a new small table, CREATE OR REPLACE for functions, and the trigger
-- swap in this same short transaction (under migrate's lock_timeout, retried), so no statement runs between the
-- old update trigger and the new ones. Safe to run twice.

CREATE TABLE IF NOT EXISTS notify.xnovu_wakeup_switch (
  id boolean PRIMARY KEY DEFAULT true CHECK (id),
  notify boolean NOT NULL DEFAULT true,
  changed_at timestamptz NOT NULL DEFAULT now(),
  changed_by text NOT NULL DEFAULT current_user
);
INSERT INTO notify.xnovu_wakeup_switch (id) VALUES (true) ON CONFLICT (id) DO NOTHING;
GRANT SELECT ON notify.xnovu_wakeup_switch TO PUBLIC;

-- On unless switched off (a deleted row counts as on, like a fresh database).
CREATE OR REPLACE FUNCTION notify.xnovu_wakeup_notify_on() RETURNS boolean
LANGUAGE sql STABLE AS $$
  SELECT coalesce((SELECT s.notify FROM notify.xnovu_wakeup_switch s WHERE s.id), true)
$$;

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
  END IF;
  IF EXISTS (SELECT 1 FROM xnovu_new_rows n
             WHERE n.notification_status = 'PENDING' AND n.publish_status = 'PUBLISH'
               AND n.deactivated IS NOT TRUE AND n.scheduled_for > now()) THEN
    PERFORM pg_notify('xnovu_wakeup', 'scheduled');
  END IF;
  RETURN NULL;
END $$;

-- Called only for rows whose WHEN matched; TG_ARGV[0] is the kind. The first such row of a transaction reads the
-- switch and notifies; it leaves a transaction-local mark (set_config(..., true): gone at commit or rollback, and
-- undone with the notification by a rolled-back savepoint), so the other rows of a bulk requeue return at once.
CREATE OR REPLACE FUNCTION notify.xnovu_wakeup_after_update_row() RETURNS trigger
LANGUAGE plpgsql AS $$
DECLARE
  mark text := 'xnovu.wakeup_' || TG_ARGV[0];
BEGIN
  IF current_setting(mark, true) = 'done' THEN
    RETURN NULL;
  END IF;
  PERFORM set_config(mark, 'done', true);
  IF notify.xnovu_wakeup_notify_on() THEN
    PERFORM pg_notify('xnovu_wakeup', TG_ARGV[0]);
  END IF;
  RETURN NULL;
END $$;

-- The transitions are 0005's: into sendable PENDING from anything but PENDING or PROCESSING (a requeue), from
-- unpublished or deactivated (a republish, a reactivation), or with the send time moved. Not PROCESSING -> PENDING:
-- xnovu gave that row back because it must not be sent now, and waking on it would claim it again in a loop.
DROP TRIGGER IF EXISTS xnovu_wakeup_after_update ON notify.ent_notification;
DROP FUNCTION IF EXISTS notify.xnovu_wakeup_after_update();

DROP TRIGGER IF EXISTS xnovu_wakeup_after_update_new ON notify.ent_notification;
CREATE TRIGGER xnovu_wakeup_after_update_new AFTER UPDATE ON notify.ent_notification
  FOR EACH ROW
  WHEN (NEW.notification_status = 'PENDING' AND NEW.publish_status = 'PUBLISH'
        AND NEW.deactivated IS NOT TRUE
        AND (NEW.scheduled_for IS NULL OR NEW.scheduled_for <= now())
        AND (NEW.next_attempt_at IS NULL OR NEW.next_attempt_at <= now())
        AND ((OLD.notification_status IS DISTINCT FROM 'PENDING'
              AND OLD.notification_status IS DISTINCT FROM 'PROCESSING')
             OR OLD.publish_status IS DISTINCT FROM 'PUBLISH' OR OLD.deactivated IS TRUE
             OR OLD.scheduled_for IS DISTINCT FROM NEW.scheduled_for))
  EXECUTE FUNCTION notify.xnovu_wakeup_after_update_row('new');

DROP TRIGGER IF EXISTS xnovu_wakeup_after_update_scheduled ON notify.ent_notification;
CREATE TRIGGER xnovu_wakeup_after_update_scheduled AFTER UPDATE ON notify.ent_notification
  FOR EACH ROW
  WHEN (NEW.notification_status = 'PENDING' AND NEW.publish_status = 'PUBLISH'
        AND NEW.deactivated IS NOT TRUE AND NEW.scheduled_for > now()
        AND ((OLD.notification_status IS DISTINCT FROM 'PENDING'
              AND OLD.notification_status IS DISTINCT FROM 'PROCESSING')
             OR OLD.publish_status IS DISTINCT FROM 'PUBLISH' OR OLD.deactivated IS TRUE
             OR OLD.scheduled_for IS DISTINCT FROM NEW.scheduled_for))
  EXECUTE FUNCTION notify.xnovu_wakeup_after_update_row('scheduled');
