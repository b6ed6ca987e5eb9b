-- Every SQL statement xnovu runs, as named blocks ("-- name: NAME"), loaded once by xnovu.db.queries.
-- Parameters are positional ($1 …); nothing here is ever built with string formatting.
--
-- Advisory lock keys: every key xnovu takes, one purpose each (docs/design.md, "Advisory locks", has the same
-- table; tests/unit/test_advisory_keys.py keeps the two and the queries below in step). Two purposes never share a
-- key: when claims shared the migrate run's key, every claim waited for the whole `xnovu db migrate`, and each
-- waiting claim held a snapshot that the run's CREATE INDEX CONCURRENTLY then waited for (I7, docs/design.md).
--   advisory-key 7426913580021  migrations_lock            one migration's transaction (xact lock)
--   advisory-key 7426913580022  claim_lock                 claims of every kind take turns (xact lock)
--   advisory-key 7426913580023  migrations_run_try_lock,   a whole `migrate` run (xact lock on a second connection,
--                               migrations_session_*       or session lock on a single direct connection)
-- The claim keeps the key it always had, so old and new workers still take turns during a rolling upgrade; the
-- run lock moved to a key of its own.

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
SELECT pg_try_advisory_xact_lock(7426913580023);

-- name: migrations_close_portal
-- Run (simple protocol) right after the lock was taken: the extended-protocol portal of the try keeps its snapshot,
-- hence an xmin, until the next command, and CREATE INDEX CONCURRENTLY would wait for that transaction forever.
SELECT 1;

-- name: migrations_session_try_lock
-- The same, for a run on a single direct connection (the embedded dev database, tests): a session-level lock.
SELECT pg_try_advisory_lock(7426913580023);

-- name: migrations_session_unlock
SELECT pg_advisory_unlock(7426913580023);

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
  to_regclass('notify.xnovu_rule_fire') IS NOT NULL AS rules,
  to_regclass('notify.xnovu_schema_migrations') IS NOT NULL AS migrations;

-- name: claim_lock
-- Claims of every kind take turns (a transaction-scoped lock), so the in-flight bound below holds across
-- concurrent polls and workers. A key of its own (see the top of this file): a migrate run never makes a claim wait.
-- A claim is a few statements back to back: a session that goes quiet inside one (its worker stopped, its event
-- loop stalled) is ended by Postgres after 5 s, which releases the lock, instead of holding up every claim of every
-- worker for as long as it stays frozen (I7). Set in the same statement: no extra round trip, and
-- transaction-local, so it works behind a transaction pooler.
SELECT set_config('idle_in_transaction_session_timeout', '5s', true), pg_advisory_xact_lock(7426913580022);

-- name: in_flight
-- What live attempts have claimed and not finished: rows, and the Novu tokens their recipients will cost (a bulk
-- request of 100 recipients costs 100 tokens, a single 1, so about one token per recipient). Only attempts that
-- can be using the budget count (I7, docs/design.md "Back-pressure"): a claim whose lease ran out is dead or
-- stalled until the failed poll says otherwise (it renews a live attempt's lease and recovers a dead one, which
-- must not count twice: once in flight and once as its own candidate), and a legacy row without a lease counts only
-- while it is fresh ($1 ms). A scheduled row claimed ahead and waiting on its timer does count: it sends the moment
-- its time comes, and without it the scheduled poll would claim a whole campaign ahead, past every bound.
-- `rerun`: rows an earlier run of this same claim ($2, the poll run and its activity) already claimed.
SELECT count(*) FILTER (WHERE live) AS rows,
       coalesce(sum(coalesce(xnovu_claim_tokens, greatest(cardinality(recipients), 1))) FILTER (WHERE live), 0)::bigint
         AS tokens,
       count(*) FILTER (WHERE xnovu_claim_key = $2) AS rerun
FROM (
  SELECT n.recipients, n.xnovu_claim_key, n.xnovu_claim_tokens,
    (n.next_attempt_at > now()
     OR (n.next_attempt_at IS NULL AND n.updated_at > now() - make_interval(secs => $1::float8 / 1000))) AS live
  FROM notify.ent_notification n
  WHERE n.notification_status = 'PROCESSING'
) p;

-- name: claim_flight
-- What a claim needs of in_flight (above, same rules of what is live), by group (docs/priority.md "Claims"): live
-- rows and the tokens they still count, each row at most $3 (half the token window: a big notification never
-- holds the whole window), per (urgency, enterprise, retry lane: a row at its second attempt or later); and `rerun`.
-- One pass over the PROCESSING rows, which the in-flight bound keeps few (the same index as in_flight).
-- `fleet_slots`: the workflow task slots of the workers seen on the claim's namespace $4 and task queue $5 within the
-- last $6 ms, by the database's clock (notify.xnovu_worker, migration 0017; 0 with $4 NULL): the rows window of each
-- class is a few rows per slot of the fleet (ClaimLimits.for_fleet). The table holds a row per live worker and the
-- dead ones of the last minutes (fleet_beat prunes them): a scan of a few rows.
WITH p AS (
  SELECT n.xnovu_priority AS level, n.enterprise_id::text AS enterprise, n.attempts > 1 AS retry, n.xnovu_claim_key,
    least(coalesce(n.xnovu_claim_tokens, greatest(cardinality(n.recipients), 1)), $3::int) AS tokens,
    (n.next_attempt_at > now()
     OR (n.next_attempt_at IS NULL AND n.updated_at > now() - make_interval(secs => $1::float8 / 1000))) AS live
  FROM notify.ent_notification n
  WHERE n.notification_status = 'PROCESSING'
)
SELECT (SELECT count(*) FROM p WHERE p.xnovu_claim_key = $2) AS rerun,
  (SELECT coalesce(json_agg(g), '[]'::json) FROM (
     SELECT p.level, p.enterprise, p.retry, count(*) AS rows, sum(p.tokens)::bigint AS tokens
     FROM p WHERE p.live GROUP BY 1, 2, 3) g) AS groups,
  (SELECT coalesce(sum(f.workflow_slots), 0) FROM notify.xnovu_worker f
   WHERE f.namespace = $4 AND f.task_queue = $5
     AND f.seen_at > now() - make_interval(secs => $6::float8 / 1000))::int AS fleet_slots;

