-- At most once with Novu's idempotency off (docs/design.md "Pieces, fencing tokens and unknown outcomes",
-- docs/novu-contract.md "Unknown outcomes"). Additive only and safe on a live database: nullable columns, or a
-- constant default (no table rewrite), each ALTER holding its lock for an instant.
--
-- ent_notification.xnovu_piece: the fencing token of the attempt's current piece. `acquire` increments it, and the
-- fence, the lease renewal, finalize and release require it unchanged, so a piece that a newer piece of the same
-- attempt replaced (a stalled worker resumed) sends nothing more.
ALTER TABLE notify.ent_notification ADD COLUMN IF NOT EXISTS xnovu_piece bigint NOT NULL DEFAULT 0;
-- When the current piece began, while it may have Novu requests on the wire; NULL once it ended normally. A piece
-- that finds its predecessor still open (crash, SIGTERM grace, stall) resolves what that one may have sent.
ALTER TABLE notify.ent_notification ADD COLUMN IF NOT EXISTS xnovu_piece_open_since timestamptz;
-- The predecessor's xnovu_piece_open_since, as `acquire` found it (an UPDATE returns only new values).
ALTER TABLE notify.ent_notification ADD COLUMN IF NOT EXISTS xnovu_previous_piece_open_since timestamptz;
-- Set when a request carrying the recipient goes out (the fence), and kept when Novu's answer was lost and its
-- activity feed could not say whether it processed the event; cleared by a definite outcome. A recipient not SENT
-- with this set has an unknown outcome: it is looked up in the feed before it is ever sent again.
ALTER TABLE notify.ent_notification_delivery ADD COLUMN IF NOT EXISTS unknown_since timestamptz;
