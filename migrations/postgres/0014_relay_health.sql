-- The relay's health as the workers last saw it: one row per relay (host:port), written when it
-- becomes unusable (a refused password, a TLS failure, every connection refused...), when the
-- fault or the next try changes, and when it accepts letters again. `missive status` shows it.
-- Letters are never failed for a fault of the relay's session; this row is where it is told.
-- The SQLite twin of this file has the same name under migrations/sqlite/. Differs from SQLite:
-- integers are BIGINT, and `relay` cannot be NULL (a PostgreSQL primary key never is; SQLite
-- lets a NULL into a TEXT primary key, which the queue never writes).
CREATE TABLE relay_health (
    relay TEXT PRIMARY KEY,
    state TEXT NOT NULL CHECK (state IN ('usable', 'unusable')),
    -- When it entered this state.
    since BIGINT NOT NULL,
    -- The last fault: where the session stopped, the relay's reply, and the fix when known.
    stage TEXT,
    code BIGINT,
    enhanced_code TEXT,
    reply TEXT,
    hint TEXT,
    -- While unusable: when a worker tries the relay again.
    retry_at BIGINT,
    worker TEXT NOT NULL,
    updated_at BIGINT NOT NULL
);
