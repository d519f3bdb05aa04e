-- Web intake: consent to hear from the organisation again, where a signature came from,
-- double opt-in (a signature waiting for its signer to follow the link in a confirmation
-- email), confirmation emails queued beside letters, and API idempotency keys.
-- The SQLite twin of this file has the same name under migrations/sqlite/.
-- Differs from SQLite: consent_contact is a BOOLEAN (SQLite has no such type, and holds an
-- INTEGER to 0 or 1 with a CHECK, which a BOOLEAN needs no more); integers are BIGINT.

-- Express consent (CASL) to be contacted again by the organisation: true only when the signer
-- ticked the box (or the API said so); never assumed.
ALTER TABLE signatures ADD COLUMN consent_contact BOOLEAN NOT NULL DEFAULT false;
-- Where the signer came from (a page, a partner's form), as the form or API reported it.
ALTER TABLE signatures ADD COLUMN referrer TEXT;
-- Double opt-in. A signature is awaiting confirmation while confirm_expires_at is set: it has
-- no letters yet, and is deleted once that time passes. Following the link clears it, sets
-- confirmed_at and creates the letters in the same transaction.
ALTER TABLE signatures ADD COLUMN confirm_token_hash TEXT;
ALTER TABLE signatures ADD COLUMN confirm_expires_at BIGINT;
ALTER TABLE signatures ADD COLUMN confirmed_at BIGINT;

CREATE UNIQUE INDEX signatures_confirm_token ON signatures (confirm_token_hash)
    WHERE confirm_token_hash IS NOT NULL;
CREATE INDEX signatures_awaiting ON signatures (confirm_expires_at)
    WHERE confirm_expires_at IS NOT NULL;

-- What a row of `letters` is: a letter to a target, or a confirmation email to the signer
-- (its target_id is `confirmation.<n>`, which no campaign target id can be). Workers claim
-- higher priorities first, so a supporter's confirmation never waits behind a backlog.
ALTER TABLE letters ADD COLUMN kind TEXT NOT NULL DEFAULT 'letter'
    CHECK (kind IN ('letter', 'confirmation'));
ALTER TABLE letters ADD COLUMN priority BIGINT NOT NULL DEFAULT 0;

-- One response per API key and Idempotency-Key: a retried request gets the same answer, a
-- different request under the same key is refused. Kept for a day.
CREATE TABLE idempotency_keys (
    api_key_hash TEXT NOT NULL,
    idempotency_key TEXT NOT NULL,
    request_hash TEXT NOT NULL,
    status BIGINT NOT NULL,
    body TEXT NOT NULL,
    created_at BIGINT NOT NULL,
    PRIMARY KEY (api_key_hash, idempotency_key)
);
