-- Organisers' pauses: a whole campaign (target_id '') or one of its targets. While a pause
-- stands no worker claims the letters it covers; `missive resume` lifts it.
-- The SQLite twin of this file has the same name under migrations/sqlite/. Differs only in
-- created_at being BIGINT (INTEGER in SQLite).
CREATE TABLE pauses (
    campaign TEXT NOT NULL,
    target_id TEXT NOT NULL DEFAULT '',
    created_at BIGINT NOT NULL,
    PRIMARY KEY (campaign, target_id)
);
