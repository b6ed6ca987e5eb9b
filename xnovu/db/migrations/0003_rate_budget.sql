-- The deployment-wide Novu token budget (NOVU_RATE_LIMIT_RPS): one row per bucket that every worker draws from.
CREATE TABLE IF NOT EXISTS notify.xnovu_rate_budget (
  name text PRIMARY KEY,
  tokens double precision NOT NULL DEFAULT 0,
  updated_at timestamptz NOT NULL DEFAULT clock_timestamp()
);
