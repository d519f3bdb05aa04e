-- Limits held for every process sharing the queue, on the database's clock. The SQLite twin of
-- this file has the same name under migrations/sqlite/. Same tables and columns; BIGINT for
-- every integer.
--
-- A GCRA per limited thing (the relay's rate and burst, each campaign's own rate, the relay's
-- cool-down after it asked to slow down): the theoretical arrival time of the next letter, in
-- microseconds since the epoch. A worker reserves a few tokens at a time in one statement and
-- hands each letter over no sooner than its token's time (`worker/throttle.rs`).
CREATE TABLE throttles (
    key TEXT PRIMARY KEY,
    tat_us BIGINT NOT NULL
);

-- Pacing (each target's hourly budget, spacing and window, each receiving domain's cap) is
-- decided by one worker at a time, the leader, holding this lease until `expires_at`
-- (milliseconds, the database's clock) and renewing it while it runs: only the leader claims
-- paced letters. A leader that dies is replaced once its lease runs out.
CREATE TABLE leadership (
    role TEXT PRIMARY KEY,
    holder TEXT NOT NULL,
    expires_at BIGINT NOT NULL
);
