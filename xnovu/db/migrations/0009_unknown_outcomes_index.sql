-- xnovu:no-transaction
-- The recipients of a notification whose outcome is unknown (0009_unknown_outcomes.sql), found without reading the
-- rest of its ledger: every acquire looks them up in its window, and a 100 000-recipient notification's window holds
-- 10 000 ledger rows of which at most a few hundred are ever on the wire at once (docs/performance.md "Costs that
-- do not grow with the table"). Built concurrently, outside a transaction, like 0004_claim_indexes.sql.
CREATE INDEX CONCURRENTLY IF NOT EXISTS ent_notification_delivery_unknown_idx
  ON notify.ent_notification_delivery (notification_id, recipient_id)
  WHERE unknown_since IS NOT NULL AND status <> 'SENT';
