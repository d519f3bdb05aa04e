-- A letter's text lives beside its row, not in it: the row changes state several times on its
-- way (claimed, sending, sent), and SQLite rewrites a whole row at every change. With the
-- subject and bodies (several KB) in their own table, those writes stay small.
-- The SQLite twin of this file has the same name under migrations/sqlite/.
-- PostgreSQL too writes a whole new version of a row at every UPDATE (only values it moved out
-- of line, TOAST, are shared between versions, and a text of a few KB often stays inline once
-- compressed), so the split serves it as well. Differs from SQLite: letter_id is a plain
-- BIGINT key, not an identity, since the queue writes it (its letter's id); and DROP COLUMN
-- only hides a column, whose values stay in the rows already written until each is next
-- rewritten (a new store has no letters at this point).
CREATE TABLE letter_bodies (
    letter_id BIGINT PRIMARY KEY REFERENCES letters (id) ON DELETE CASCADE,
    subject TEXT NOT NULL,
    body_text TEXT NOT NULL,
    body_html TEXT
);

INSERT INTO letter_bodies (letter_id, subject, body_text, body_html)
    SELECT id, subject, body_text, body_html FROM letters;

ALTER TABLE letters DROP COLUMN subject;
ALTER TABLE letters DROP COLUMN body_text;
ALTER TABLE letters DROP COLUMN body_html;
