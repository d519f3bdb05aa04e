#!/usr/bin/env python3
"""Reads Missive's letters back with an independent parser, Python's `email` package.

    python3 tests/python/check_letters.py DIR MANIFEST

DIR holds `.eml` files; MANIFEST is a JSON list with one entry per file:

    {"file": "01.eml",
     "from": {"name": "José Núñez", "address": "letters@example.org"},
     "reply_to": {"name": "José Núñez", "address": "jose@example.net"},
     "to": {"name": "President of the Republic", "address": "presidency@example.org"},
     "subject": "...", "message_id": "<1.test@example.org>",
     "text": "the plain-text body", "html": null}

Each file is parsed with `email.message_from_bytes(raw, policy=email.policy.default)` and
checked against its entry: the headers decode to exactly what the letter says, the text (and
HTML) part decodes to the letter's body, and the raw bytes keep the rules a message sent
without 8BITMIME must keep. One line per problem (`file: what: expected X, got Y`); exit 1 on
any problem, 0 with a summary line otherwise. Standard library only (Python 3.11).
"""

import email
import email.policy
import json
import re
import sys
from pathlib import Path

# RFC 5322 2.1.1: no line longer than 998 octets, CRLF excluded.
MAX_LINE = 998
# RFC 2047 2: a header line holding an encoded-word is at most 76 octets.
ENCODED_WORD_LINE = 76
ENCODED_WORD = re.compile(rb"=\?[^?\s]+\?[bBqQ]\?[^?\s]*\?=")


def one_line(s):
    """White space collapsed and trimmed: the writer folds a name or subject onto one line."""
    return " ".join(s.split())


def shown(value, limit=120):
    """A value in a problem line: repr, cut short so a 2,000-character body stays readable."""
    text = repr(value)
    return text if len(text) <= limit else text[:limit] + f"... ({len(value)} chars)"


def raw_lines(raw):
    """The raw message's lines, without their line breaks (CRLF, or LF alone)."""
    lines = raw.split(b"\n")
    if lines and lines[-1] == b"":
        lines.pop()
    return [line[:-1] if line.endswith(b"\r") else line for line in lines]


def check_raw(raw, problem):
    """Rules on the bytes themselves, before any parser forgives them."""
    in_headers = True
    for n, line in enumerate(raw_lines(raw), start=1):
        if len(line) > MAX_LINE:
            problem(f"line {n}", f"at most {MAX_LINE} octets", f"{len(line)} octets")
        if in_headers and line == b"":
            in_headers = False
        elif in_headers and ENCODED_WORD.search(line) and len(line) > ENCODED_WORD_LINE:
            problem(
                f"line {n}",
                f"a header line holding an encoded-word within {ENCODED_WORD_LINE} octets "
                "(RFC 2047 section 2)",
                f"{len(line)} octets: {shown(line.decode('ascii', 'replace'), 200)}",
            )
        eight_bit = next((i for i, b in enumerate(line) if b >= 0x80), None)
        if eight_bit is not None:
            problem(
                f"line {n}",
                "7-bit bytes only (the letters are sent without 8BITMIME)",
                f"byte {line[eight_bit]:#04x} at column {eight_bit + 1}: "
                f"{shown(line.decode('utf-8', 'replace'), 200)}",
            )


def check_defects(msg, problem):
    """What the parser had to repair or guess, in every part and every header."""
    for depth, part in enumerate(msg.walk()):
        where = "message" if depth == 0 else f"part {depth} ({part.get_content_type()})"
        for defect in part.defects:
            problem(where, "no defects", f"{type(defect).__name__}: {defect}")
        for name, value in part.items():
            for defect in getattr(value, "defects", ()):
                problem(f"{where}: {name}", "no defects", f"{type(defect).__name__}: {defect}")


def check_mailbox(msg, field, expected, problem):
    """`field` holds exactly one mailbox, with the expected display name and address."""
    header = msg[field]
    if header is None:
        problem(field, "the header", "none")
        return
    if len(msg.get_all(field)) != 1:
        problem(field, "one header", f"{len(msg.get_all(field))}")
    addresses = getattr(header, "addresses", ())
    if len(addresses) != 1:
        problem(field, "one mailbox", shown(str(header)))
        return
    got = addresses[0]
    if one_line(got.display_name) != one_line(expected["name"]):
        problem(f"{field} name", shown(one_line(expected["name"])), shown(got.display_name))
    if got.addr_spec != expected["address"]:
        problem(f"{field} address", shown(expected["address"]), shown(got.addr_spec))


