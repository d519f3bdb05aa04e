-- Workers claim due letters by priority (confirmation emails first), then due time, then id.
-- The index matches that order so a claim reads only the rows it takes, however long the queue.
-- The SQLite twin of this file has the same name under migrations/sqlite/. Nothing differs.
DROP INDEX letters_due;
CREATE INDEX letters_due ON letters (priority DESC, next_attempt_at, id)
    WHERE state IN ('queued', 'deferred');
