-- Two facts of the claim that made a row PROCESSING (docs/design.md, I7). A nullable column without a default is a
-- catalog change, no table rewrite.
-- The key of the claim (the poll run and its claim activity): a claim that runs again under the same key (its
-- workflow task was lost after the claim, or its answer was cut off) returns the rows the first run claimed instead
-- of orphaning them.
ALTER TABLE notify.ent_notification ADD COLUMN IF NOT EXISTS xnovu_claim_key text;
-- The Novu tokens the claimed attempt will cost (about one per recipient): the in-flight sum that every claim reads
-- adds this number instead of counting the recipients array of every row in flight, which for a row of 100 000
-- recipients is a 1.6 MB TOAST read on every claim while it is being sent.
ALTER TABLE notify.ent_notification ADD COLUMN IF NOT EXISTS xnovu_claim_tokens int;
