-- Notification rules (README "Rules"): the original schema's notify.ent_notification_rule, the link from a
-- notification to the rule that made it, and two small tables xnovu owns: one row per fire (the dedup key that
-- makes a fire insert exactly one notification) and the outcome of the last sync per rule.
-- Creates only what is missing; nothing here rewrites a table, reads a large one or touches existing rows.

DO $$ BEGIN
  CREATE TYPE shared_types.notification_trigger_type AS ENUM ('EVENT', 'SCHEDULE', 'CRON');
EXCEPTION WHEN duplicate_object THEN NULL; END $$;

CREATE TABLE IF NOT EXISTS notify.ent_notification_rule (
  id bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
  name text NOT NULL,
  description text,
  publish_status shared_types.publish_status NOT NULL DEFAULT 'DRAFT',
  deactivated boolean NOT NULL DEFAULT false,
  notification_workflow_id bigint NOT NULL
    REFERENCES notify.ent_notification_workflow (id) ON DELETE CASCADE,
  business_id uuid,
  trigger_type shared_types.notification_trigger_type NOT NULL DEFAULT 'EVENT',
  trigger_config jsonb,
  rule_payload jsonb,
  enterprise_id uuid,
  created_at timestamptz NOT NULL DEFAULT now(),
  updated_at timestamptz NOT NULL DEFAULT now(),
  UNIQUE (name, enterprise_id)
);

-- Nullable columns without a default: a catalog change, no table rewrite.
ALTER TABLE notify.ent_notification ADD COLUMN IF NOT EXISTS notification_rule_id bigint;
ALTER TABLE notify.ent_notification ADD COLUMN IF NOT EXISTS business_id uuid;

-- The foreign key, unless the existing schema already has one. Added NOT VALID: a catalogue change that holds its
-- SHARE ROW EXCLUSIVE lock (which inserts wait for) only until this short transaction commits. It is validated, and
-- the column's index built, by 0006_rules_index.sql, outside this transaction: both read the whole table, and in here
-- they would keep every insert waiting for as long (README, Operations: "What `xnovu db migrate` does on a live
-- database"; docs/design.md "Migrations"). Databases that applied an earlier 0006 validated and indexed it there.
DO $$ BEGIN
  IF NOT EXISTS (
    SELECT 1 FROM pg_constraint
    WHERE conrelid = 'notify.ent_notification'::regclass AND contype = 'f'
      AND confrelid = 'notify.ent_notification_rule'::regclass
  ) THEN
    ALTER TABLE notify.ent_notification
      ADD CONSTRAINT ent_notification_notification_rule_id_fkey FOREIGN KEY (notification_rule_id)
      REFERENCES notify.ent_notification_rule (id) ON DELETE SET NULL NOT VALID;
  END IF;
END $$;

-- One row per (rule, scheduled time): inserted in the same transaction as the notification, so a retried
-- activity, a second worker or a manual trigger for the same time finds the row and inserts nothing.
CREATE TABLE IF NOT EXISTS notify.xnovu_rule_fire (
  rule_id bigint NOT NULL REFERENCES notify.ent_notification_rule (id) ON DELETE CASCADE,
  scheduled_time timestamptz NOT NULL,
  notification_id bigint REFERENCES notify.ent_notification (id) ON DELETE SET NULL,
  fired_at timestamptz NOT NULL DEFAULT now(),
  PRIMARY KEY (rule_id, scheduled_time)
);

-- What the last sync did per rule (schedule state and the problem, if any). No foreign key on purpose: a row that
-- outlives its rule tells the next sync which Schedule to delete even before Temporal's list shows it.
CREATE TABLE IF NOT EXISTS notify.xnovu_rule_sync (
  rule_id bigint PRIMARY KEY,
  schedule_state text NOT NULL,
  problem text,
  synced_at timestamptz NOT NULL DEFAULT now()
);
