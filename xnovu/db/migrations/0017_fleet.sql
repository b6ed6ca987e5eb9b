-- The live fleet (docs/priority.md "Temporal's task queue"): one row per running worker, with the workflow task slots
-- it serves its task queue with, refreshed by the worker every few seconds (xnovu/worker/fleet.py). A claim caps the
-- rows in flight of each class at twice the slots of the workers seen lately on its task queue; before this table it
-- capped them at twice the slots of the one worker that claimed, so added workers added no send concurrency.
--
-- Every time is the database's (now() when a worker writes its row and when a claim reads it): a worker whose clock
-- is off neither ages out early nor lingers. A worker removes its row when it stops; a dead worker's row stops counting
-- once it has not been seen for a few heartbeats, and the heartbeats of the others delete it a while later.
--
-- Live-database safety (xnovu/db/migrate.py): a new small table, owned by xnovu, no index build, no user table
-- touched. Safe to run twice.
CREATE TABLE IF NOT EXISTS notify.xnovu_worker (
  id text PRIMARY KEY,
  namespace text NOT NULL,
  task_queue text NOT NULL,
  workflow_slots int NOT NULL CHECK (workflow_slots > 0),
  enterprise_id text,
  wakeups boolean NOT NULL,
  version text NOT NULL,
  started_at timestamptz NOT NULL DEFAULT now(),
  seen_at timestamptz NOT NULL DEFAULT now()
);
