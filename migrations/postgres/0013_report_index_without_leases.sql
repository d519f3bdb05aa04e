-- Indexes the sending path does not have to rewrite. Each letter passes through `claimed` and
-- `sending` within a second on its way to `sent`, and every one of those state changes moved
-- its entry to another part of the status index, and rewrote its entry in the lease index.
--
-- The status index leaves out letters a worker holds (`claimed`, `sending`): they are few (a
-- claim batch or so per worker), and `missive status` counts them through `letters_leased`.
--
-- The SQLite twin of this file has the same name under migrations/sqlite/. Nothing differs in
-- the indexes; but in PostgreSQL an UPDATE that changes `state` (which `letters_due` and
-- `letters_report` name) is never HOT, so it adds an entry for the new row version to every
-- index of `letters` whose WHERE the row meets, its key changed or not: the move from `claimed`
-- to `sending` still writes one to `letters_leased` (and to the primary key and the unique
-- indexes). Leaving claimed and sending letters out of `letters_report` holds as in SQLite.
DROP INDEX letters_report;
CREATE INDEX letters_report ON letters (campaign, target_id, state, kind, queued_at)
    WHERE state NOT IN ('claimed', 'sending');
-- The lease index holds the letters with a lease, which are exactly the `claimed` and `sending`
-- ones (a claim sets the lease; every move out of those states clears it), keyed by the lease
-- alone, so the move from `claimed` to `sending` leaves it untouched.
DROP INDEX letters_leased;
CREATE INDEX letters_leased ON letters (lease_expires_at) WHERE lease_expires_at IS NOT NULL;
