-- The relay's health as the workers last saw it: one row per relay (host:port), written when it
-- becomes unusable (a refused password, a TLS failure, every connection refused...), when the
-- fault or the next try changes, and when it accepts letters again. `missive status` shows it.
-- Letters are never failed for a fault of the relay's session; this row is where it is told.
CREATE TABLE relay_health (
    relay TEXT PRIMARY KEY,
    state TEXT NOT NULL CHECK (state IN ('usable', 'unusable')),
    -- When it entered this state.
    since INTEGER NOT NULL,
    -- The last fault: where the session stopped, the relay's reply, and the fix when known.
    stage TEXT,
    code INTEGER,
    enhanced_code TEXT,
    reply TEXT,
    hint TEXT,
    -- While unusable: when a worker tries the relay again.
    retry_at INTEGER,
    worker TEXT NOT NULL,
    updated_at INTEGER NOT NULL
);