-- name: claimed_with_key
-- The rows an earlier run of the same claim made PROCESSING (see in_flight's `rerun`), as claim_rows returns them.
SELECT n.id, n.attempts, n.scheduled_for, left(n.name, 200) AS name, n.enterprise_id::text AS enterprise_id,
  (SELECT w.workflow_key FROM notify.ent_notification_workflow w WHERE w.id = n.notification_workflow_id)
    AS workflow_key, n.xnovu_priority AS priority
FROM notify.ent_notification n
WHERE n.notification_status = 'PROCESSING' AND n.xnovu_claim_key = $1;

-- name: candidates_new
-- Due, published PENDING rows, oldest first: unscheduled ones by age and scheduled ones whose time has come, each
-- through its own partial index so rows scheduled weeks ahead or unpublished are never visited. Rows whose Novu
-- workflow is DRAFT/NONE or deactivated are held back (not claimed) until it is published again; once the hold sweep
-- marked them (held_at) they are out of the index too, so a claim does not re-read them (docs/design.md "Held rows").
WITH unscheduled AS (
  SELECT n.id, n.updated_at AS due, greatest(cardinality(n.recipients), 1) AS tokens, n.xnovu_priority AS level,
    n.enterprise_id::text AS enterprise, n.attempts
  FROM notify.ent_notification n
  WHERE n.notification_status = 'PENDING' AND n.publish_status = 'PUBLISH' AND n.deactivated IS NOT TRUE
    AND n.scheduled_for IS NULL AND n.held_at IS NULL
    AND (n.next_attempt_at IS NULL OR n.next_attempt_at <= now())
    AND ($2::uuid IS NULL OR n.enterprise_id = $2::uuid)
    AND NOT EXISTS (SELECT 1 FROM notify.ent_notification_workflow w WHERE w.id = n.notification_workflow_id
                    AND (w.deactivated IS TRUE OR w.publish_status IN ('DRAFT', 'NONE')))
  ORDER BY n.updated_at, n.id
  LIMIT $1
  FOR UPDATE OF n SKIP LOCKED
), scheduled AS (
  SELECT n.id, n.scheduled_for AS due, greatest(cardinality(n.recipients), 1) AS tokens, n.xnovu_priority AS level,
    n.enterprise_id::text AS enterprise, n.attempts
  FROM notify.ent_notification n
  WHERE n.notification_status = 'PENDING' AND n.publish_status = 'PUBLISH' AND n.deactivated IS NOT TRUE
    AND n.scheduled_for IS NOT NULL AND n.scheduled_for <= now() AND n.held_at IS NULL
    AND (n.next_attempt_at IS NULL OR n.next_attempt_at <= now())
    AND ($2::uuid IS NULL OR n.enterprise_id = $2::uuid)
    AND NOT EXISTS (SELECT 1 FROM notify.ent_notification_workflow w WHERE w.id = n.notification_workflow_id
                    AND (w.deactivated IS TRUE OR w.publish_status IN ('DRAFT', 'NONE')))
  ORDER BY n.scheduled_for, n.id
  LIMIT $1
  FOR UPDATE OF n SKIP LOCKED
)
SELECT c.id, c.tokens, c.level, c.enterprise, c.due, c.attempts
FROM (SELECT * FROM unscheduled UNION ALL SELECT * FROM scheduled) c
ORDER BY c.due, c.id
LIMIT $1;

-- name: candidates_scheduled
-- PENDING rows whose send time falls within the look-ahead window ($3 ms); their children wait on durable timers.
SELECT n.id, greatest(cardinality(n.recipients), 1) AS tokens, n.xnovu_priority AS level,
  n.enterprise_id::text AS enterprise, n.scheduled_for AS due, n.attempts
FROM notify.ent_notification n
WHERE n.notification_status = 'PENDING' AND n.publish_status = 'PUBLISH' AND n.deactivated IS NOT TRUE
  AND n.scheduled_for IS NOT NULL AND n.held_at IS NULL
  AND n.scheduled_for <= now() + make_interval(secs => $3::float8 / 1000)
  AND (n.next_attempt_at IS NULL OR n.next_attempt_at <= now())
  AND ($2::uuid IS NULL OR n.enterprise_id = $2::uuid)
  AND NOT EXISTS (SELECT 1 FROM notify.ent_notification_workflow w WHERE w.id = n.notification_workflow_id
                  AND (w.deactivated IS TRUE OR w.publish_status IN ('DRAFT', 'NONE')))
ORDER BY n.scheduled_for, n.id
LIMIT $1
FOR UPDATE OF n SKIP LOCKED;

-- name: candidates_failed
-- Retries that are due, and the PROCESSING rows $4 whose lease expired and whose attempt's workflow Temporal says
-- is gone (checked by the claim activity just before; a live attempt's lease was extended instead). A FAILED row
-- without next_attempt_at was left by the original TypeScript worker and is due now (a legacy PROCESSING row comes
-- through $4 once it has not moved for a lease, $3 ms). Legacy rows first, then due rows by next_attempt_at.
-- Retries: two scans of the retry index of 0014, each in the index's own order and bounded by its index condition,
-- so rows whose retry is hours ahead are never read, nor the retries of a held workflow once the hold sweep marked
-- them (docs/design.md "Held rows"; the workflow is checked all the same). Dead attempts: by primary key, at most
-- one batch of them ($4). Nothing is sorted but the rows found.
WITH legacy AS (
  SELECT n.id, 0 AS part, NULL::timestamptz AS due, greatest(cardinality(n.recipients), 1) AS tokens,
    n.xnovu_priority AS level, n.enterprise_id::text AS enterprise, n.attempts
  FROM notify.ent_notification n
  WHERE n.notification_status = 'FAILED' AND n.dead_lettered_at IS NULL AND n.publish_status = 'PUBLISH'
    AND n.deactivated IS NOT TRUE AND n.held_at IS NULL AND n.next_attempt_at IS NULL
    AND ($2::uuid IS NULL OR n.enterprise_id = $2::uuid)
    AND NOT EXISTS (SELECT 1 FROM notify.ent_notification_workflow w WHERE w.id = n.notification_workflow_id
                    AND (w.deactivated IS TRUE OR w.publish_status IN ('DRAFT', 'NONE')))
  ORDER BY n.next_attempt_at, n.id
  LIMIT $1
  FOR UPDATE OF n SKIP LOCKED
), due AS (
  SELECT n.id, 1 AS part, n.next_attempt_at AS due, greatest(cardinality(n.recipients), 1) AS tokens,
    n.xnovu_priority AS level, n.enterprise_id::text AS enterprise, n.attempts
  FROM notify.ent_notification n
  WHERE n.notification_status = 'FAILED' AND n.dead_lettered_at IS NULL AND n.publish_status = 'PUBLISH'
    AND n.deactivated IS NOT TRUE AND n.held_at IS NULL AND n.next_attempt_at <= now()
    AND ($2::uuid IS NULL OR n.enterprise_id = $2::uuid)
    AND NOT EXISTS (SELECT 1 FROM notify.ent_notification_workflow w WHERE w.id = n.notification_workflow_id
                    AND (w.deactivated IS TRUE OR w.publish_status IN ('DRAFT', 'NONE')))
  ORDER BY n.next_attempt_at, n.id
  LIMIT $1
  FOR UPDATE OF n SKIP LOCKED
), recover AS (
  SELECT n.id, CASE WHEN n.next_attempt_at IS NULL THEN 0 ELSE 1 END AS part, n.next_attempt_at AS due,
    greatest(cardinality(n.recipients), 1) AS tokens, n.xnovu_priority AS level, n.enterprise_id::text AS enterprise,
    n.attempts
  FROM notify.ent_notification n
  WHERE n.id = ANY($4::bigint[]) AND n.notification_status = 'PROCESSING' AND n.dead_lettered_at IS NULL
    AND (n.next_attempt_at <= now()
         OR (n.next_attempt_at IS NULL AND n.updated_at <= now() - make_interval(secs => $3::float8 / 1000)))
    AND ($2::uuid IS NULL OR n.enterprise_id = $2::uuid)
  FOR UPDATE OF n SKIP LOCKED
)
SELECT c.id, c.tokens, c.level, c.enterprise, c.due, c.attempts
FROM (SELECT * FROM legacy UNION ALL SELECT * FROM due UNION ALL SELECT * FROM recover) c
ORDER BY c.part, c.due, c.id
LIMIT $1;

-- name: heads_new
-- The heads of the (urgency, enterprise) groups a claim considers beside the oldest due rows (candidates_*, same
-- kind; docs/priority.md "Claims"), $1 a batch. Each walk w (CTEs wlv, wlevels, wew) reads:
-- - wlv, wlevels: the urgencies with something due, from the highest down, $5 at most. One index probe finds the
--   next urgency, one more says whether it has anything due: above normal through 0013's index (its earliest due
--   row), for the enterprise $2 (POLL_ENTERPRISE_ID) through 0012's (that enterprise's earliest); at or below
--   normal an urgency counts as soon as a row has it. At most 4 x $5 urgencies are probed.
-- - wew: at each urgency, the enterprises from where its walk stopped last time ($3, jsonb: walk -> urgency ->
--   enterprise), a bounded skip scan of 0012's index: one probe gives an enterprise and its earliest due time, so an
--   enterprise with nothing due (retries backing off, reminders next week) costs a probe and no read. At most $4
--   with something due, at most 2 x $4 probed; the one probed after them is where the walk goes on next time, past
--   every enterprise probed, due or not.
-- - the first due rows of each enterprise with something due, one index range each, $1 shared among the groups of
--   the urgency; rows without an enterprise are one more group per urgency;
-- - the urgent read: the oldest due rows of the urgencies above normal, highest first, $1 at most, one index range
--   per urgency (0013's indexes), so the most urgent due rows are considered wherever the walks stand;
-- - last, one row per urgency walked, without id: `walk`, `level`, and in `enterprise` where that walk goes on
--   (NULL: from the first again, it reached the last one); the repository keeps them for its next claim.
-- $2 narrows all of it to that enterprise: its urgencies and its groups only (the walk then reads its most urgent
-- due rows; no urgent read, no cursor).
-- New: unscheduled rows by age (walk `new`) and scheduled rows whose time has come (`new-scheduled`).
WITH RECURSIVE ulv(level, k, c, counted) AS (
  SELECT 2147483648::bigint, 0, 0, false
  UNION ALL
  SELECT p.level::bigint, l.k + 1, l.c + p.counted::int, p.counted
  FROM ulv l CROSS JOIN LATERAL (
    SELECT x.level, $2::uuid IS NULL OR coalesce((
      SELECT true FROM notify.ent_notification n
      WHERE n.notification_status = 'PENDING' AND n.publish_status = 'PUBLISH' AND n.deactivated IS NOT TRUE
        AND n.scheduled_for IS NULL AND n.held_at IS NULL AND n.xnovu_priority = x.level
        AND n.enterprise_id = $2::uuid
      LIMIT 1), false) AS counted
    FROM (SELECT n.xnovu_priority AS level FROM notify.ent_notification n
          WHERE n.notification_status = 'PENDING' AND n.publish_status = 'PUBLISH' AND n.deactivated IS NOT TRUE
            AND n.scheduled_for IS NULL AND n.held_at IS NULL AND n.xnovu_priority < l.level
          ORDER BY n.xnovu_priority DESC LIMIT 1) x
  ) p
  WHERE l.k < 4 * $5 AND l.c < $5
), ulevels AS (
  SELECT l.level::int AS level FROM ulv l WHERE l.counted
), uew(level, ent, due, k, d, within) AS (
  SELECT l.level, p.ent, p.due, 1, p.due::int, true
  FROM ulevels l CROSS JOIN LATERAL (
    SELECT n.enterprise_id AS ent, true AS due
    FROM notify.ent_notification n
    WHERE n.notification_status = 'PENDING' AND n.publish_status = 'PUBLISH' AND n.deactivated IS NOT TRUE
      AND n.scheduled_for IS NULL AND n.held_at IS NULL AND n.xnovu_priority = l.level
      AND n.enterprise_id >= coalesce($2::uuid, ($3::jsonb -> 'new' ->> l.level::text)::uuid,
        '00000000-0000-0000-0000-000000000000'::uuid)
      AND n.enterprise_id <= coalesce($2::uuid, 'ffffffff-ffff-ffff-ffff-ffffffffffff'::uuid)
    ORDER BY n.enterprise_id, n.updated_at LIMIT 1) p
  UNION ALL
  SELECT e.level, p.ent, p.due, e.k + 1, e.d + p.due::int, e.k < 2 * $4 AND e.d < $4
  FROM uew e CROSS JOIN LATERAL (
    SELECT n.enterprise_id AS ent, true AS due
    FROM notify.ent_notification n
    WHERE n.notification_status = 'PENDING' AND n.publish_status = 'PUBLISH' AND n.deactivated IS NOT TRUE
      AND n.scheduled_for IS NULL AND n.held_at IS NULL AND n.xnovu_priority = e.level AND n.enterprise_id > e.ent
      AND n.enterprise_id <= coalesce($2::uuid, 'ffffffff-ffff-ffff-ffff-ffffffffffff'::uuid)
    ORDER BY n.enterprise_id, n.updated_at LIMIT 1) p
  WHERE e.within
), slv(level, k, c, counted) AS (
  SELECT 2147483648::bigint, 0, 0, false
  UNION ALL
  SELECT p.level::bigint, l.k + 1, l.c + p.counted::int, p.counted
  FROM slv l CROSS JOIN LATERAL (
    SELECT x.level, coalesce(CASE
      WHEN $2::uuid IS NOT NULL THEN (
        SELECT n.scheduled_for <= now() FROM notify.ent_notification n
        WHERE n.notification_status = 'PENDING' AND n.publish_status = 'PUBLISH' AND n.deactivated IS NOT TRUE
          AND n.scheduled_for IS NOT NULL AND n.held_at IS NULL AND n.xnovu_priority = x.level
          AND n.enterprise_id = $2::uuid
        ORDER BY n.scheduled_for LIMIT 1)
      WHEN x.level > 0 THEN (
        SELECT n.scheduled_for <= now() FROM notify.ent_notification n
        WHERE n.xnovu_priority > 0 AND n.notification_status = 'PENDING' AND n.publish_status = 'PUBLISH'
          AND n.deactivated IS NOT TRUE AND n.scheduled_for IS NOT NULL AND n.held_at IS NULL
          AND n.xnovu_priority = x.level
        ORDER BY n.scheduled_for LIMIT 1)
      ELSE true END, false) AS counted
    FROM (SELECT n.xnovu_priority AS level FROM notify.ent_notification n
          WHERE n.notification_status = 'PENDING' AND n.publish_status = 'PUBLISH' AND n.deactivated IS NOT TRUE
            AND n.scheduled_for IS NOT NULL AND n.held_at IS NULL AND n.xnovu_priority < l.level
          ORDER BY n.xnovu_priority DESC LIMIT 1) x
  ) p
  WHERE l.k < 4 * $5 AND l.c < $5
), slevels AS (
  SELECT l.level::int AS level FROM slv l WHERE l.counted
), sew(level, ent, due, k, d, within) AS (
  SELECT l.level, p.ent, p.due, 1, p.due::int, true
  FROM slevels l CROSS JOIN LATERAL (
    SELECT n.enterprise_id AS ent, coalesce(n.scheduled_for <= now(), false) AS due
    FROM notify.ent_notification n
    WHERE n.notification_status = 'PENDING' AND n.publish_status = 'PUBLISH' AND n.deactivated IS NOT TRUE
      AND n.scheduled_for IS NOT NULL AND n.held_at IS NULL AND n.xnovu_priority = l.level
      AND n.enterprise_id >= coalesce($2::uuid, ($3::jsonb -> 'new-scheduled' ->> l.level::text)::uuid,
        '00000000-0000-0000-0000-000000000000'::uuid)
      AND n.enterprise_id <= coalesce($2::uuid, 'ffffffff-ffff-ffff-ffff-ffffffffffff'::uuid)
    ORDER BY n.enterprise_id, n.scheduled_for LIMIT 1) p
  UNION ALL
  SELECT e.level, p.ent, p.due, e.k + 1, e.d + p.due::int, e.k < 2 * $4 AND e.d < $4
  FROM sew e CROSS JOIN LATERAL (
    SELECT n.enterprise_id AS ent, coalesce(n.scheduled_for <= now(), false) AS due
    FROM notify.ent_notification n
    WHERE n.notification_status = 'PENDING' AND n.publish_status = 'PUBLISH' AND n.deactivated IS NOT TRUE
      AND n.scheduled_for IS NOT NULL AND n.held_at IS NULL AND n.xnovu_priority = e.level AND n.enterprise_id > e.ent
      AND n.enterprise_id <= coalesce($2::uuid, 'ffffffff-ffff-ffff-ffff-ffffffffffff'::uuid)
    ORDER BY n.enterprise_id, n.scheduled_for LIMIT 1) p
  WHERE e.within
)
SELECT h.* FROM (
  SELECT e.level, e.ent, ceil($1::float8 / (
    (SELECT count(*) FROM uew c WHERE c.within AND c.due AND c.level = e.level)
    + CASE WHEN $2::uuid IS NULL THEN 1 ELSE 0 END))::int AS per
  FROM uew e WHERE e.within AND e.due) g CROSS JOIN LATERAL (
  SELECT n.id, greatest(cardinality(n.recipients), 1) AS tokens, n.xnovu_priority AS level,
    n.enterprise_id::text AS enterprise, n.updated_at AS due, n.attempts, NULL::text AS walk
  FROM notify.ent_notification n
  WHERE n.notification_status = 'PENDING' AND n.publish_status = 'PUBLISH' AND n.deactivated IS NOT TRUE
    AND n.scheduled_for IS NULL AND n.held_at IS NULL AND n.xnovu_priority = g.level AND n.enterprise_id = g.ent
    AND n.updated_at <= now() AND (n.next_attempt_at IS NULL OR n.next_attempt_at <= now())
    AND NOT EXISTS (SELECT 1 FROM notify.ent_notification_workflow w WHERE w.id = n.notification_workflow_id
                    AND (w.deactivated IS TRUE OR w.publish_status IN ('DRAFT', 'NONE')))
  ORDER BY n.updated_at, n.id
  LIMIT g.per
  FOR UPDATE OF n SKIP LOCKED
) h
UNION ALL
SELECT h.* FROM (
  SELECT l.level, ceil($1::float8 / (
    (SELECT count(*) FROM uew c WHERE c.within AND c.due AND c.level = l.level)
    + CASE WHEN $2::uuid IS NULL THEN 1 ELSE 0 END))::int AS per
  FROM ulevels l WHERE $2::uuid IS NULL) g CROSS JOIN LATERAL (
  SELECT n.id, greatest(cardinality(n.recipients), 1) AS tokens, n.xnovu_priority AS level,
    n.enterprise_id::text AS enterprise, n.updated_at AS due, n.attempts, NULL::text AS walk
  FROM notify.ent_notification n
  WHERE n.notification_status = 'PENDING' AND n.publish_status = 'PUBLISH' AND n.deactivated IS NOT TRUE
    AND n.scheduled_for IS NULL AND n.held_at IS NULL AND n.xnovu_priority = g.level AND n.enterprise_id IS NULL
    AND n.updated_at <= now() AND (n.next_attempt_at IS NULL OR n.next_attempt_at <= now())
    AND NOT EXISTS (SELECT 1 FROM notify.ent_notification_workflow w WHERE w.id = n.notification_workflow_id
                    AND (w.deactivated IS TRUE OR w.publish_status IN ('DRAFT', 'NONE')))
  ORDER BY n.updated_at, n.id
  LIMIT g.per
  FOR UPDATE OF n SKIP LOCKED
) h
UNION ALL
(SELECT h.* FROM (SELECT l.level FROM ulevels l WHERE l.level > 0 AND $2::uuid IS NULL ORDER BY l.level DESC) u
 CROSS JOIN LATERAL (
  SELECT n.id, greatest(cardinality(n.recipients), 1) AS tokens, n.xnovu_priority AS level,
    n.enterprise_id::text AS enterprise, n.updated_at AS due, n.attempts, NULL::text AS walk
  FROM notify.ent_notification n
  WHERE n.xnovu_priority > 0 AND n.notification_status = 'PENDING' AND n.publish_status = 'PUBLISH'
    AND n.deactivated IS NOT TRUE AND n.scheduled_for IS NULL AND n.held_at IS NULL AND n.xnovu_priority = u.level
    AND n.updated_at <= now() AND (n.next_attempt_at IS NULL OR n.next_attempt_at <= now())
    AND NOT EXISTS (SELECT 1 FROM notify.ent_notification_workflow w WHERE w.id = n.notification_workflow_id
                    AND (w.deactivated IS TRUE OR w.publish_status IN ('DRAFT', 'NONE')))
  ORDER BY n.updated_at, n.id
  LIMIT $1
  FOR UPDATE OF n SKIP LOCKED
) h
LIMIT $1)
UNION ALL
SELECT NULL::bigint, NULL::int, l.level, (SELECT e.ent::text FROM uew e WHERE e.level = l.level AND NOT e.within),
  NULL::timestamptz, NULL::int, 'new'
FROM ulevels l WHERE $2::uuid IS NULL
UNION ALL
SELECT h.* FROM (
  SELECT e.level, e.ent, ceil($1::float8 / (
    (SELECT count(*) FROM sew c WHERE c.within AND c.due AND c.level = e.level)
    + CASE WHEN $2::uuid IS NULL THEN 1 ELSE 0 END))::int AS per
  FROM sew e WHERE e.within AND e.due) g CROSS JOIN LATERAL (
  SELECT n.id, greatest(cardinality(n.recipients), 1) AS tokens, n.xnovu_priority AS level,
    n.enterprise_id::text AS enterprise, n.scheduled_for AS due, n.attempts, NULL::text AS walk
  FROM notify.ent_notification n
  WHERE n.notification_status = 'PENDING' AND n.publish_status = 'PUBLISH' AND n.deactivated IS NOT TRUE
    AND n.scheduled_for IS NOT NULL AND n.held_at IS NULL AND n.xnovu_priority = g.level AND n.enterprise_id = g.ent
    AND n.scheduled_for <= now() AND (n.next_attempt_at IS NULL OR n.next_attempt_at <= now())
    AND NOT EXISTS (SELECT 1 FROM notify.ent_notification_workflow w WHERE w.id = n.notification_workflow_id
                    AND (w.deactivated IS TRUE OR w.publish_status IN ('DRAFT', 'NONE')))
  ORDER BY n.scheduled_for, n.id
  LIMIT g.per
  FOR UPDATE OF n SKIP LOCKED
) h
UNION ALL
SELECT h.* FROM (
  SELECT l.level, ceil($1::float8 / (
    (SELECT count(*) FROM sew c WHERE c.within AND c.due AND c.level = l.level)
    + CASE WHEN $2::uuid IS NULL THEN 1 ELSE 0 END))::int AS per
  FROM slevels l WHERE $2::uuid IS NULL) g CROSS JOIN LATERAL (
  SELECT n.id, greatest(cardinality(n.recipients), 1) AS tokens, n.xnovu_priority AS level,
    n.enterprise_id::text AS enterprise, n.scheduled_for AS due, n.attempts, NULL::text AS walk
  FROM notify.ent_notification n
  WHERE n.notification_status = 'PENDING' AND n.publish_status = 'PUBLISH' AND n.deactivated IS NOT TRUE
    AND n.scheduled_for IS NOT NULL AND n.held_at IS NULL AND n.xnovu_priority = g.level AND n.enterprise_id IS NULL
    AND n.scheduled_for <= now() AND (n.next_attempt_at IS NULL OR n.next_attempt_at <= now())
    AND NOT EXISTS (SELECT 1 FROM notify.ent_notification_workflow w WHERE w.id = n.notification_workflow_id
                    AND (w.deactivated IS TRUE OR w.publish_status IN ('DRAFT', 'NONE')))
  ORDER BY n.scheduled_for, n.id
  LIMIT g.per
  FOR UPDATE OF n SKIP LOCKED
) h
UNION ALL
(SELECT h.* FROM (SELECT l.level FROM slevels l WHERE l.level > 0 AND $2::uuid IS NULL ORDER BY l.level DESC) u
 CROSS JOIN LATERAL (
  SELECT n.id, greatest(cardinality(n.recipients), 1) AS tokens, n.xnovu_priority AS level,
    n.enterprise_id::text AS enterprise, n.scheduled_for AS due, n.attempts, NULL::text AS walk
  FROM notify.ent_notification n
  WHERE n.xnovu_priority > 0 AND n.notification_status = 'PENDING' AND n.publish_status = 'PUBLISH'
    AND n.deactivated IS NOT TRUE AND n.scheduled_for IS NOT NULL AND n.held_at IS NULL AND n.xnovu_priority = u.level
    AND n.scheduled_for <= now() AND (n.next_attempt_at IS NULL OR n.next_attempt_at <= now())
    AND NOT EXISTS (SELECT 1 FROM notify.ent_notification_workflow w WHERE w.id = n.notification_workflow_id
                    AND (w.deactivated IS TRUE OR w.publish_status IN ('DRAFT', 'NONE')))
  ORDER BY n.scheduled_for, n.id
  LIMIT $1
  FOR UPDATE OF n SKIP LOCKED
) h
LIMIT $1)
UNION ALL
SELECT NULL::bigint, NULL::int, l.level, (SELECT e.ent::text FROM sew e WHERE e.level = l.level AND NOT e.within),
  NULL::timestamptz, NULL::int, 'new-scheduled'
FROM slevels l WHERE $2::uuid IS NULL;

-- name: heads_scheduled
-- The heads of the (urgency, enterprise) groups a claim considers beside the oldest due rows (candidates_*, same
-- kind), read as heads_new reads them (the urgencies with something due, the walk of enterprises from each
-- urgency's cursor $3, the urgent read, then where each walk goes on), through this kind's indexes.
-- Scheduled: rows whose send time is within the look-ahead ($6 ms).
WITH RECURSIVE slv(level, k, c, counted) AS (
  SELECT 2147483648::bigint, 0, 0, false
  UNION ALL
  SELECT p.level::bigint, l.k + 1, l.c + p.counted::int, p.counted
  FROM slv l CROSS JOIN LATERAL (
    SELECT x.level, coalesce(CASE
      WHEN $2::uuid IS NOT NULL THEN (
        SELECT n.scheduled_for <= now() + make_interval(secs => $6::float8 / 1000) FROM notify.ent_notification n
        WHERE n.notification_status = 'PENDING' AND n.publish_status = 'PUBLISH' AND n.deactivated IS NOT TRUE
          AND n.scheduled_for IS NOT NULL AND n.held_at IS NULL AND n.xnovu_priority = x.level
          AND n.enterprise_id = $2::uuid
        ORDER BY n.scheduled_for LIMIT 1)
      WHEN x.level > 0 THEN (
        SELECT n.scheduled_for <= now() + make_interval(secs => $6::float8 / 1000) FROM notify.ent_notification n
        WHERE n.xnovu_priority > 0 AND n.notification_status = 'PENDING' AND n.publish_status = 'PUBLISH'
          AND n.deactivated IS NOT TRUE AND n.scheduled_for IS NOT NULL AND n.held_at IS NULL
          AND n.xnovu_priority = x.level
        ORDER BY n.scheduled_for LIMIT 1)
      ELSE true END, false) AS counted
    FROM (SELECT n.xnovu_priority AS level FROM notify.ent_notification n
          WHERE n.notification_status = 'PENDING' AND n.publish_status = 'PUBLISH' AND n.deactivated IS NOT TRUE
            AND n.scheduled_for IS NOT NULL AND n.held_at IS NULL AND n.xnovu_priority < l.level
          ORDER BY n.xnovu_priority DESC LIMIT 1) x
  ) p
  WHERE l.k < 4 * $5 AND l.c < $5
), slevels AS (
  SELECT l.level::int AS level FROM slv l WHERE l.counted
), sew(level, ent, due, k, d, within) AS (
  SELECT l.level, p.ent, p.due, 1, p.due::int, true
  FROM slevels l CROSS JOIN LATERAL (
    SELECT n.enterprise_id AS ent,
      coalesce(n.scheduled_for <= now() + make_interval(secs => $6::float8 / 1000), false) AS due
    FROM notify.ent_notification n
    WHERE n.notification_status = 'PENDING' AND n.publish_status = 'PUBLISH' AND n.deactivated IS NOT TRUE
      AND n.scheduled_for IS NOT NULL AND n.held_at IS NULL AND n.xnovu_priority = l.level
      AND n.enterprise_id >= coalesce($2::uuid, ($3::jsonb -> 'scheduled' ->> l.level::text)::uuid,
        '00000000-0000-0000-0000-000000000000'::uuid)
      AND n.enterprise_id <= coalesce($2::uuid, 'ffffffff-ffff-ffff-ffff-ffffffffffff'::uuid)
    ORDER BY n.enterprise_id, n.scheduled_for LIMIT 1) p
  UNION ALL
  SELECT e.level, p.ent, p.due, e.k + 1, e.d + p.due::int, e.k < 2 * $4 AND e.d < $4
  FROM sew e CROSS JOIN LATERAL (
    SELECT n.enterprise_id AS ent,
      coalesce(n.scheduled_for <= now() + make_interval(secs => $6::float8 / 1000), false) AS due
    FROM notify.ent_notification n
    WHERE n.notification_status = 'PENDING' AND n.publish_status = 'PUBLISH' AND n.deactivated IS NOT TRUE
      AND n.scheduled_for IS NOT NULL AND n.held_at IS NULL AND n.xnovu_priority = e.level AND n.enterprise_id > e.ent
      AND n.enterprise_id <= coalesce($2::uuid, 'ffffffff-ffff-ffff-ffff-ffffffffffff'::uuid)
    ORDER BY n.enterprise_id, n.scheduled_for LIMIT 1) p
  WHERE e.within
)
SELECT h.* FROM (
  SELECT e.level, e.ent, ceil($1::float8 / (
    (SELECT count(*) FROM sew c WHERE c.within AND c.due AND c.level = e.level)
    + CASE WHEN $2::uuid IS NULL THEN 1 ELSE 0 END))::int AS per
  FROM sew e WHERE e.within AND e.due) g CROSS JOIN LATERAL (
  SELECT n.id, greatest(cardinality(n.recipients), 1) AS tokens, n.xnovu_priority AS level,
    n.enterprise_id::text AS enterprise, n.scheduled_for AS due, n.attempts, NULL::text AS walk
  FROM notify.ent_notification n
  WHERE n.notification_status = 'PENDING' AND n.publish_status = 'PUBLISH' AND n.deactivated IS NOT TRUE
    AND n.scheduled_for IS NOT NULL AND n.held_at IS NULL AND n.xnovu_priority = g.level AND n.enterprise_id = g.ent
    AND n.scheduled_for <= now() + make_interval(secs => $6::float8 / 1000)
    AND (n.next_attempt_at IS NULL OR n.next_attempt_at <= now())
    AND NOT EXISTS (SELECT 1 FROM notify.ent_notification_workflow w WHERE w.id = n.notification_workflow_id
                    AND (w.deactivated IS TRUE OR w.publish_status IN ('DRAFT', 'NONE')))
  ORDER BY n.scheduled_for, n.id
  LIMIT g.per
  FOR UPDATE OF n SKIP LOCKED
) h
UNION ALL
SELECT h.* FROM (
  SELECT l.level, ceil($1::float8 / (
    (SELECT count(*) FROM sew c WHERE c.within AND c.due AND c.level = l.level)
    + CASE WHEN $2::uuid IS NULL THEN 1 ELSE 0 END))::int AS per
  FROM slevels l WHERE $2::uuid IS NULL) g CROSS JOIN LATERAL (
  SELECT n.id, greatest(cardinality(n.recipients), 1) AS tokens, n.xnovu_priority AS level,
    n.enterprise_id::text AS enterprise, n.scheduled_for AS due, n.attempts, NULL::text AS walk
  FROM notify.ent_notification n
  WHERE n.notification_status = 'PENDING' AND n.publish_status = 'PUBLISH' AND n.deactivated IS NOT TRUE
    AND n.scheduled_for IS NOT NULL AND n.held_at IS NULL AND n.xnovu_priority = g.level AND n.enterprise_id IS NULL
    AND n.scheduled_for <= now() + make_interval(secs => $6::float8 / 1000)
    AND (n.next_attempt_at IS NULL OR n.next_attempt_at <= now())
    AND NOT EXISTS (SELECT 1 FROM notify.ent_notification_workflow w WHERE w.id = n.notification_workflow_id
                    AND (w.deactivated IS TRUE OR w.publish_status IN ('DRAFT', 'NONE')))
  ORDER BY n.scheduled_for, n.id
  LIMIT g.per
  FOR UPDATE OF n SKIP LOCKED
) h
UNION ALL
(SELECT h.* FROM (SELECT l.level FROM slevels l WHERE l.level > 0 AND $2::uuid IS NULL ORDER BY l.level DESC) u
 CROSS JOIN LATERAL (
  SELECT n.id, greatest(cardinality(n.recipients), 1) AS tokens, n.xnovu_priority AS level,
    n.enterprise_id::text AS enterprise, n.scheduled_for AS due, n.attempts, NULL::text AS walk
  FROM notify.ent_notification n
  WHERE n.xnovu_priority > 0 AND n.notification_status = 'PENDING' AND n.publish_status = 'PUBLISH'
    AND n.deactivated IS NOT TRUE AND n.scheduled_for IS NOT NULL AND n.held_at IS NULL AND n.xnovu_priority = u.level
    AND n.scheduled_for <= now() + make_interval(secs => $6::float8 / 1000)
    AND (n.next_attempt_at IS NULL OR n.next_attempt_at <= now())
    AND NOT EXISTS (SELECT 1 FROM notify.ent_notification_workflow w WHERE w.id = n.notification_workflow_id
                    AND (w.deactivated IS TRUE OR w.publish_status IN ('DRAFT', 'NONE')))
  ORDER BY n.scheduled_for, n.id
  LIMIT $1
  FOR UPDATE OF n SKIP LOCKED
) h
LIMIT $1)
UNION ALL
SELECT NULL::bigint, NULL::int, l.level, (SELECT e.ent::text FROM sew e WHERE e.level = l.level AND NOT e.within),
  NULL::timestamptz, NULL::int, 'scheduled'
FROM slevels l WHERE $2::uuid IS NULL;

-- name: heads_failed
-- The heads of the (urgency, enterprise) groups a claim considers beside the oldest due rows (candidates_*, same
-- kind), read as heads_new reads them (the urgencies with something due, the walk of enterprises from each
-- urgency's cursor $3, the urgent read, then where each walk goes on), through this kind's indexes.
-- Failed: due retries a claim may take (0012's and 0013's retry indexes leave held rows out); rows of the
-- original worker (no next_attempt_at) and dead attempts to recover come through candidates_failed only.
WITH RECURSIVE rlv(level, k, c, counted) AS (
  SELECT 2147483648::bigint, 0, 0, false
  UNION ALL
  SELECT p.level::bigint, l.k + 1, l.c + p.counted::int, p.counted
  FROM rlv l CROSS JOIN LATERAL (
    SELECT x.level, coalesce(CASE
      WHEN $2::uuid IS NOT NULL THEN (
        SELECT n.next_attempt_at <= now() FROM notify.ent_notification n
        WHERE n.notification_status = 'FAILED' AND n.dead_lettered_at IS NULL AND n.publish_status = 'PUBLISH'
          AND n.deactivated IS NOT TRUE AND n.held_at IS NULL AND n.xnovu_priority = x.level
          AND n.enterprise_id = $2::uuid
        ORDER BY n.next_attempt_at LIMIT 1)
      WHEN x.level > 0 THEN (
        SELECT n.next_attempt_at <= now() FROM notify.ent_notification n
        WHERE n.xnovu_priority > 0 AND n.notification_status = 'FAILED' AND n.dead_lettered_at IS NULL
          AND n.publish_status = 'PUBLISH' AND n.deactivated IS NOT TRUE AND n.held_at IS NULL
          AND n.xnovu_priority = x.level
        ORDER BY n.next_attempt_at LIMIT 1)
      ELSE true END, false) AS counted
    FROM (SELECT n.xnovu_priority AS level FROM notify.ent_notification n
          WHERE n.notification_status = 'FAILED' AND n.dead_lettered_at IS NULL AND n.publish_status = 'PUBLISH'
            AND n.deactivated IS NOT TRUE AND n.held_at IS NULL AND n.xnovu_priority < l.level
          ORDER BY n.xnovu_priority DESC LIMIT 1) x
  ) p
  WHERE l.k < 4 * $5 AND l.c < $5
), rlevels AS (
  SELECT l.level::int AS level FROM rlv l WHERE l.counted
), rew(level, ent, due, k, d, within) AS (
  SELECT l.level, p.ent, p.due, 1, p.due::int, true
  FROM rlevels l CROSS JOIN LATERAL (
    SELECT n.enterprise_id AS ent, coalesce(n.next_attempt_at <= now(), false) AS due
    FROM notify.ent_notification n
    WHERE n.notification_status = 'FAILED' AND n.dead_lettered_at IS NULL AND n.publish_status = 'PUBLISH'
      AND n.deactivated IS NOT TRUE AND n.held_at IS NULL AND n.xnovu_priority = l.level
      AND n.enterprise_id >= coalesce($2::uuid, ($3::jsonb -> 'failed' ->> l.level::text)::uuid,
        '00000000-0000-0000-0000-000000000000'::uuid)
      AND n.enterprise_id <= coalesce($2::uuid, 'ffffffff-ffff-ffff-ffff-ffffffffffff'::uuid)
    ORDER BY n.enterprise_id, n.next_attempt_at LIMIT 1) p
  UNION ALL
  SELECT e.level, p.ent, p.due, e.k + 1, e.d + p.due::int, e.k < 2 * $4 AND e.d < $4
  FROM rew e CROSS JOIN LATERAL (
    SELECT n.enterprise_id AS ent, coalesce(n.next_attempt_at <= now(), false) AS due
    FROM notify.ent_notification n
    WHERE n.notification_status = 'FAILED' AND n.dead_lettered_at IS NULL AND n.publish_status = 'PUBLISH'
      AND n.deactivated IS NOT TRUE AND n.held_at IS NULL AND n.xnovu_priority = e.level AND n.enterprise_id > e.ent
      AND n.enterprise_id <= coalesce($2::uuid, 'ffffffff-ffff-ffff-ffff-ffffffffffff'::uuid)
    ORDER BY n.enterprise_id, n.next_attempt_at LIMIT 1) p
  WHERE e.within
)
SELECT h.* FROM (
  SELECT e.level, e.ent, ceil($1::float8 / (
    (SELECT count(*) FROM rew c WHERE c.within AND c.due AND c.level = e.level)
    + CASE WHEN $2::uuid IS NULL THEN 1 ELSE 0 END))::int AS per
  FROM rew e WHERE e.within AND e.due) g CROSS JOIN LATERAL (
  SELECT n.id, greatest(cardinality(n.recipients), 1) AS tokens, n.xnovu_priority AS level,
    n.enterprise_id::text AS enterprise, n.next_attempt_at AS due, n.attempts, NULL::text AS walk
  FROM notify.ent_notification n
  WHERE n.notification_status = 'FAILED' AND n.dead_lettered_at IS NULL AND n.publish_status = 'PUBLISH'
    AND n.deactivated IS NOT TRUE AND n.held_at IS NULL AND n.xnovu_priority = g.level AND n.enterprise_id = g.ent
    AND n.next_attempt_at <= now()
    AND NOT EXISTS (SELECT 1 FROM notify.ent_notification_workflow w WHERE w.id = n.notification_workflow_id
                    AND (w.deactivated IS TRUE OR w.publish_status IN ('DRAFT', 'NONE')))
  ORDER BY n.next_attempt_at, n.id
  LIMIT g.per
  FOR UPDATE OF n SKIP LOCKED
) h
UNION ALL
SELECT h.* FROM (
  SELECT l.level, ceil($1::float8 / (
    (SELECT count(*) FROM rew c WHERE c.within AND c.due AND c.level = l.level)
    + CASE WHEN $2::uuid IS NULL THEN 1 ELSE 0 END))::int AS per
  FROM rlevels l WHERE $2::uuid IS NULL) g CROSS JOIN LATERAL (
  SELECT n.id, greatest(cardinality(n.recipients), 1) AS tokens, n.xnovu_priority AS level,
    n.enterprise_id::text AS enterprise, n.next_attempt_at AS due, n.attempts, NULL::text AS walk
  FROM notify.ent_notification n
  WHERE n.notification_status = 'FAILED' AND n.dead_lettered_at IS NULL AND n.publish_status = 'PUBLISH'
    AND n.deactivated IS NOT TRUE AND n.held_at IS NULL AND n.xnovu_priority = g.level AND n.enterprise_id IS NULL
    AND n.next_attempt_at <= now()
    AND NOT EXISTS (SELECT 1 FROM notify.ent_notification_workflow w WHERE w.id = n.notification_workflow_id
                    AND (w.deactivated IS TRUE OR w.publish_status IN ('DRAFT', 'NONE')))
  ORDER BY n.next_attempt_at, n.id
  LIMIT g.per
  FOR UPDATE OF n SKIP LOCKED
) h
UNION ALL
(SELECT h.* FROM (SELECT l.level FROM rlevels l WHERE l.level > 0 AND $2::uuid IS NULL ORDER BY l.level DESC) u
 CROSS JOIN LATERAL (
  SELECT n.id, greatest(cardinality(n.recipients), 1) AS tokens, n.xnovu_priority AS level,
    n.enterprise_id::text AS enterprise, n.next_attempt_at AS due, n.attempts, NULL::text AS walk
  FROM notify.ent_notification n
  WHERE n.xnovu_priority > 0 AND n.notification_status = 'FAILED' AND n.dead_lettered_at IS NULL
    AND n.publish_status = 'PUBLISH' AND n.deactivated IS NOT TRUE AND n.held_at IS NULL
    AND n.xnovu_priority = u.level AND n.next_attempt_at <= now()
    AND NOT EXISTS (SELECT 1 FROM notify.ent_notification_workflow w WHERE w.id = n.notification_workflow_id
                    AND (w.deactivated IS TRUE OR w.publish_status IN ('DRAFT', 'NONE')))
  ORDER BY n.next_attempt_at, n.id
  LIMIT $1
  FOR UPDATE OF n SKIP LOCKED
) h
LIMIT $1)
UNION ALL
SELECT NULL::bigint, NULL::int, l.level, (SELECT e.ent::text FROM rew e WHERE e.level = l.level AND NOT e.within),
  NULL::timestamptz, NULL::int, 'failed'
FROM rlevels l WHERE $2::uuid IS NULL;

-- name: claim_rows
-- The compare-and-set of a claim (I4): the picked rows become PROCESSING at their next attempt, and
-- next_attempt_at becomes the lease ($2 ms from now, or from the send time of a scheduled row); $3 is the claim's
-- key (NULL for a claim made outside a poll). Names are cut to what a workflow's memo shows (searchattrs.MEMO_NAME_MAX):
-- a claim's result crosses Temporal, and a producer's 3 MB name made every poll run fail on the payload limit.
UPDATE notify.ent_notification n
SET notification_status = 'PROCESSING', attempts = n.attempts + 1, xnovu_claim_key = $3,
    xnovu_claim_tokens = greatest(cardinality(n.recipients), 1),
    next_attempt_at = greatest(now(), coalesce(n.scheduled_for, now())) + make_interval(secs => $2::float8 / 1000)
WHERE n.id = ANY($1::bigint[])
RETURNING n.id, n.attempts, n.scheduled_for, left(n.name, 200) AS name, n.enterprise_id::text AS enterprise_id,
  (SELECT w.workflow_key FROM notify.ent_notification_workflow w WHERE w.id = n.notification_workflow_id)
    AS workflow_key, n.xnovu_priority AS priority;

-- name: held_workflows
-- The workflows whose notifications are held (DRAFT/NONE or deactivated): few, and read first so the sweep below
-- looks their rows up by value.
SELECT array_agg(w.id) AS ids FROM notify.ent_notification_workflow w
WHERE w.deactivated IS TRUE OR w.publish_status IN ('DRAFT', 'NONE');

-- name: held_row_workflows
-- The workflows that have marked (held) rows, read as a skip scan of the held-rows index: one index probe per
-- distinct workflow, however many rows each holds; and whether a marked row lost its workflow (deleted).
WITH RECURSIVE wf(id) AS (
  (SELECT n.notification_workflow_id FROM notify.ent_notification n
   WHERE n.held_at IS NOT NULL AND n.notification_workflow_id IS NOT NULL
   ORDER BY n.notification_workflow_id LIMIT 1)
  UNION ALL
  SELECT (SELECT n.notification_workflow_id FROM notify.ent_notification n
          WHERE n.held_at IS NOT NULL AND n.notification_workflow_id > wf.id
          ORDER BY n.notification_workflow_id LIMIT 1)
  FROM wf WHERE wf.id IS NOT NULL
)
SELECT coalesce(array_agg(id) FILTER (WHERE id IS NOT NULL), '{}') AS ids,
  EXISTS (SELECT 1 FROM notify.ent_notification n
          WHERE n.held_at IS NOT NULL AND n.notification_workflow_id IS NULL) AS orphans
FROM wf;

-- name: hold_sweep
-- Keeps held rows out of the claim indexes (docs/design.md "Held rows"), $1 rows at most each way per call, each
-- row locked only for this short statement (SKIP LOCKED: never waits for a claim): marks the PENDING rows and the
-- retries (FAILED, not dead-lettered) of the held workflows $2 (held_at), and unmarks the marked rows of the
-- workflows $3 that are no longer held (published or reactivated since, or deleted) and, with $4, those that lost
-- their workflow (the claim then dead-letters them with the reason). The held workflows
-- come as values, not as a join: joined, the planner took every row of the table as a match for any workflow (one
-- workflow's backlog makes its statistics say so) and read the whole table once per DRAFT workflow, minutes with
-- thousands of them (tests/integration/test_attack_claims.py). Marking reads the holdable indexes (0008's for PENDING
-- rows, 0014's for retries) per held workflow, unmarking the held-rows index per released workflow. The mark is a
-- hint: claims, acquire and fence still check the workflow (I1), so a row unmarked while its workflow goes back to
-- DRAFT is still not sent.
WITH held_pending AS (
  SELECT n.id FROM notify.ent_notification n
  WHERE n.notification_workflow_id = ANY($2::bigint[]) AND n.notification_status = 'PENDING'
    AND n.publish_status = 'PUBLISH' AND n.deactivated IS NOT TRUE AND n.held_at IS NULL
  LIMIT $1
  FOR UPDATE OF n SKIP LOCKED
), held_failed AS (
  SELECT n.id FROM notify.ent_notification n
  WHERE n.notification_workflow_id = ANY($2::bigint[]) AND n.notification_status = 'FAILED'
    AND n.dead_lettered_at IS NULL AND n.publish_status = 'PUBLISH' AND n.deactivated IS NOT TRUE
    AND n.held_at IS NULL AND n.notification_workflow_id IS NOT NULL
  LIMIT greatest($1 - (SELECT count(*) FROM held_pending), 0)
  FOR UPDATE OF n SKIP LOCKED
), held AS (
  SELECT id FROM held_pending UNION ALL SELECT id FROM held_failed
), released AS (
  SELECT n.id FROM notify.ent_notification n
  WHERE n.held_at IS NOT NULL
    AND (n.notification_workflow_id = ANY($3::bigint[]) OR ($4::bool AND n.notification_workflow_id IS NULL))
  LIMIT $1
  FOR UPDATE OF n SKIP LOCKED
), mark AS (
  UPDATE notify.ent_notification n SET held_at = now()
  WHERE n.id = ANY(ARRAY(SELECT id FROM held)) AND n.held_at IS NULL
  RETURNING n.id
), unmark AS (
  UPDATE notify.ent_notification n SET held_at = NULL
  WHERE n.id = ANY(ARRAY(SELECT id FROM released)) AND n.held_at IS NOT NULL
  RETURNING n.id
)
SELECT (SELECT count(*) FROM mark) AS held, (SELECT count(*) FROM unmark) AS released;

-- name: expired_leases
-- PROCESSING rows whose lease ran out (or legacy rows that have not moved for a lease): the claim activity asks
-- Temporal whether each attempt's workflow still runs before any is recovered. Legacy rows first, then by expiry:
-- two bounded scans of the retry index (as candidates_failed), no sort over every PROCESSING row.
SELECT e.id, e.attempts, e.expired_for_s FROM (
  (SELECT n.id, n.attempts, extract(epoch FROM now() - n.updated_at)::float8 AS expired_for_s
   FROM notify.ent_notification n
   WHERE n.notification_status = 'PROCESSING' AND n.dead_lettered_at IS NULL
     AND n.next_attempt_at IS NULL AND n.updated_at <= now() - make_interval(secs => $3::float8 / 1000)
     AND ($2::uuid IS NULL OR n.enterprise_id = $2::uuid)
   ORDER BY n.next_attempt_at, n.id
   LIMIT $1)
  UNION ALL
  (SELECT n.id, n.attempts, extract(epoch FROM now() - n.next_attempt_at)::float8 AS expired_for_s
   FROM notify.ent_notification n
   WHERE n.notification_status = 'PROCESSING' AND n.dead_lettered_at IS NULL AND n.next_attempt_at <= now()
     AND ($2::uuid IS NULL OR n.enterprise_id = $2::uuid)
   ORDER BY n.next_attempt_at, n.id
   LIMIT $1)
) e
LIMIT $1;

-- name: extend_leases
-- The attempts Temporal still runs keep their claim: a live attempt is slow, not dead.
UPDATE notify.ent_notification n
SET next_attempt_at = now() + make_interval(secs => $3::float8 / 1000)
FROM unnest($1::bigint[], $2::int[]) AS u(id, attempts)
WHERE n.id = u.id AND n.attempts = u.attempts AND n.notification_status = 'PROCESSING'
RETURNING n.id;

-- name: load_notification
SELECT n.id, n.name, n.publish_status::text AS publish_status, n.deactivated,
  n.notification_status::text AS status, n.payload, n.recipients::text[] AS recipients, n.overrides,
  n.scheduled_for, n.attempts, n.next_attempt_at, n.dead_lettered_at, n.enterprise_id::text AS enterprise_id,
  n.retraction_reason, n.error_details,
  w.workflow_key, w.publish_status::text AS workflow_publish_status, w.deactivated AS workflow_deactivated,
  w.default_channels::text[] AS default_channels, now() AS db_now, n.xnovu_piece AS piece,
  n.xnovu_claim_key IS NOT DISTINCT FROM 'direct' AS direct_claim, n.xnovu_priority AS priority
FROM notify.ent_notification n
LEFT JOIN notify.ent_notification_workflow w ON w.id = n.notification_workflow_id
WHERE n.id = $1;

-- name: acquire
-- Idempotent claim for attempt $2 (the one attempt that notification-{id}-a{$2} may make) and everything the
-- attempt needs, in one round trip: takes a PENDING/FAILED row at attempts $2-1, or confirms (and extends the
-- lease of) a row already claimed for $2; returns the row, its workflow and the recipients the ledger says Novu
-- acknowledged. The I1 conditions are part of the compare-and-set so a row unpublished or retracted meanwhile is
-- not taken. Only the owner of attempt $2 may confirm a claim already made ($6, the mode): its workflow
-- ('workflow') a claim a poll made; a caller that asked for "the next attempt" ('take') takes a PENDING/FAILED row or
-- nothing, so it can never become a second sender of an attempt a poll claimed after it read the row (I4). Such a
-- direct claim is marked (xnovu_claim_key 'direct') and only that caller continues it ('direct'): it has no
-- workflow, so no workflow may confirm it (a batch trigger that found the row PROCESSING and started
-- notification-{id}-a{k} would otherwise send alongside the direct caller).
-- The ledger is read for one window of recipients only: the $5 smallest distinct recipient ids from $4 on (NULL $4:
-- from the first, NULL $5: all of them), a range of the ledger's primary key (notification_id, recipient_id). A
-- piece of an attempt tries one window, so it reads at most $5 ledger rows however many recipients the row has and
-- however many Novu already acknowledged (docs/performance.md "Costs that do not grow with the table").
-- Each acquire starts a new piece: it takes the next fencing token (xnovu_piece) and opens the piece, keeping how
-- long ago the previous one opened if that one never ended normally (crash, cut-off requests: their outcomes are
-- unknown), with the recipients of the window whose outcome the ledger marks unknown (docs/design.md "Pieces,
-- fencing tokens and unknown outcomes"). SET expressions read the row's old values.
WITH claimed AS (
  UPDATE notify.ent_notification n
  SET notification_status = 'PROCESSING', attempts = $2,
      xnovu_claim_tokens = CASE WHEN n.notification_status = 'PROCESSING' AND n.attempts = $2
                                THEN coalesce(n.xnovu_claim_tokens, greatest(cardinality(n.recipients), 1))
                                ELSE greatest(cardinality(n.recipients), 1) END,
      xnovu_claim_key = CASE WHEN $6::text IN ('take', 'direct') THEN 'direct'
                             WHEN n.notification_status = 'PROCESSING' THEN n.xnovu_claim_key END,
      next_attempt_at = greatest(now(), coalesce(n.scheduled_for, now())) + make_interval(secs => $3::float8 / 1000),
      xnovu_piece = n.xnovu_piece + 1, xnovu_piece_open_since = now(),
      xnovu_previous_piece_open_since = n.xnovu_piece_open_since
  WHERE n.id = $1
    AND n.publish_status = 'PUBLISH' AND n.deactivated IS NOT TRUE
    AND (n.scheduled_for IS NULL OR n.scheduled_for <= now() + interval '2 seconds')
    AND ((n.notification_status = 'PROCESSING' AND n.attempts = $2
          AND CASE $6::text WHEN 'workflow' THEN n.xnovu_claim_key IS DISTINCT FROM 'direct'
                            WHEN 'direct' THEN n.xnovu_claim_key IS NOT DISTINCT FROM 'direct'
                            ELSE false END)
         OR (n.notification_status IN ('PENDING', 'FAILED') AND n.attempts = $2 - 1 AND n.dead_lettered_at IS NULL))
  RETURNING n.*
)
SELECT n.id, n.name, n.publish_status::text AS publish_status, n.deactivated,
  n.notification_status::text AS status, n.payload, n.recipients::text[] AS recipients, n.overrides,
  n.scheduled_for, n.attempts, n.next_attempt_at, n.dead_lettered_at, n.enterprise_id::text AS enterprise_id,
  n.retraction_reason, n.error_details,
  w.workflow_key, w.publish_status::text AS workflow_publish_status, w.deactivated AS workflow_deactivated,
  w.default_channels::text[] AS default_channels, now() AS db_now,
  array(SELECT d.recipient_id::text FROM notify.ent_notification_delivery d
        WHERE d.notification_id = n.id AND d.status = 'SENT'
          AND d.recipient_id >= r.first AND d.recipient_id <= r.last) AS acknowledged,
  (SELECT json_object_agg(d.recipient_id::text, d.key_generation) FROM notify.ent_notification_delivery d
   WHERE d.notification_id = n.id AND d.status <> 'SENT' AND d.key_generation > 0
     AND d.recipient_id >= r.first AND d.recipient_id <= r.last) AS key_generations,
  n.xnovu_piece AS piece, n.xnovu_priority AS priority,
  extract(epoch FROM now() - n.xnovu_previous_piece_open_since)::float8 AS previous_piece_open_s,
  array(SELECT d.recipient_id::text FROM notify.ent_notification_delivery d
        WHERE d.notification_id = n.id AND d.status <> 'SENT' AND d.unknown_since IS NOT NULL
          AND d.recipient_id >= r.first AND d.recipient_id <= r.last) AS unresolved,
  (SELECT extract(epoch FROM now() - max(d.unknown_since))::float8 FROM notify.ent_notification_delivery d
   WHERE d.notification_id = n.id AND d.status <> 'SENT' AND d.unknown_since IS NOT NULL
     AND d.recipient_id >= r.first AND d.recipient_id <= r.last) AS unresolved_age_s
FROM claimed n
LEFT JOIN notify.ent_notification_workflow w ON w.id = n.notification_workflow_id
CROSS JOIN LATERAL (
  SELECT coalesce($4::uuid, '00000000-0000-0000-0000-000000000000'::uuid) AS first,
         coalesce((SELECT DISTINCT u.r FROM unnest(n.recipients) AS u(r)
                   WHERE $5::int IS NOT NULL
                     AND u.r >= coalesce($4::uuid, '00000000-0000-0000-0000-000000000000'::uuid)
                   ORDER BY u.r OFFSET $5::int - 1 LIMIT 1),
                  'ffffffff-ffff-ffff-ffff-ffffffffffff'::uuid) AS last
) r;

-- name: fence
-- Checked right before each Novu request of an attempt (and periodically while it waits, with no recipients): the
-- attempt's piece $4 still holds the claim (no newer piece of the attempt began) and nothing made the row
-- unsendable (I1, I3). Extends the lease: a live attempt is never recovered. Marks the request's recipients $5 as
-- on the wire (unknown_since) until their outcome is recorded, so a piece that follows a crash knows what to look up.
WITH held AS (
  UPDATE notify.ent_notification n
  SET next_attempt_at = greatest(n.next_attempt_at, now() + make_interval(secs => $3::float8 / 1000))
  WHERE n.id = $1 AND n.attempts = $2 AND n.xnovu_piece = $4 AND n.notification_status = 'PROCESSING'
    AND n.publish_status = 'PUBLISH' AND n.deactivated IS NOT TRUE
    AND EXISTS (SELECT 1 FROM notify.ent_notification_workflow w WHERE w.id = n.notification_workflow_id
                AND w.publish_status = 'PUBLISH' AND w.deactivated IS NOT TRUE)
  RETURNING n.id
), marked AS (
  INSERT INTO notify.ent_notification_delivery AS d (notification_id, recipient_id, unknown_since)
  SELECT h.id, u.recipient_id, now() FROM held h, unnest($5::uuid[]) AS u(recipient_id)
  ON CONFLICT (notification_id, recipient_id) DO UPDATE SET unknown_since = now() WHERE d.status <> 'SENT'
)
SELECT id FROM held;

-- name: record_outcomes
-- The outcome of one Novu request, written as soon as it is known; an acknowledged recipient is never downgraded
-- (I2), so a retry, a crash or a recovered attempt resumes with exactly the recipients Novu has not acknowledged.
-- An outcome still unknown after the activity feed was asked ($9) keeps unknown_since; any other clears it.
INSERT INTO notify.ent_notification_delivery AS d
  (notification_id, recipient_id, status, novu_transaction_id, idempotency_key, key_generation, attempts,
   last_http_status, last_error, updated_at, unknown_since)
SELECT $1, u.recipient_id, u.status, u.novu_transaction_id, u.idempotency_key, u.key_generation, 1,
       u.http_status, u.error, now(), CASE WHEN u.unknown THEN now() END
FROM unnest($2::uuid[], $3::text[], $4::text[], $5::text[], $6::int[], $7::int[], $8::text[], $9::bool[])
  AS u(recipient_id, status, novu_transaction_id, idempotency_key, key_generation, http_status, error, unknown)
ON CONFLICT (notification_id, recipient_id) DO UPDATE
SET status = excluded.status, novu_transaction_id = coalesce(excluded.novu_transaction_id, d.novu_transaction_id),
    idempotency_key = excluded.idempotency_key, key_generation = excluded.key_generation, attempts = d.attempts + 1,
    last_http_status = excluded.last_http_status, last_error = excluded.last_error, updated_at = now(),
    unknown_since = excluded.unknown_since
WHERE d.status <> 'SENT';

-- name: finalize
-- Ends attempt $2; only the attempt that holds the claim, in its current piece $7 (NULL: whichever), may finalize
-- it. Closes the piece, or, when it did not resolve what its open predecessor may have sent ($8 false), leaves that
-- one's window open for the next attempt.
UPDATE notify.ent_notification n
SET notification_status = $3::text::shared_types.notification_status, processed_at = now(),
    channels = coalesce((SELECT w.default_channels FROM notify.ent_notification_workflow w
                         WHERE w.id = n.notification_workflow_id), n.channels),
    error_details = $4::jsonb, next_attempt_at = $5,
    dead_lettered_at = CASE WHEN $6::bool THEN now() ELSE NULL END,
    xnovu_piece_open_since = CASE WHEN $8::bool THEN NULL ELSE n.xnovu_previous_piece_open_since END
WHERE n.id = $1 AND n.attempts = $2 AND n.notification_status = 'PROCESSING'
  AND ($7::bigint IS NULL OR n.xnovu_piece = $7)
RETURNING n.id;

-- name: close_piece
-- A piece that ends with its attempt still under way (time budget used, or waiting) closes itself: nothing of it
-- is on the wire any more. Run only then, so the hot path stays three statements. $3 as in finalize. $4: the tokens
-- the attempt still counts in flight, the recipients not yet tried (NULL: unchanged), so a big notification's
-- acknowledged recipients stop holding the claim window (docs/priority.md "Claims").
UPDATE notify.ent_notification n
SET xnovu_piece_open_since = CASE WHEN $3::bool THEN NULL ELSE n.xnovu_previous_piece_open_since END,
    xnovu_claim_tokens = coalesce($4::int, n.xnovu_claim_tokens)
WHERE n.id = $1 AND n.xnovu_piece = $2
RETURNING n.id;

-- name: release
-- Gives back a claimed row that must not be sent now (unpublished, deactivated, rescheduled, or its workflow held):
-- PENDING again, so it is sent once it may be. An attempt that sent nothing ($4 false) does not count, so
-- unpublish/republish cycles never use up MAX_ATTEMPTS.
UPDATE notify.ent_notification n
SET notification_status = 'PENDING', next_attempt_at = NULL, error_details = $3::jsonb,
    attempts = CASE WHEN $4::bool THEN n.attempts ELSE n.attempts - 1 END,
    xnovu_piece_open_since = CASE WHEN $6::bool THEN NULL ELSE n.xnovu_previous_piece_open_since END
WHERE n.id = $1 AND n.attempts = $2 AND n.notification_status = 'PROCESSING'
  AND ($5::bigint IS NULL OR n.xnovu_piece = $5)
RETURNING n.id;

-- name: retract
UPDATE notify.ent_notification
SET notification_status = 'RETRACTED', retracted_at = now(), retraction_reason = $2, next_attempt_at = NULL
WHERE id = $1 AND notification_status IN ('PENDING', 'PROCESSING', 'FAILED')
RETURNING id;

-- name: dlq_list
SELECT id, name, attempts, dead_lettered_at, error_details ->> 'error' AS error,
  xnovu_ledger_pruned_at AS ledger_pruned_at
FROM notify.ent_notification
WHERE dead_lettered_at IS NOT NULL AND notification_status = 'FAILED'
ORDER BY dead_lettered_at, id
LIMIT $1;

-- name: dlq_requeue
-- Back to PENDING with fresh attempts; the delivery ledger stays, so acknowledged recipients are not re-sent. A row
-- whose ledger the prune removed (xnovu_ledger_pruned_at, docs/retention.md) would be sent to every recipient again:
-- only when forced ($2). The condition is on the row itself, so a prune that removes the ledger concurrently (it holds
-- the row's lock until it commits, with the mark) is seen: the update waits for it and then skips the row.
UPDATE notify.ent_notification
SET notification_status = 'PENDING', attempts = 0, dead_lettered_at = NULL, next_attempt_at = NULL,
    xnovu_ledger_pruned_at = NULL
WHERE id = ANY($1::bigint[]) AND dead_lettered_at IS NOT NULL AND notification_status = 'FAILED'
  AND (xnovu_ledger_pruned_at IS NULL OR $2::bool)
RETURNING id;

-- name: dlq_ledger_pruned
-- Dead-lettered rows among $1 whose delivery ledger was pruned, and when.
SELECT id, xnovu_ledger_pruned_at AS pruned_at FROM notify.ent_notification
WHERE id = ANY($1::bigint[]) AND dead_lettered_at IS NOT NULL AND notification_status = 'FAILED'
  AND xnovu_ledger_pruned_at IS NOT NULL
ORDER BY id;

-- name: wakeup_switch
-- The database's wake-up switch (migration 0007; README "Operations → Wake-ups"): whether the triggers pg_notify.
SELECT s.notify, s.changed_at, s.changed_by FROM notify.xnovu_wakeup_switch s WHERE s.id;

-- name: wakeup_switch_set
-- Holds for every session from this commit on: the triggers read the row at each statement.
INSERT INTO notify.xnovu_wakeup_switch AS s (id, notify, changed_at, changed_by)
VALUES (true, $1, now(), current_user)
ON CONFLICT (id) DO UPDATE SET notify = EXCLUDED.notify, changed_at = EXCLUDED.changed_at,
  changed_by = EXCLUDED.changed_by
RETURNING s.notify, s.changed_at, s.changed_by;

-- name: priority_order
-- Which way typ_notification_priority.sort_order points and which is normal (migration 0011; docs/priority.md), and
-- how many priorities wait for their queued rows' urgency to be recomputed.
SELECT o.higher_first, o.normal_sort_order, o.changed_at, o.changed_by,
  (SELECT count(*) FROM notify.typ_notification_priority) AS priorities,
  (SELECT count(*) FROM notify.xnovu_priority_recompute) AS pending
FROM notify.xnovu_priority_order o WHERE o.id;

-- name: priority_order_set
-- From this commit on, rows inserted or given a priority get their urgency by the new rule (the row triggers read
-- this table); a changed rule marks every priority for priority_recompute_step (migration 0011's trigger).
INSERT INTO notify.xnovu_priority_order AS o (id, higher_first, normal_sort_order, changed_at, changed_by)
VALUES (true, $1, $2, now(), current_user)
ON CONFLICT (id) DO UPDATE SET higher_first = EXCLUDED.higher_first, normal_sort_order = EXCLUDED.normal_sort_order,
  changed_at = EXCLUDED.changed_at, changed_by = EXCLUDED.changed_by
RETURNING o.higher_first, o.normal_sort_order, o.changed_at, o.changed_by, 0::bigint AS priorities;

-- name: priority_recompute_step
-- One step of the recompute of a priority whose sort_order (or the rule) changed (migration 0011): the next $1 of
-- its queued rows in id order (ent_notification_priority_queued_idx) get the urgency of its current sort_order, in
-- this statement's own short transaction; the walk's position is saved, or the priority's mark dropped when the
-- walk is through. The mark is locked SKIP LOCKED, so workers running steps at once walk different priorities, and
-- an operator's transaction that marked it again (its walk starts over) is never waited for. updated_at is kept
-- (`xnovu.keep_updated_at`: a PENDING row's place in the queue). Returns the priority walked (NULL: nothing to do)
-- and how many rows changed urgency.
WITH job AS (
  SELECT r.priority_id, coalesce(r.after_id, -9223372036854775808) AS after_id
  FROM notify.xnovu_priority_recompute r ORDER BY r.marked_at, r.priority_id LIMIT 1 FOR UPDATE SKIP LOCKED
),
batch AS (
  SELECT n.id FROM notify.ent_notification n
  WHERE n.typ_notification_priority_id = (SELECT priority_id FROM job)
    AND n.notification_status IN ('PENDING', 'FAILED', 'PROCESSING')
    AND n.id > (SELECT after_id FROM job)
  ORDER BY n.typ_notification_priority_id, n.id LIMIT $1
),
level AS (
  SELECT coalesce(notify.xnovu_urgency(p.sort_order), 0) AS level, set_config('xnovu.keep_updated_at', 'on', true)
  FROM job LEFT JOIN notify.typ_notification_priority p ON p.id = job.priority_id
),
changed AS (
  UPDATE notify.ent_notification n SET xnovu_priority = level.level
  FROM batch, level
  WHERE n.id = batch.id AND n.xnovu_priority IS DISTINCT FROM level.level
  RETURNING n.id
),
moved AS (
  UPDATE notify.xnovu_priority_recompute r SET after_id = (SELECT max(id) FROM batch)
  FROM job WHERE r.priority_id = job.priority_id AND (SELECT count(*) FROM batch) >= $1
),
done AS (
  DELETE FROM notify.xnovu_priority_recompute r
  USING job WHERE r.priority_id = job.priority_id AND (SELECT count(*) FROM batch) < $1
)
SELECT (SELECT priority_id FROM job) AS priority, (SELECT count(*) FROM changed) AS changed;

-- Retention (docs/retention.md): the prune of xnovu's own records of notifications that ended long ago. A
-- notification has ended when it is SENT, RETRACTED, or FAILED and dead-lettered (the predicate of the index of
-- 0016_retention_index.sql, repeated as is so the planner uses it); how long ago is its updated_at, which every
-- change of the row moves. Every statement below is one short batch; none holds a lock anyone else waits for.

-- name: retention_lease
-- The prune lease (one row, migration 0016): take it for a new run when free or when its holder stopped
-- heartbeating $1 s ago. Locks the row for the transaction that records the new run.
INSERT INTO notify.xnovu_retention_state AS s (id) VALUES (true)
ON CONFLICT (id) DO UPDATE SET run_id = s.run_id
RETURNING s.run_id, s.heartbeat_at,
  (s.run_id IS NULL OR s.heartbeat_at IS NULL OR s.heartbeat_at < now() - make_interval(secs => $1::float8)) AS free;

-- name: retention_run_begin
-- A new run: its cutoffs are fixed now (RETENTION_DAYS $2, RETENTION_NOTIFICATION_DAYS $3 or NULL), so every step
-- of the run prunes the same window; the lease is its from this transaction on. Runs an earlier prune left
-- unfinished (its worker died, its workflow was terminated) are closed as abandoned.
WITH run AS (
  INSERT INTO notify.xnovu_prune_run (source, cutoff, notification_cutoff)
  VALUES ($1, now() - make_interval(days => $2::int),
          CASE WHEN $3::int IS NOT NULL THEN now() - make_interval(days => $3::int) END)
  RETURNING *
), lease AS (
  UPDATE notify.xnovu_retention_state s SET run_id = (SELECT id FROM run), heartbeat_at = now() WHERE s.id
), abandoned AS (
  UPDATE notify.xnovu_prune_run p SET finished_at = now(), error = 'abandoned: its prune stopped heartbeating'
  WHERE p.finished_at IS NULL AND p.id < (SELECT id FROM run)
)
SELECT * FROM run;

-- name: retention_lease_renew
-- At the start of each batch: the run $1 still holds the lease (or takes it back if nobody else took it after it
-- lapsed, $2 s), and where the ledger pass stopped.
UPDATE notify.xnovu_retention_state s SET run_id = $1, heartbeat_at = now()
WHERE s.id AND (s.run_id = $1 OR s.run_id IS NULL OR s.heartbeat_at IS NULL
                OR s.heartbeat_at < now() - make_interval(secs => $2::float8))
RETURNING s.ledger_after_updated_at, s.ledger_after_id;

-- name: retention_run
SELECT * FROM notify.xnovu_prune_run WHERE id = $1;

-- name: retention_last_run
SELECT * FROM notify.xnovu_prune_run ORDER BY id DESC LIMIT 1;

-- name: retention_run_add
-- One batch's rows ($2 ledger, $3 rule fires, $4 budget rows, $5 notifications, $6 prune records), in the batch's
-- transaction, and how long the batch took ($7 ms).
UPDATE notify.xnovu_prune_run
SET deliveries = deliveries + $2, rule_fires = rule_fires + $3, budget_rows = budget_rows + $4,
    notifications = notifications + $5, prune_runs = prune_runs + $6, batches = batches + 1,
    longest_batch_ms = greatest(longest_batch_ms, $7::int)
WHERE id = $1;

-- name: retention_run_finish
-- The run ends ($2: why it stopped early, or NULL) and gives the lease back.
WITH run AS (
  UPDATE notify.xnovu_prune_run SET finished_at = now(), error = $2 WHERE id = $1 RETURNING *
), lease AS (
  UPDATE notify.xnovu_retention_state s SET run_id = NULL, heartbeat_at = NULL WHERE s.id AND s.run_id = $1
)
SELECT * FROM run;

-- name: retention_ledger_candidates
-- The next $4 ended notifications after ($1, $2) in (updated_at, id) order, up to the cutoff $3: one range of the
-- terminal index, so nothing inside the retention window and nothing already pruned is read.
SELECT n.id, n.updated_at, n.notification_status = 'FAILED' AS dead
FROM notify.ent_notification n
WHERE (n.notification_status IN ('SENT', 'RETRACTED')
       OR (n.notification_status = 'FAILED' AND n.dead_lettered_at IS NOT NULL))
  AND n.updated_at < $3
  AND (n.updated_at, n.id) > (coalesce($1::timestamptz, '-infinity'), coalesce($2::bigint, 0))
ORDER BY n.updated_at, n.id
LIMIT $4;

-- name: retention_lock_dead
-- The dead-lettered ones among the candidates $1, still dead-lettered and ended before $2, locked until the batch
-- commits: a `dlq requeue` of one of them waits for the batch, then finds the mark (dlq_requeue). One being
-- changed right now is skipped (SKIP LOCKED): the batch does not wait for anybody.
SELECT n.id FROM notify.ent_notification n
WHERE n.id = ANY($1::bigint[]) AND n.notification_status = 'FAILED' AND n.dead_lettered_at IS NOT NULL
  AND n.updated_at < $2
FOR SHARE OF n SKIP LOCKED;

-- name: retention_still_dead
-- Of the dead-lettered candidates $1 the batch could not lock, those still dead-lettered and ended before $2 (a
-- requeue moved the others on: they come back in order when they end again).
SELECT n.id FROM notify.ent_notification n
WHERE n.id = ANY($1::bigint[]) AND n.notification_status = 'FAILED' AND n.dead_lettered_at IS NOT NULL
  AND n.updated_at < $2;

-- name: retention_ledger_delete
-- Up to $2 ledger rows of the notifications $1 (by the ledger's primary key), counted per notification.
WITH gone AS (
  DELETE FROM notify.ent_notification_delivery d
  WHERE d.ctid = ANY(ARRAY(SELECT x.ctid FROM notify.ent_notification_delivery x
                           WHERE x.notification_id = ANY($1::bigint[]) LIMIT $2))
  RETURNING d.notification_id
)
SELECT notification_id, count(*) AS n FROM gone GROUP BY notification_id;

-- name: retention_ledger_remaining
-- Which of the notifications $1 still have ledger rows (after a batch that hit its limit).
SELECT c.id FROM unnest($1::bigint[]) AS c(id)
WHERE EXISTS (SELECT 1 FROM notify.ent_notification_delivery d WHERE d.notification_id = c.id);

-- name: retention_mark_ledger_pruned
-- Dead-lettered rows $1 whose ledger rows this batch deleted: a requeue must not resend to everyone unasked.
-- updated_at is kept (`xnovu.keep_updated_at`, migration 0011): the mark does not make the row younger.
WITH keep AS (SELECT set_config('xnovu.keep_updated_at', 'on', true))
UPDATE notify.ent_notification n SET xnovu_ledger_pruned_at = coalesce(n.xnovu_ledger_pruned_at, now())
FROM keep
WHERE n.id = ANY($1::bigint[]);

-- name: retention_watermark
-- The ledger pass is done up to the ended notification ($1, $2): the next batch starts after it.
UPDATE notify.xnovu_retention_state SET ledger_after_updated_at = $1, ledger_after_id = $2 WHERE id;

-- name: retention_rule_fires_delete
-- Up to $2 rule fires scheduled and made before the cutoff $1, except the latest of each rule (`xnovu rules list`
-- shows it as the last fire). Rules are found by a skip scan of the fires' primary key and each rule's fires by a
-- range of it, so the statement reads the fires it deletes plus one probe per rule.
WITH RECURSIVE rules(id) AS (
  (SELECT f.rule_id FROM notify.xnovu_rule_fire f ORDER BY f.rule_id LIMIT 1)
  UNION ALL
  SELECT (SELECT f.rule_id FROM notify.xnovu_rule_fire f WHERE f.rule_id > r.id ORDER BY f.rule_id LIMIT 1)
  FROM rules r WHERE r.id IS NOT NULL
), doomed AS (
  SELECT x.ctid FROM rules r CROSS JOIN LATERAL (
    SELECT f.ctid FROM notify.xnovu_rule_fire f
    WHERE f.rule_id = r.id AND f.scheduled_time < $1 AND f.fired_at < $1
      AND f.scheduled_time < (SELECT max(l.scheduled_time) FROM notify.xnovu_rule_fire l WHERE l.rule_id = r.id)
    ORDER BY f.scheduled_time LIMIT $2
  ) x
  WHERE r.id IS NOT NULL
  LIMIT $2
)
DELETE FROM notify.xnovu_rule_fire f WHERE f.ctid = ANY(ARRAY(SELECT ctid FROM doomed));

-- name: retention_budget_delete
-- Token-budget buckets unused since the cutoff $1 (a bucket a worker needs again is recreated full: it would have
-- refilled long ago).
DELETE FROM notify.xnovu_rate_budget WHERE updated_at < $1;

-- name: retention_notifications_delete
-- Up to $2 notifications that ended before $1 (only when asked: RETENTION_NOTIFICATION_DAYS or `xnovu db prune
-- --notifications`), the oldest first; a row someone is changing right now is skipped. Their ledger is gone by now
-- (the ledger pass runs first, with a later cutoff); their rule fires keep the fire and forget the notification
-- (ON DELETE SET NULL, through the index of 0008_scale_indexes.sql).
DELETE FROM notify.ent_notification n
WHERE n.id = ANY(ARRAY(
    SELECT x.id FROM notify.ent_notification x
    WHERE (x.notification_status IN ('SENT', 'RETRACTED')
           OR (x.notification_status = 'FAILED' AND x.dead_lettered_at IS NOT NULL))
      AND x.updated_at < $1
    ORDER BY x.updated_at, x.id
    LIMIT $2
    FOR UPDATE OF x SKIP LOCKED))
  AND (n.notification_status IN ('SENT', 'RETRACTED')
       OR (n.notification_status = 'FAILED' AND n.dead_lettered_at IS NOT NULL))
  AND n.updated_at < $1;

-- name: retention_runs_delete
-- Prune records older than the cutoff $1, never the running one $2.
DELETE FROM notify.xnovu_prune_run WHERE started_at < $1 AND id < $2;

-- name: retention_preview
-- What a prune with these cutoffs ($1 now − RETENTION_DAYS, $2 notifications' or NULL) would remove, from where the
-- ledger pass stopped ($3, $4): `xnovu db prune --dry-run`. Reads what it counts (and no more).
WITH ended AS (
  SELECT n.id FROM notify.ent_notification n
  WHERE (n.notification_status IN ('SENT', 'RETRACTED')
         OR (n.notification_status = 'FAILED' AND n.dead_lettered_at IS NOT NULL))
    AND n.updated_at < $1
    AND (n.updated_at, n.id) > (coalesce($3::timestamptz, '-infinity'), coalesce($4::bigint, 0))
), ledger AS (
  SELECT d.notification_id, count(*) AS n FROM ended e
  JOIN notify.ent_notification_delivery d ON d.notification_id = e.id
  GROUP BY d.notification_id
)
SELECT
  (SELECT coalesce(sum(n), 0) FROM ledger)::bigint AS deliveries,
  (SELECT count(*) FROM ledger) AS ledger_notifications,
  (SELECT count(*) FROM notify.xnovu_rule_fire f
   WHERE f.scheduled_time < $1 AND f.fired_at < $1
     AND f.scheduled_time < (SELECT max(l.scheduled_time) FROM notify.xnovu_rule_fire l WHERE l.rule_id = f.rule_id))
    AS rule_fires,
  (SELECT count(*) FROM notify.xnovu_rate_budget WHERE updated_at < $1) AS budget_rows,
  CASE WHEN $2::timestamptz IS NOT NULL THEN
    (SELECT count(*) FROM notify.ent_notification n
     WHERE (n.notification_status IN ('SENT', 'RETRACTED')
            OR (n.notification_status = 'FAILED' AND n.dead_lettered_at IS NOT NULL))
       AND n.updated_at < $2)
  END AS notifications,
  (SELECT count(*) FROM notify.xnovu_prune_run WHERE started_at < $1) AS prune_runs;

-- name: retention_cutoffs
-- The cutoffs a run begun now would use: RETENTION_DAYS $1, RETENTION_NOTIFICATION_DAYS $2 or NULL; and where the
-- ledger pass stopped.
SELECT now() - make_interval(days => $1::int) AS cutoff,
  CASE WHEN $2::int IS NOT NULL THEN now() - make_interval(days => $2::int) END AS notification_cutoff,
  (SELECT s.ledger_after_updated_at FROM notify.xnovu_retention_state s WHERE s.id) AS after_updated_at,
  (SELECT s.ledger_after_id FROM notify.xnovu_retention_state s WHERE s.id) AS after_id;

-- name: table_sizes
-- The size of xnovu's tables for /status, from the catalogue: the planner's row estimate (as of the last
-- (auto)vacuum or analyze; NULL before the first) and the bytes on disk with indexes and TOAST. No table is read.
SELECT c.relname AS name, CASE WHEN c.reltuples < 0 THEN NULL ELSE c.reltuples::bigint END AS rows_estimate,
  pg_total_relation_size(c.oid) AS bytes
FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
WHERE n.nspname = 'notify' AND c.relkind IN ('r', 'p') AND c.relname = ANY($1::text[])
ORDER BY c.relname;

-- name: status_counts
SELECT notification_status::text AS status, count(*) AS n FROM notify.ent_notification GROUP BY 1;

-- name: dead_letter_count
SELECT count(*) FROM notify.ent_notification WHERE dead_lettered_at IS NOT NULL AND notification_status = 'FAILED';

-- name: observability_sample
-- The database gauges of /metrics in one round trip (README "Observability"): dead-letter rows, PROCESSING rows
-- whose lease ran out (and how long ago the oldest did), and the shared Novu budget refilled to now
-- ($1 bucket name, $2 rate, $3 capacity; NULL before the first request creates the row).
SELECT
  (SELECT count(*) FROM notify.ent_notification
    WHERE dead_lettered_at IS NOT NULL AND notification_status = 'FAILED') AS dead_lettered,
  l.expired AS leases_expired,
  coalesce(EXTRACT(EPOCH FROM now() - l.oldest)::float8, 0) AS lease_overrun_s,
  (SELECT LEAST($3::float8, b.tokens + EXTRACT(EPOCH FROM clock_timestamp() - b.updated_at) * $2::float8)
    FROM notify.xnovu_rate_budget b WHERE b.name = $1) AS budget_tokens
FROM (
  SELECT count(*) AS expired, min(next_attempt_at) AS oldest FROM notify.ent_notification
  WHERE notification_status = 'PROCESSING' AND dead_lettered_at IS NULL AND next_attempt_at < now()
) l;

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
  (name, publish_status, notification_workflow_id, payload, recipients, scheduled_for, enterprise_id,
   typ_notification_priority_id)
SELECT u.name, u.publish_status::shared_types.publish_status, $1, u.payload::jsonb,
       string_to_array(u.recipients, ',')::uuid[], u.scheduled_for, $7::uuid, u.priority_id
FROM unnest($2::text[], $3::text[], $4::text[], $5::text[], $6::timestamptz[], $8::bigint[])
  AS u(name, publish_status, payload, recipients, scheduled_for, priority_id)
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

-- Rules (README "Rules"): trigger_type and statuses are compared as text so an existing schema that typed them
-- differently (text, another enum) works unchanged.

-- name: rules_all
SELECT r.id, r.name, r.publish_status::text AS publish_status, r.deactivated, r.trigger_type::text AS trigger_type,
  r.trigger_config, r.rule_payload, r.enterprise_id::text AS enterprise_id, r.business_id::text AS business_id,
  r.notification_workflow_id AS workflow_id, w.workflow_key,
  w.publish_status::text AS workflow_publish_status, w.deactivated AS workflow_deactivated
FROM notify.ent_notification_rule r
LEFT JOIN notify.ent_notification_workflow w ON w.id = r.notification_workflow_id
ORDER BY r.id;

-- name: rule_one
SELECT r.id, r.name, r.publish_status::text AS publish_status, r.deactivated, r.trigger_type::text AS trigger_type,
  r.trigger_config, r.rule_payload, r.enterprise_id::text AS enterprise_id, r.business_id::text AS business_id,
  r.notification_workflow_id AS workflow_id, w.workflow_key,
  w.publish_status::text AS workflow_publish_status, w.deactivated AS workflow_deactivated
FROM notify.ent_notification_rule r
LEFT JOIN notify.ent_notification_workflow w ON w.id = r.notification_workflow_id
WHERE r.id = $1;

-- name: rule_fire_claim
-- The dedup key of a fire; the caller's transaction inserts the notification only when this returns a row.
INSERT INTO notify.xnovu_rule_fire (rule_id, scheduled_time) VALUES ($1, $2)
ON CONFLICT DO NOTHING
RETURNING rule_id;

-- name: rule_fire_existing
SELECT notification_id FROM notify.xnovu_rule_fire WHERE rule_id = $1 AND scheduled_time = $2;

-- name: rule_fire_insert_notification
-- One PENDING, published notification built from rule $1: workflow, enterprise, business and channels from the
-- rule and its workflow; name $2, payload $3, recipients $4, overrides $5 from the (validated) rule payload.
INSERT INTO notify.ent_notification
  (name, publish_status, notification_workflow_id, payload, recipients, channels, overrides,
   enterprise_id, business_id, notification_rule_id)
SELECT $2, 'PUBLISH', r.notification_workflow_id, $3::jsonb, $4::uuid[], w.default_channels, $5::jsonb,
  r.enterprise_id, r.business_id, r.id
FROM notify.ent_notification_rule r
JOIN notify.ent_notification_workflow w ON w.id = r.notification_workflow_id
WHERE r.id = $1
RETURNING id;

-- name: rule_fire_link
UPDATE notify.xnovu_rule_fire SET notification_id = $3 WHERE rule_id = $1 AND scheduled_time = $2;

-- name: rule_sync_record
-- The outcome of one sync for many rules at once (one element per rule).
INSERT INTO notify.xnovu_rule_sync (rule_id, schedule_state, problem, synced_at)
SELECT u.rule_id, u.state, u.problem, now()
FROM unnest($1::bigint[], $2::text[], $3::text[]) AS u(rule_id, state, problem)
ON CONFLICT (rule_id) DO UPDATE
SET schedule_state = excluded.schedule_state, problem = excluded.problem, synced_at = excluded.synced_at;

-- name: rule_sync_known
SELECT rule_id FROM notify.xnovu_rule_sync;

-- name: rule_sync_forget
DELETE FROM notify.xnovu_rule_sync WHERE rule_id = ANY($1::bigint[]);

-- name: rules_sync_states
SELECT s.rule_id, s.schedule_state, s.problem, s.synced_at,
  (SELECT max(f.scheduled_time) FROM notify.xnovu_rule_fire f WHERE f.rule_id = s.rule_id) AS last_fire
FROM notify.xnovu_rule_sync s;

-- name: rules_status
SELECT
  (SELECT count(*) FROM notify.ent_notification_rule WHERE trigger_type::text = 'CRON') AS cron_rules,
  (SELECT count(*) FROM notify.xnovu_rule_sync WHERE schedule_state = 'active') AS active,
  (SELECT count(*) FROM notify.xnovu_rule_sync WHERE schedule_state = 'paused') AS paused,
  (SELECT max(synced_at) FROM notify.xnovu_rule_sync) AS last_sync;

-- name: rules_problems
SELECT s.rule_id, r.name, s.problem FROM notify.xnovu_rule_sync s
JOIN notify.ent_notification_rule r ON r.id = s.rule_id
WHERE s.problem IS NOT NULL ORDER BY s.rule_id LIMIT $1;

-- name: insert_rule
-- Used by `xnovu dev --demo` and the tests: a rule, unless one with that name (and enterprise) exists.
WITH existing AS (
  SELECT id FROM notify.ent_notification_rule WHERE name = $1 AND enterprise_id IS NOT DISTINCT FROM $7::uuid
), inserted AS (
  INSERT INTO notify.ent_notification_rule
    (name, notification_workflow_id, trigger_type, trigger_config, rule_payload, publish_status, enterprise_id,
     business_id)
  SELECT $1, $2, $3::text::shared_types.notification_trigger_type, $4::jsonb, $5::jsonb,
    $6::text::shared_types.publish_status, $7::uuid, $8::uuid
  WHERE NOT EXISTS (SELECT 1 FROM existing)
  RETURNING id
)
SELECT id FROM inserted UNION ALL SELECT id FROM existing;

-- name: due_backlog
-- The due backlog by (urgency, enterprise) for /status and /metrics (docs/priority.md "Operating it"): rows a
-- claim could take now (PENDING and due, or FAILED with their retry due; not held), counted with the oldest due time
-- of each group. Bounded whatever the table: each part reads at most $1 rows in due order through its own partial
-- index (the claims' *_idx3 and retry indexes for every urgency; 0013's for urgent rows only, the highest urgency
-- first, so an urgent row behind a normal backlog of millions, or behind a big backlog of a lower urgency, is still
-- seen), and a row read by two parts counts once. `capped` says a part
-- stopped at $1: the counts are then those of the oldest rows read, and the oldest due times stay exact.
-- PENDING rows of a held workflow are out of their indexes once the hold sweep marked them (held_at); FAILED rows
-- are not marked, so the retry parts check what candidates_failed checks (the row published and active, its
-- workflow not DRAFT/NONE nor deactivated): a retry no claim may take must not page as an urgent row waiting. The
-- held workflows (few) come as one array, a filter on each index scan: as a join (NOT EXISTS) the planner hashed
-- the workflows and read every due retry, then sorted, instead of stopping at $1 in the index's order.
WITH held AS (
  SELECT ARRAY(SELECT w.id FROM notify.ent_notification_workflow w
               WHERE w.deactivated IS TRUE OR w.publish_status IN ('DRAFT', 'NONE')) AS ids
), parts AS (
  (SELECT n.id, n.xnovu_priority AS urgency, n.enterprise_id, n.updated_at AS due, 'new' AS part
   FROM notify.ent_notification n
   WHERE n.notification_status = 'PENDING' AND n.publish_status = 'PUBLISH' AND n.deactivated IS NOT TRUE
     AND n.scheduled_for IS NULL AND n.held_at IS NULL AND (n.next_attempt_at IS NULL OR n.next_attempt_at <= now())
   ORDER BY n.updated_at, n.id LIMIT $1)
  UNION ALL
  (SELECT n.id, n.xnovu_priority, n.enterprise_id, n.scheduled_for, 'scheduled'
   FROM notify.ent_notification n
   WHERE n.notification_status = 'PENDING' AND n.publish_status = 'PUBLISH' AND n.deactivated IS NOT TRUE
     AND n.scheduled_for IS NOT NULL AND n.scheduled_for <= now() AND n.held_at IS NULL
     AND (n.next_attempt_at IS NULL OR n.next_attempt_at <= now())
   ORDER BY n.scheduled_for, n.id LIMIT $1)
  UNION ALL
  (SELECT n.id, n.xnovu_priority, n.enterprise_id, n.next_attempt_at, 'failed'
   FROM notify.ent_notification n
   WHERE n.notification_status = 'FAILED' AND n.dead_lettered_at IS NULL AND n.next_attempt_at <= now()
     AND n.publish_status = 'PUBLISH' AND n.deactivated IS NOT TRUE AND n.held_at IS NULL
     AND (n.notification_workflow_id IS NULL OR n.notification_workflow_id <> ALL((SELECT ids FROM held)::bigint[]))
   ORDER BY n.next_attempt_at, n.id LIMIT $1)
  UNION ALL
  (SELECT n.id, n.xnovu_priority, n.enterprise_id, n.updated_at, 'urgent-new'
   FROM notify.ent_notification n
   WHERE n.xnovu_priority > 0 AND n.notification_status = 'PENDING' AND n.publish_status = 'PUBLISH'
     AND n.deactivated IS NOT TRUE AND n.scheduled_for IS NULL AND n.held_at IS NULL
     AND (n.next_attempt_at IS NULL OR n.next_attempt_at <= now())
   ORDER BY n.xnovu_priority DESC, n.updated_at, n.id LIMIT $1)
  UNION ALL
  (SELECT n.id, n.xnovu_priority, n.enterprise_id, n.scheduled_for, 'urgent-scheduled'
   FROM notify.ent_notification n
   WHERE n.xnovu_priority > 0 AND n.notification_status = 'PENDING' AND n.publish_status = 'PUBLISH'
     AND n.deactivated IS NOT TRUE AND n.scheduled_for IS NOT NULL AND n.scheduled_for <= now() AND n.held_at IS NULL
     AND (n.next_attempt_at IS NULL OR n.next_attempt_at <= now())
   ORDER BY n.xnovu_priority DESC, n.scheduled_for, n.id LIMIT $1)
  UNION ALL
  (SELECT n.id, n.xnovu_priority, n.enterprise_id, n.next_attempt_at, 'urgent-failed'
   FROM notify.ent_notification n
   WHERE n.xnovu_priority > 0 AND n.notification_status = 'FAILED' AND n.dead_lettered_at IS NULL
     AND n.publish_status = 'PUBLISH' AND n.deactivated IS NOT TRUE AND n.held_at IS NULL
     AND n.next_attempt_at <= now()
     AND n.publish_status = 'PUBLISH' AND n.deactivated IS NOT TRUE AND n.held_at IS NULL
     AND (n.notification_workflow_id IS NULL OR n.notification_workflow_id <> ALL((SELECT ids FROM held)::bigint[]))
   ORDER BY n.xnovu_priority DESC, n.next_attempt_at, n.id LIMIT $1)
), capped AS (
  SELECT coalesce(bool_or(c.n >= $1), false) AS capped FROM (SELECT count(*) AS n FROM parts GROUP BY part) c
), rows AS (
  SELECT DISTINCT ON (id) urgency, enterprise_id, due FROM parts ORDER BY id
)
SELECT r.urgency, r.enterprise_id::text AS enterprise_id, count(*) AS n,
  greatest(0, EXTRACT(EPOCH FROM now() - min(r.due)))::float8 AS oldest_s, (SELECT capped FROM capped) AS capped
FROM rows r
GROUP BY r.urgency, r.enterprise_id;

-- name: fleet_beat
-- A worker's heartbeat (xnovu/worker/fleet.py): its row in the fleet (migration 0017) is written or refreshed, with
-- the database's clock, and the rows of workers not seen for $8 ms are deleted, $9 at most and SKIP LOCKED (the
-- beats of several workers never wait for each other). One statement, nothing kept in the session: works behind a
-- transaction pooler. A worker whose row was pruned while it was stalled writes it again.
WITH beat AS (
  INSERT INTO notify.xnovu_worker AS w (id, namespace, task_queue, workflow_slots, enterprise_id, wakeups, version)
  VALUES ($1, $2, $3, $4, $5, $6, $7)
  ON CONFLICT (id) DO UPDATE SET seen_at = now(), workflow_slots = EXCLUDED.workflow_slots
  RETURNING w.id
), gone AS (
  DELETE FROM notify.xnovu_worker w
  WHERE w.id IN (SELECT f.id FROM notify.xnovu_worker f
                 WHERE f.seen_at < now() - make_interval(secs => $8::float8 / 1000) AND f.id <> $1
                 ORDER BY f.seen_at LIMIT $9 FOR UPDATE SKIP LOCKED)
  RETURNING 1
)
SELECT (SELECT count(*) FROM beat) AS beat, (SELECT count(*) FROM gone) AS pruned;

-- name: fleet_leave
-- A stopping worker's slots stop counting at once (its row is gone before it drains).
DELETE FROM notify.xnovu_worker WHERE id = $1;

-- name: fleet_status
-- What /status shows of the fleet on namespace $1 and task queue $2: the workers seen within $3 ms and their slots,
-- and the rows of workers not seen since (dead or stopped without leaving), not yet pruned.
SELECT count(*) FILTER (WHERE f.seen_at > now() - make_interval(secs => $3::float8 / 1000)) AS workers,
  coalesce(sum(f.workflow_slots) FILTER (WHERE f.seen_at > now() - make_interval(secs => $3::float8 / 1000)), 0)
    ::int AS slots,
  count(*) FILTER (WHERE f.seen_at <= now() - make_interval(secs => $3::float8 / 1000)) AS unseen
FROM notify.xnovu_worker f
WHERE f.namespace = $1 AND f.task_queue = $2;
