-- The queue: signatures, the letters written in their name, and every attempt to send one.
-- Times are milliseconds since the Unix epoch (UTC). The PostgreSQL twin of this file has the
-- same name under migrations/postgres/.

CREATE TABLE signatures (
    id INTEGER PRIMARY KEY,
    public_id TEXT NOT NULL UNIQUE,
    campaign TEXT NOT NULL,
    email TEXT NOT NULL,
    email_normalized TEXT NOT NULL,
    first_name TEXT NOT NULL,
    last_name TEXT NOT NULL,
    city TEXT,
    postal_code TEXT,
    country TEXT,
    language TEXT,
    message TEXT,
    source TEXT NOT NULL,
    created_at INTEGER NOT NULL,
    UNIQUE (campaign, email_normalized)
);

CREATE TABLE letters (
    id INTEGER PRIMARY KEY,
    signature_id INTEGER NOT NULL REFERENCES signatures (id) ON DELETE CASCADE,
    campaign TEXT NOT NULL,
    target_id TEXT NOT NULL,
    recipient TEXT NOT NULL,
    recipient_name TEXT NOT NULL,
    recipient_domain TEXT NOT NULL,
    from_name TEXT NOT NULL,
    from_address TEXT NOT NULL,
    reply_to TEXT NOT NULL,
    language TEXT NOT NULL,
    subject TEXT NOT NULL,
    body_text TEXT NOT NULL,
    body_html TEXT,
    template_hash TEXT NOT NULL,
    message_id TEXT NOT NULL UNIQUE,
    state TEXT NOT NULL CHECK (state IN ('queued', 'claimed', 'sending', 'sent', 'deferred',
        'failed', 'in_doubt', 'expired', 'held', 'cancelled')),
    attempts INTEGER NOT NULL DEFAULT 0,
    next_attempt_at INTEGER NOT NULL,
    lease_owner TEXT,
    lease_token INTEGER,
    lease_expires_at INTEGER,
    last_code INTEGER,
    last_enhanced_code TEXT,
    last_reply TEXT,
    sent_at INTEGER,
    queued_at INTEGER NOT NULL,
    created_at INTEGER NOT NULL,
    updated_at INTEGER NOT NULL,
    UNIQUE (signature_id, target_id)
);

-- Due letters, found without scanning the sent ones.
CREATE INDEX letters_due ON letters (next_attempt_at, id) WHERE state IN ('queued', 'deferred');
-- Leases to recover after a crash.
CREATE INDEX letters_leased ON letters (lease_expires_at) WHERE state IN ('claimed', 'sending');
-- Reports per campaign, target and state.
CREATE INDEX letters_report ON letters (campaign, target_id, state);

CREATE TABLE attempts (
    id INTEGER PRIMARY KEY,
    letter_id INTEGER NOT NULL REFERENCES letters (id) ON DELETE CASCADE,
    attempt INTEGER NOT NULL,
    worker TEXT NOT NULL,
    started_at INTEGER NOT NULL,
    finished_at INTEGER NOT NULL,
    duration_ms INTEGER NOT NULL,
    outcome TEXT NOT NULL,
    stage TEXT,
    code INTEGER,
    enhanced_code TEXT,
    reply TEXT
);

CREATE INDEX attempts_letter ON attempts (letter_id);
