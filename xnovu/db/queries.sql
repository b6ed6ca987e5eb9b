-- Every SQL statement xnovu runs, as named blocks ("-- name: NAME"), loaded once by xnovu.db.queries.
-- Parameters are positional ($1 …); nothing here is ever built with string formatting.

-- name: migrations_table
CREATE TABLE IF NOT EXISTS notify.xnovu_schema_migrations (
  version text PRIMARY KEY,
  applied_at timestamptz NOT NULL DEFAULT now()
);

-- name: migrations_lock
-- Held for one migration transaction: a transaction-level lock, because a session-level one cannot be held across
-- statements behind a transaction pooler (pgbouncer hands each transaction to any server connection).
SELECT pg_advisory_xact_lock(7426913580021);

-- name: migrations_run_try_lock
-- Serialises whole `migrate` runs (several replicas starting at once). Taken in a transaction that a second
-- connection keeps open for the run: behind a transaction pooler that pins one server connection, where a
-- session-level lock could not be held. Tried, never waited for: a statement waiting for a lock holds a snapshot,
-- and CREATE INDEX CONCURRENTLY waits for every older snapshot, so a waiting run would stall the running one.
SELECT pg_try_advisory_xact_lock(7426913580022);

-- name: migrations_close_portal
-- Run (simple protocol) right after the lock was taken: the extended-protocol portal of the try keeps its snapshot,
-- hence an xmin, until the next command, and CREATE INDEX CONCURRENTLY would wait for that transaction forever.
SELECT 1;

-- name: migrations_session_try_lock
-- The same, for a run on a single direct connection (the embedded dev database, tests): a session-level lock.
SELECT pg_try_advisory_lock(7426913580022);

-- name: migrations_session_unlock
SELECT pg_advisory_unlock(7426913580022);

-- name: migrations_lock_timeout
-- DDL waiting for a lock queues every later insert behind it; give up after $1 (e.g. '250ms') and retry instead.
SELECT set_config('lock_timeout', $1, true);

-- name: migrations_index_state
-- An index of a no-transaction migration: does it exist, is it valid, is some session building it right now?
SELECT i.indisvalid AS valid,
       EXISTS (SELECT 1 FROM pg_stat_progress_create_index p
               WHERE p.index_relid = i.indexrelid AND p.pid <> pg_backend_pid()) AS building
FROM pg_index i JOIN pg_class c ON c.oid = i.indexrelid JOIN pg_namespace n ON n.oid = c.relnamespace
WHERE n.nspname = $1 AND c.relname = $2;

-- name: migrations_drop_invalid_index
-- The statement that drops an index an interrupted concurrent build left INVALID (identifiers quoted by Postgres).
SELECT format('DROP INDEX CONCURRENTLY IF EXISTS %I.%I', $1::text, $2::text);

-- name: migrations_applied
SELECT version FROM notify.xnovu_schema_migrations ORDER BY version;

-- name: migrations_record
INSERT INTO notify.xnovu_schema_migrations (version) VALUES ($1) ON CONFLICT DO NOTHING;

-- name: schema_check
SELECT
  to_regclass('notify.ent_notification') IS NOT NULL AS notifications,
  to_regclass('notify.ent_notification_workflow') IS NOT NULL AS workflows,
  to_regclass('notify.ent_notification_delivery') IS NOT NULL AS deliveries,
  to_regclass('notify.xnovu_schema_migrations') IS NOT NULL AS migrations;

-- name: claim_new
-- Due, published PENDING rows, oldest first; the claim is the compare-and-set PENDING -> PROCESSING (I4),
-- and next_attempt_at becomes the lease after which the failed poll recovers the row (I3).
WITH picked AS (
  SELECT n.id FROM notify.ent_notification n
  WHERE n.notification_status = 'PENDING' AND n.publish_status = 'PUBLISH' AND n.deactivated IS NOT TRUE
    AND (n.scheduled_for IS NULL OR n.scheduled_for <= now())
    AND (n.next_attempt_at IS NULL OR n.next_attempt_at <= now())
    AND ($2::uuid IS NULL OR n.enterprise_id = $2::uuid)
  ORDER BY n.updated_at, n.id
  LIMIT $1
  FOR UPDATE OF n SKIP LOCKED
)
UPDATE notify.ent_notification n
SET notification_status = 'PROCESSING', attempts = n.attempts + 1,
    next_attempt_at = now() + make_interval(secs => $3::float8 / 1000)
