-- Runs once, when the postgres container initialises an empty data volume
-- (files in /docker-entrypoint-initdb.d are executed by psql as POSTGRES_USER).
--
--   xnovu                -> the notification outbox; `xnovu db migrate` creates schemas notify / shared_types
--   temporal             -> Temporal persistence   (temporalio/auto-setup also creates it if missing)
--   temporal_visibility  -> Temporal visibility    (idem)
--
-- CREATE DATABASE cannot run inside a DO block / transaction, so each statement is generated
-- only when the database is missing and executed with psql's \gexec: safe to run twice.

SELECT 'CREATE DATABASE xnovu'
WHERE NOT EXISTS (SELECT FROM pg_database WHERE datname = 'xnovu')\gexec

SELECT 'CREATE DATABASE temporal'
WHERE NOT EXISTS (SELECT FROM pg_database WHERE datname = 'temporal')\gexec

SELECT 'CREATE DATABASE temporal_visibility'
WHERE NOT EXISTS (SELECT FROM pg_database WHERE datname = 'temporal_visibility')\gexec
