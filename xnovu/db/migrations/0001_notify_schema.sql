-- The xnovu Supabase schema: enums in shared_types, tables in notify.
-- Creates only what is missing, so it is safe on a database that already has this schema.
CREATE SCHEMA IF NOT EXISTS shared_types;
CREATE SCHEMA IF NOT EXISTS notify;

DO $$ BEGIN
  CREATE TYPE shared_types.publish_status AS ENUM ('NONE', 'DRAFT', 'DISCARD', 'PUBLISH', 'DELETED');
EXCEPTION WHEN duplicate_object THEN NULL; END $$;
DO $$ BEGIN
  CREATE TYPE shared_types.notification_status AS ENUM ('PENDING', 'PROCESSING', 'SENT', 'FAILED', 'RETRACTED');
EXCEPTION WHEN duplicate_object THEN NULL; END $$;
DO $$ BEGIN
  CREATE TYPE shared_types.notification_channel_type AS ENUM ('IN_APP', 'EMAIL', 'SMS', 'CHAT', 'PUSH');
EXCEPTION WHEN duplicate_object THEN NULL; END $$;
DO $$ BEGIN
  CREATE TYPE shared_types.notification_workflow_type AS ENUM ('STATIC', 'DYNAMIC');
EXCEPTION WHEN duplicate_object THEN NULL; END $$;

CREATE TABLE IF NOT EXISTS notify.ent_notification_workflow (
  id bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
  name text NOT NULL,
  workflow_key text NOT NULL UNIQUE,
  workflow_type shared_types.notification_workflow_type NOT NULL DEFAULT 'STATIC',
  default_channels shared_types.notification_channel_type[] NOT NULL DEFAULT '{}',
  publish_status shared_types.publish_status NOT NULL DEFAULT 'DRAFT',
  deactivated boolean NOT NULL DEFAULT false,
  enterprise_id uuid,
  created_at timestamptz NOT NULL DEFAULT now(),
  updated_at timestamptz NOT NULL DEFAULT now()
);

CREATE TABLE IF NOT EXISTS notify.ent_notification (
  id bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
  name text NOT NULL,
  publish_status shared_types.publish_status NOT NULL DEFAULT 'DRAFT',
  deactivated boolean NOT NULL DEFAULT false,
  notification_workflow_id bigint NOT NULL REFERENCES notify.ent_notification_workflow (id),
  notification_status shared_types.notification_status NOT NULL DEFAULT 'PENDING',
  payload jsonb NOT NULL,
  recipients uuid[] NOT NULL,
  channels shared_types.notification_channel_type[],
  overrides jsonb,
  tags text[],
  transaction_id text,
  scheduled_for timestamptz,
  processed_at timestamptz,
  retracted_at timestamptz,
  retraction_reason text,
  error_details jsonb,
  enterprise_id uuid,
  created_at timestamptz NOT NULL DEFAULT now(),
  updated_at timestamptz NOT NULL DEFAULT now()
);