FROM picked WHERE n.id = picked.id
RETURNING n.id, n.attempts, n.scheduled_for, n.name, n.enterprise_id::text AS enterprise_id,
  (SELECT w.workflow_key FROM notify.ent_notification_workflow w WHERE w.id = n.notification_workflow_id)
    AS workflow_key;

-- name: claim_scheduled
-- PENDING rows whose send time falls within the look-ahead window; the child waits on a durable timer.
WITH picked AS (
  SELECT n.id FROM notify.ent_notification n
  WHERE n.notification_status = 'PENDING' AND n.scheduled_for IS NOT NULL
    AND n.scheduled_for <= now() + make_interval(secs => $4::float8 / 1000)
    AND n.publish_status = 'PUBLISH' AND n.deactivated IS NOT TRUE
    AND (n.next_attempt_at IS NULL OR n.next_attempt_at <= now())
    AND ($2::uuid IS NULL OR n.enterprise_id = $2::uuid)
  ORDER BY n.scheduled_for, n.id
  LIMIT $1
  FOR UPDATE OF n SKIP LOCKED
)
UPDATE notify.ent_notification n
SET notification_status = 'PROCESSING', attempts = n.attempts + 1,
    next_attempt_at = greatest(now(), n.scheduled_for) + make_interval(secs => $3::float8 / 1000)
FROM picked WHERE n.id = picked.id
RETURNING n.id, n.attempts, n.scheduled_for, n.name, n.enterprise_id::text AS enterprise_id,
  (SELECT w.workflow_key FROM notify.ent_notification_workflow w WHERE w.id = n.notification_workflow_id)
    AS workflow_key;

-- name: claim_failed
-- Retries that are due (published, not dead-lettered) and PROCESSING rows whose lease expired (I3).
WITH picked AS (
  SELECT n.id FROM notify.ent_notification n
  WHERE n.notification_status IN ('FAILED', 'PROCESSING') AND n.dead_lettered_at IS NULL
    AND n.next_attempt_at <= now()
    AND (n.notification_status = 'PROCESSING'
         OR (n.publish_status = 'PUBLISH' AND n.deactivated IS NOT TRUE))
    AND ($2::uuid IS NULL OR n.enterprise_id = $2::uuid)
  ORDER BY n.next_attempt_at, n.id
  LIMIT $1
  FOR UPDATE OF n SKIP LOCKED
)
UPDATE notify.ent_notification n
SET notification_status = 'PROCESSING', attempts = n.attempts + 1,
    next_attempt_at = greatest(now(), coalesce(n.scheduled_for, now())) + make_interval(secs => $3::float8 / 1000)
FROM picked WHERE n.id = picked.id
RETURNING n.id, n.attempts, n.scheduled_for, n.name, n.enterprise_id::text AS enterprise_id,
  (SELECT w.workflow_key FROM notify.ent_notification_workflow w WHERE w.id = n.notification_workflow_id)
    AS workflow_key;

-- name: load_notification
SELECT n.id, n.name, n.publish_status::text AS publish_status, n.deactivated,
  n.notification_status::text AS status, n.payload, n.recipients::text[] AS recipients, n.overrides,
  n.scheduled_for, n.attempts, n.next_attempt_at, n.dead_lettered_at, n.enterprise_id::text AS enterprise_id,
  n.retraction_reason, n.error_details,
  w.workflow_key, w.publish_status::text AS workflow_publish_status, w.deactivated AS workflow_deactivated,
  w.default_channels::text[] AS default_channels
FROM notify.ent_notification n
LEFT JOIN notify.ent_notification_workflow w ON w.id = n.notification_workflow_id
WHERE n.id = $1;

