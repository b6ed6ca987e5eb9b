-- The key of the claim that made a row PROCESSING (the poll run and its claim activity): a claim that runs again
-- under the same key (its workflow task was lost after the claim, or its answer was cut off) returns the rows the
-- first run claimed instead of orphaning them (docs/design.md, I7). A nullable column without a default: a catalog
-- change, no table rewrite.
ALTER TABLE notify.ent_notification ADD COLUMN IF NOT EXISTS xnovu_claim_key text;
