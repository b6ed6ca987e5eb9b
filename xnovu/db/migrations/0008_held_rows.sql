-- Held rows leave the claim indexes (docs/design.md "Held rows"): a PENDING row whose Novu workflow is DRAFT/NONE or
-- deactivated is marked with held_at by the hold sweep, and the claim indexes of 0008_scale_indexes.sql leave marked
-- rows out, so a claim never re-reads them under the claim lock. The mark is a hint only: every claim, acquire and
-- fence still checks the workflow (I1). A nullable column without a default: a catalog change, no table rewrite.
ALTER TABLE notify.ent_notification ADD COLUMN IF NOT EXISTS held_at timestamptz;

-- The wake-up trigger of 0005_wakeups.sql joins the old and new rows of a statement (transition tables, which have
-- neither index nor statistics): planned as a nested loop, an update of n rows cost n² comparisons (20 000 rows of
-- one statement took 154 s). A hash join makes it linear (20 000 rows: 0.13 s).
ALTER FUNCTION notify.xnovu_wakeup_after_update() SET enable_nestloop = off;