-- name: acquire
-- Idempotent claim for attempt $2 (the one attempt that notification-{id}-a{$2} may make): takes a PENDING/FAILED
-- row at attempts $2-1, or confirms (and extends the lease of) a row the poll already claimed for $2.
-- The I1 conditions are part of the compare-and-set so a row unpublished or retracted meanwhile is not taken.
UPDATE notify.ent_notification n
SET notification_status = 'PROCESSING', attempts = $2,
    next_attempt_at = greatest(now(), coalesce(n.scheduled_for, now())) + make_interval(secs => $3::float8 / 1000)
WHERE n.id = $1
  AND n.publish_status = 'PUBLISH' AND n.deactivated IS NOT TRUE
  AND (n.scheduled_for IS NULL OR n.scheduled_for <= now() + interval '2 seconds')
  AND ((n.notification_status = 'PROCESSING' AND n.attempts = $2)
       OR (n.notification_status IN ('PENDING', 'FAILED') AND n.attempts = $2 - 1 AND n.dead_lettered_at IS NULL))
RETURNING n.id;

-- name: acquire_next
-- Claim for a manual trigger that did not pick an attempt number: the next one.
UPDATE notify.ent_notification n
SET notification_status = 'PROCESSING', attempts = n.attempts + 1,
    next_attempt_at = now() + make_interval(secs => $2::float8 / 1000)
WHERE n.id = $1
  AND n.publish_status = 'PUBLISH' AND n.deactivated IS NOT TRUE
  AND (n.scheduled_for IS NULL OR n.scheduled_for <= now() + interval '2 seconds')
  AND n.notification_status IN ('PENDING', 'FAILED') AND n.dead_lettered_at IS NULL
RETURNING n.attempts;

-- name: ensure_deliveries
INSERT INTO notify.ent_notification_delivery (notification_id, recipient_id)
SELECT $1, r FROM unnest($2::uuid[]) AS r
ON CONFLICT DO NOTHING;

-- name: list_deliveries
SELECT recipient_id::text AS recipient_id, status, key_generation, novu_transaction_id, last_error
FROM notify.ent_notification_delivery WHERE notification_id = $1;

-- name: record_outcomes
-- One statement for a whole batch of recipients; an acknowledged recipient is never downgraded (I2).
UPDATE notify.ent_notification_delivery d
SET status = u.status, novu_transaction_id = coalesce(u.novu_transaction_id, d.novu_transaction_id),
    idempotency_key = u.idempotency_key, key_generation = u.key_generation, attempts = d.attempts + 1,
    last_http_status = u.http_status, last_error = u.error, updated_at = now()
FROM unnest($2::uuid[], $3::text[], $4::text[], $5::text[], $6::int[], $7::int[], $8::text[])
  AS u(recipient_id, status, novu_transaction_id, idempotency_key, key_generation, http_status, error)
WHERE d.notification_id = $1 AND d.recipient_id = u.recipient_id AND d.status <> 'SENT';

-- name: finalize
-- Ends attempt $2; only the attempt that holds the claim may finalize it.
UPDATE notify.ent_notification n
SET notification_status = $3::text::shared_types.notification_status, processed_at = now(),
    channels = coalesce((SELECT w.default_channels FROM notify.ent_notification_workflow w
                         WHERE w.id = n.notification_workflow_id), n.channels),
    error_details = $4::jsonb, next_attempt_at = $5,
    dead_lettered_at = CASE WHEN $6::bool THEN now() ELSE NULL END
WHERE n.id = $1 AND n.attempts = $2 AND n.notification_status = 'PROCESSING'
RETURNING n.id;

-- name: release
-- Gives back a claimed row that must not be sent now (unpublished or deactivated meanwhile): PENDING again, so it
-- is sent if it is published again.
UPDATE notify.ent_notification n
SET notification_status = 'PENDING', next_attempt_at = NULL, error_details = $3::jsonb
WHERE n.id = $1 AND n.attempts = $2 AND n.notification_status = 'PROCESSING'
RETURNING n.id;

