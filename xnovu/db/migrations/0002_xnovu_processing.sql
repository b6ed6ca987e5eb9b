-- What xnovu adds to the schema: attempt/lease/dead-letter columns, the per-recipient delivery ledger,
-- the updated_at trigger. Additive only, and no table rewrite: added columns have constant defaults.
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

-- The claim indexes are built by 0004_claim_indexes.sql, concurrently and outside a transaction, so a large
-- ent_notification keeps taking inserts meanwhile (databases that applied an earlier 0002 keep the indexes it built).
