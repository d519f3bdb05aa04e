-- `missive status` counts letters per campaign, target, state and kind, and finds the oldest
-- waiting one, in one pass over this index alone (covering: no table rows are read), so it stays
-- quick at a million letters. queued_at never changes while a letter moves between states, so
-- the wider entries cost the sending path nothing beyond their size.
-- The SQLite twin of this file has the same name under migrations/sqlite/. Nothing differs in
-- the index; but PostgreSQL's index-only scan skips the table only on pages the visibility map
-- marks all-visible (vacuumed since their last change), so on a busy queue it reads some rows.
DROP INDEX letters_report;
CREATE INDEX letters_report ON letters (campaign, target_id, state, kind, queued_at);
