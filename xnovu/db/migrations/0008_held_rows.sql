-- Held rows leave the claim indexes (docs/design.md "Held rows"): a PENDING row whose Novu workflow is DRAFT/NONE or
-- deactivated is marked with held_at by the hold sweep, and the claim indexes of 0008_scale_indexes.sql leave marked
-- rows out, so a claim never re-reads them under the claim lock. The mark is a hint only: every claim, acquire and
-- fence still checks the workflow (I1). A nullable column without a default: a catalog change, no table rewrite.
ALTER TABLE notify.ent_notification ADD COLUMN IF NOT EXISTS held_at timestamptz;
