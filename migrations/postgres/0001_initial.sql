-- The queue: signatures, the letters written in their name, and every attempt to send one.
-- Times are milliseconds since the Unix epoch (UTC). The SQLite twin of this file has the
-- same name under migrations/sqlite/.
--
-- Every file here does what its SQLite twin does, so a database migrated with all of them has
-- the same tables, columns, constraints and indexes (same names, same CHECK lists, the same
-- partial indexes). They also follow these conventions, so that one Rust row type decodes
-- both stores:
-- - every integer column is BIGINT: sqlx decodes a PostgreSQL INT4 only as i32, and Missive
--   reads i64 everywhere. Ids are BIGINT GENERATED ALWAYS AS IDENTITY where SQLite has
--   INTEGER PRIMARY KEY, except letter_bodies.letter_id, which the queue writes itself;
-- - times are milliseconds since the epoch in BIGINT columns, as in SQLite, and the Rust side
--   passes them: no timestamptz, no DEFAULT now();
-- - signatures.consent_contact is BOOLEAN NOT NULL DEFAULT false where SQLite has an INTEGER
--   held to 0 or 1 by a CHECK: sqlx binds a Rust bool to either.
--
-- Differs from SQLite: the ids are identities, so an INSERT naming one is refused (unless it
-- says OVERRIDING SYSTEM VALUE) and an id is never handed out twice, where SQLite may reuse
-- the largest rowid once its row is deleted.

CREATE TABLE signatures (
    id BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
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
    created_at BIGINT NOT NULL,
    UNIQUE (campaign, email_normalized)
);

CREATE TABLE letters (
    id BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    signature_id BIGINT NOT NULL REFERENCES signatures (id) ON DELETE CASCADE,
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
    attempts BIGINT NOT NULL DEFAULT 0,
    next_attempt_at BIGINT NOT NULL,
    lease_owner TEXT,
    lease_token BIGINT,
    lease_expires_at BIGINT,
    last_code BIGINT,
    last_enhanced_code TEXT,
    last_reply TEXT,
    sent_at BIGINT,
    queued_at BIGINT NOT NULL,
    created_at BIGINT NOT NULL,
    updated_at BIGINT NOT NULL,
    UNIQUE (signature_id, target_id)
);

-- Due letters, found without scanning the sent ones.
CREATE INDEX letters_due ON letters (next_attempt_at, id) WHERE state IN ('queued', 'deferred');
-- Leases to recover after a crash.
CREATE INDEX letters_leased ON letters (lease_expires_at) WHERE state IN ('claimed', 'sending');
-- Reports per campaign, target and state.
CREATE INDEX letters_report ON letters (campaign, target_id, state);

CREATE TABLE attempts (
    id BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    letter_id BIGINT NOT NULL REFERENCES letters (id) ON DELETE CASCADE,
    attempt BIGINT NOT NULL,
    worker TEXT NOT NULL,
    started_at BIGINT NOT NULL,
    finished_at BIGINT NOT NULL,
    duration_ms BIGINT NOT NULL,
    outcome TEXT NOT NULL,
    stage TEXT,
    code BIGINT,
    enhanced_code TEXT,
    reply TEXT
);

CREATE INDEX attempts_letter ON attempts (letter_id);
