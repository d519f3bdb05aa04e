-- A letter's text lives beside its row, not in it: the row changes state several times on its
-- way (claimed, sending, sent), and SQLite rewrites a whole row at every change. With the
-- subject and bodies (several KB) in their own table, those writes stay small.
CREATE TABLE letter_bodies (
    letter_id INTEGER PRIMARY KEY REFERENCES letters (id) ON DELETE CASCADE,
    subject TEXT NOT NULL,
    body_text TEXT NOT NULL,
    body_html TEXT
);

INSERT INTO letter_bodies (letter_id, subject, body_text, body_html)
    SELECT id, subject, body_text, body_html FROM letters;

ALTER TABLE letters DROP COLUMN subject;
ALTER TABLE letters DROP COLUMN body_text;
ALTER TABLE letters DROP COLUMN body_html;
