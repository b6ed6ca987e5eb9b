-- Retention (docs/retention.md): what xnovu needs to prune its own records of notifications that ended long ago,
-- in short batches, and to know afterwards what it pruned. Creates only what is missing; nothing here reads a large
-- table or rewrites one (the index the prune walks is built by 0016_retention_index.sql, concurrently).

-- When the delivery ledger of a dead-lettered notification was pruned: `xnovu dlq requeue` refuses such a row unless
-- forced, because the retry reads the ledger to skip the recipients Novu acknowledged, and a pruned ledger would
-- send to them again (I2). Set by the prune in the transaction that deletes the ledger rows, cleared by a forced
-- requeue. Only dead-lettered rows get it: SENT and RETRACTED rows are never sent again. A nullable column without
-- a default: a catalogue change, no table rewrite.
ALTER TABLE notify.ent_notification ADD COLUMN IF NOT EXISTS xnovu_ledger_pruned_at timestamptz;

-- One row: where the ledger pass stopped (the last terminal notification, in (updated_at, id) order, whose ledger is
-- gone), and the lease of the prune running now, so a schedule run and `xnovu db prune` never prune at once. A lease
-- row rather than an advisory lock: a session lock cannot be held behind a transaction pooler, and a transaction held
-- open for a whole run would keep a snapshot that every vacuum of the pruned tables waits for.
CREATE TABLE IF NOT EXISTS notify.xnovu_retention_state (
  id boolean PRIMARY KEY DEFAULT true CHECK (id),
  ledger_after_updated_at timestamptz,
  ledger_after_id bigint,
  run_id bigint,
  heartbeat_at timestamptz
);
INSERT INTO notify.xnovu_retention_state (id) VALUES (true) ON CONFLICT (id) DO NOTHING;

-- One row per prune (the schedule's or the command's): when, what it removed, how (batches), and how it ended.
-- `/status` shows the last one; the prune keeps RETENTION_DAYS of them.
CREATE TABLE IF NOT EXISTS notify.xnovu_prune_run (
  id bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
  source text NOT NULL,
  started_at timestamptz NOT NULL DEFAULT now(),
  finished_at timestamptz,
  cutoff timestamptz NOT NULL,
  notification_cutoff timestamptz,
  deliveries bigint NOT NULL DEFAULT 0,
  rule_fires bigint NOT NULL DEFAULT 0,
  budget_rows bigint NOT NULL DEFAULT 0,
  notifications bigint NOT NULL DEFAULT 0,
  prune_runs bigint NOT NULL DEFAULT 0,
  batches int NOT NULL DEFAULT 0,
  longest_batch_ms int NOT NULL DEFAULT 0,
  error text
);
