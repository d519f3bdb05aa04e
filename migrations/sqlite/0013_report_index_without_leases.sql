-- The status index leaves out letters a worker holds (`claimed`, `sending`). Each letter passes
-- through both states within a second on its way to `sent`, and every state change moved its
-- entry to another part of the index: the sending path's transactions rewrote index pages for
-- claimed, sending and sent letters of every target. Held letters are few (at most a claim
-- batch per worker): `missive status` counts them through `letters_leased` instead.
DROP INDEX letters_report;
CREATE INDEX letters_report ON letters (campaign, target_id, state, kind, queued_at)
    WHERE state NOT IN ('claimed', 'sending');
