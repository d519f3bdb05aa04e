-- Organisers' pauses: a whole campaign (target_id '') or one of its targets. While a pause
-- stands no worker claims the letters it covers; `missive resume` lifts it.
CREATE TABLE pauses (
    campaign TEXT NOT NULL,
    target_id TEXT NOT NULL DEFAULT '',
    created_at INTEGER NOT NULL,
    PRIMARY KEY (campaign, target_id)
);