def same_body(expected, got):
    """Equal once line breaks are `\\n`, give or take one line break at the very end.

    The end of a part is where MIME writers legitimately differ: RFC 2046 5.1.1 gives the
    CRLF before a boundary to the boundary, while a single part that ends the message ends
    with the CRLF of its last line, which a writer may add of its own (lettre 0.11's
    quoted-printable does, even after the body's own last line break) or mark soft (Missive's
    own writer does); a reader cannot tell which. Anything more is a difference.
    """
    expected = expected.replace("\r\n", "\n")
    got = got.replace("\r\n", "\n")
    return got in (expected, expected + "\n") or got + "\n" == expected


def first_difference(expected, got):
    """Where two bodies part (counting from 1), for the problem line."""
    expected = expected.replace("\r\n", "\n")
    got = got.replace("\r\n", "\n")
    at = next(
        (i for i, (a, b) in enumerate(zip(expected, got)) if a != b),
        min(len(expected), len(got)),
    )
    return f"at character {at + 1}: expected {shown(expected[at:at + 40])}, got {shown(got[at:at + 40])}"


def check_part(msg, mime, expected, problem):
    """The one leaf part of type `mime` decodes to `expected`; none at all when it is None."""
    parts = [p for p in msg.walk() if not p.is_multipart() and p.get_content_type() == mime]
    if expected is None:
        if parts:
            problem(mime, "no such part", f"{len(parts)}")
        return
    if len(parts) != 1:
        problem(mime, "one part", f"{len(parts)}")
        return
    try:
        got = parts[0].get_content()
    except Exception as e:  # noqa: BLE001 (any failure to decode is the finding)
        problem(mime, "a decodable part", f"{type(e).__name__}: {e}")
        return
    if not same_body(expected, got):
        problem(f"{mime} body", "the letter's body", first_difference(expected, got))


def check_letter(path, entry, problem):
    raw = path.read_bytes()
    check_raw(raw, problem)
    msg = email.message_from_bytes(raw, policy=email.policy.default)
    check_defects(msg, problem)
    check_mailbox(msg, "From", entry["from"], problem)
    check_mailbox(msg, "Reply-To", entry["reply_to"], problem)
    check_mailbox(msg, "To", entry["to"], problem)
    subject = msg["Subject"]
    if subject is None or one_line(str(subject)) != one_line(entry["subject"]):
        problem("Subject", shown(one_line(entry["subject"])), shown(subject and str(subject)))
    message_id = msg["Message-ID"]
    if message_id is None or str(message_id).strip() != entry["message_id"]:
        problem("Message-ID", shown(entry["message_id"]), shown(message_id and str(message_id)))
    check_part(msg, "text/plain", entry["text"], problem)
    check_part(msg, "text/html", entry.get("html"), problem)


def main(argv):
    if len(argv) != 3:
        print("usage: check_letters.py DIR MANIFEST", file=sys.stderr)
        return 2
    folder, manifest = Path(argv[1]), Path(argv[2])
    entries = json.loads(manifest.read_text(encoding="utf-8"))
    problems = 0

    def reporter(file):
        def problem(what, expected, got):
            nonlocal problems
            problems += 1
            print(f"{file}: {what}: expected {expected}, got {got}")

        return problem

    listed = {entry["file"] for entry in entries}
    for path in sorted(folder.glob("*.eml")):
        if path.name not in listed:
            reporter(path.name)("manifest", "an entry for every .eml file", "none")
    for entry in entries:
        path = folder / entry["file"]
        if not path.is_file():
            reporter(entry["file"])("file", "the file", "none")
            continue
        check_letter(path, entry, reporter(entry["file"]))
    if problems:
        print(f"{problems} problem(s) in {len(entries)} letter(s)")
        return 1
    print(f"{len(entries)} letter(s) read back by Python's email package, no problems")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