-- name: retract
UPDATE notify.ent_notification
SET notification_status = 'RETRACTED', retracted_at = now(), retraction_reason = $2, next_attempt_at = NULL
WHERE id = $1 AND notification_status IN ('PENDING', 'PROCESSING', 'FAILED')
RETURNING id;

-- name: dlq_list
SELECT id, name, attempts, dead_lettered_at, error_details ->> 'error' AS error
FROM notify.ent_notification
WHERE dead_lettered_at IS NOT NULL AND notification_status = 'FAILED'
ORDER BY dead_lettered_at, id
LIMIT $1;

-- name: dlq_requeue
-- Back to PENDING with fresh attempts; the delivery ledger stays, so acknowledged recipients are not re-sent.
UPDATE notify.ent_notification
SET notification_status = 'PENDING', attempts = 0, dead_lettered_at = NULL, next_attempt_at = NULL
WHERE id = ANY($1::bigint[]) AND dead_lettered_at IS NOT NULL AND notification_status = 'FAILED'
RETURNING id;

-- name: status_counts
SELECT notification_status::text AS status, count(*) AS n FROM notify.ent_notification GROUP BY 1;

-- name: dead_letter_count
SELECT count(*) FROM notify.ent_notification WHERE dead_lettered_at IS NOT NULL AND notification_status = 'FAILED';

-- name: ping
SELECT 1;

-- name: upsert_workflow
-- Used by `xnovu dev --demo` and the benchmark to create a published Novu workflow row.
INSERT INTO notify.ent_notification_workflow (name, workflow_key, default_channels, publish_status, enterprise_id)
VALUES ($1, $2, $3::text[]::shared_types.notification_channel_type[], 'PUBLISH', $4::uuid)
ON CONFLICT (workflow_key) DO UPDATE SET publish_status = 'PUBLISH', deactivated = false
RETURNING id;

-- name: insert_notifications
-- Many notifications in one statement (demo and benchmark): one row per element of the arrays.
INSERT INTO notify.ent_notification
  (name, publish_status, notification_workflow_id, payload, recipients, scheduled_for, enterprise_id)
SELECT u.name, u.publish_status::shared_types.publish_status, $1, u.payload::jsonb,
       string_to_array(u.recipients, ',')::uuid[], u.scheduled_for, $7::uuid
FROM unnest($2::text[], $3::text[], $4::text[], $5::text[], $6::timestamptz[])
  AS u(name, publish_status, payload, recipients, scheduled_for)
RETURNING id;

-- name: notification_states
SELECT id, name, notification_status::text AS status, attempts, processed_at, error_details ->> 'error' AS error
FROM notify.ent_notification WHERE id = ANY($1::bigint[]) ORDER BY id;

-- name: budget_init
INSERT INTO notify.xnovu_rate_budget (name, tokens, updated_at) VALUES ($1, $2::float8, clock_timestamp())
ON CONFLICT (name) DO NOTHING;

-- name: budget_take
-- Refill by elapsed time (rate $2, capacity $3), then grant up to $4 tokens; one row lock, one round trip.
WITH cur AS (
  SELECT LEAST($3::float8, b.tokens + EXTRACT(EPOCH FROM clock_timestamp() - b.updated_at) * $2::float8) AS avail
  FROM notify.xnovu_rate_budget b WHERE b.name = $1
  FOR UPDATE
)
UPDATE notify.xnovu_rate_budget b
SET tokens = cur.avail - GREATEST(0, LEAST(cur.avail, $4::float8)), updated_at = clock_timestamp()
FROM cur WHERE b.name = $1
RETURNING GREATEST(0, LEAST(cur.avail, $4::float8)) AS granted, cur.avail AS available;

-- name: budget_penalize
-- Novu answered 429: every worker waits out Retry-After ($3 s at rate $2) before the next token.
UPDATE notify.xnovu_rate_budget
SET tokens = LEAST(tokens, -$2::float8 * $3::float8), updated_at = clock_timestamp()
WHERE name = $1;
