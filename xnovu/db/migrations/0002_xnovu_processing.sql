-- What xnovu adds to the schema: attempt/lease/dead-letter columns, the per-recipient delivery ledger,
-- the updated_at trigger and one partial index per claim query. Additive only.
ALTER TABLE notify.ent_notification ADD COLUMN IF NOT EXISTS attempts int NOT NULL DEFAULT 0;
-- FAILED: when the next retry is due. PROCESSING: when the claim's lease expires (I3).
ALTER TABLE notify.ent_notification ADD COLUMN IF NOT EXISTS next_attempt_at timestamptz;
ALTER TABLE notify.ent_notification ADD COLUMN IF NOT EXISTS dead_lettered_at timestamptz;

CREATE TABLE IF NOT EXISTS notify.ent_notification_delivery (
  notification_id bigint NOT NULL REFERENCES notify.ent_notification (id) ON DELETE CASCADE,
  recipient_id uuid NOT NULL,
  status text NOT NULL DEFAULT 'PENDING' CHECK (status IN ('PENDING', 'SENT', 'FAILED')),
  novu_transaction_id text,
  idempotency_key text,
  key_generation int NOT NULL DEFAULT 0,
  attempts int NOT NULL DEFAULT 0,
  last_http_status int,
  last_error text,
  updated_at timestamptz NOT NULL DEFAULT now(),
  PRIMARY KEY (notification_id, recipient_id)
);

CREATE OR REPLACE FUNCTION notify.xnovu_touch_updated_at() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
  NEW.updated_at := now();
  RETURN NEW;
END $$;

DROP TRIGGER IF EXISTS xnovu_touch_updated_at ON notify.ent_notification;
CREATE TRIGGER xnovu_touch_updated_at BEFORE UPDATE ON notify.ent_notification
  FOR EACH ROW EXECUTE FUNCTION notify.xnovu_touch_updated_at();

-- claim_new: due, published PENDING rows, oldest first.
CREATE INDEX IF NOT EXISTS ent_notification_xnovu_new_idx ON notify.ent_notification (updated_at, id)
  WHERE notification_status = 'PENDING' AND publish_status = 'PUBLISH' AND deactivated IS NOT TRUE;
-- claim_scheduled: PENDING rows with a send time.
CREATE INDEX IF NOT EXISTS ent_notification_xnovu_scheduled_idx ON notify.ent_notification (scheduled_for, id)
  WHERE notification_status = 'PENDING' AND scheduled_for IS NOT NULL;
-- claim_failed: retries due and expired PROCESSING leases.
CREATE INDEX IF NOT EXISTS ent_notification_xnovu_retry_idx ON notify.ent_notification (next_attempt_at, id)
  WHERE notification_status IN ('FAILED', 'PROCESSING') AND dead_lettered_at IS NULL;
-- dlq list
CREATE INDEX IF NOT EXISTS ent_notification_xnovu_dlq_idx ON notify.ent_notification (dead_lettered_at)
  WHERE dead_lettered_at IS NOT NULL;
