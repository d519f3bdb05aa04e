//! The MIME message for one letter, written by Missive itself straight into wire-ready bytes:
//! `From` the organisation's address with the signer's name, `Reply-To` the signer, `To` the
//! target, the pinned subject and bodies (`multipart/alternative` when there is HTML), and the
//! Message-ID the letter keeps on every attempt.
//!
//! Headers are RFC 5322 with RFC 2047 encoded-words for anything that is not printable ASCII
//! and raw UTF-8 addresses (RFC 6532); bodies are 7bit when they are short plain ASCII lines,
//! else quoted-printable (RFC 2045). The output needs no dot-stuffing: see [`build_message`].
//! Nothing from the letter can carry a line break into a header.
//!
//! Depends on `domain` only (and `chrono` for the date).

use super::MailerError;
use crate::domain::{EmailAddress, Letter};
use chrono::{Datelike, Timelike};
use std::borrow::Cow;

/// Header lines are folded to this length where the content allows (RFC 5322 2.1.1).
const HEADER_LINE: usize = 78;
/// The hard limit on any line, CRLF excluded (RFC 5322 2.1.1).
const MAX_LINE: usize = 998;
/// Quoted-printable lines, soft-break `=` included (RFC 2045 6.7).
const QP_LINE: usize = 76;
/// An RFC 2047 encoded-word is at most this long.
const ENCODED_WORD: usize = 75;
/// `=?utf-8?b?` and `?=`.
const ENCODED_WORD_OVERHEAD: usize = 12;
/// Encoded-words shorter than this (in octets of text) go on the next line instead.
const MIN_WORD_TEXT: usize = 12;

/// Builds the complete RFC 5322 message for `letter`, ready for the wire.
///
/// The output contract, which the SMTP client relies on to send the bytes as they are, followed
/// by `.\r\n`, with no dot-stuffing (the outbox writes the same bytes as an `.eml` file):
///
/// - every line ends with CRLF, and there is no bare CR or LF anywhere;
/// - no line is longer than 998 octets (header lines are folded to 78 where the content allows:
///   only an address too long to share a line exceeds it; body lines are at most 76);
/// - no line begins with `.` (a `.` that would start a body line is written `=2E`);
/// - the message ends with CRLF;
/// - header values never contain CR or LF taken from the letter.
///
/// Errors only when `message_id` or an address holds a control character, white space or an
/// angle bracket (none does once parsed), or when the Message-ID cannot fit on a line.
pub fn build_message(letter: &Letter, message_id: &str) -> Result<Vec<u8>, MailerError> {
    check_message_id(message_id)?;
    check_address("From", &letter.from_address)?;
    check_address("Reply-To", &letter.reply_to)?;
    check_address("To", &letter.recipient)?;

    let text = letter.body_text.as_bytes();
    let html = letter.body_html.as_deref().map(str::as_bytes);
    let names = letter.from_name.len() * 2 + letter.recipient_name.len() + letter.subject.len();
    let mut out = Vec::with_capacity(
        600 + 2 * names + message_id.len() + body_estimate(text) + html.map_or(0, body_estimate),
    );

    mailbox_header(&mut out, b"From", &letter.from_name, &letter.from_address);
    mailbox_header(&mut out, b"Reply-To", &letter.from_name, &letter.reply_to);
    mailbox_header(&mut out, b"To", &letter.recipient_name, &letter.recipient);
    subject_header(&mut out, &letter.subject);
    out.extend_from_slice(b"Message-ID: ");
    out.extend_from_slice(message_id.as_bytes());
    out.extend_from_slice(b"\r\nDate: ");
    write_date(&mut out, chrono::Utc::now());
    out.extend_from_slice(b"\r\nMIME-Version: 1.0\r\n");

    match html {
        None => {
            // The last line of a single part is the message's last line: a body that does not end
            // with a line break ends with a soft one, so the reader sees no line break added.
            let seven_bit = is_plain_7bit(text) && text.ends_with(b"\n");
            part_headers(&mut out, b"text/plain", seven_bit);
            if seven_bit {
                write_7bit(&mut out, text);
            } else if write_qp(&mut out, text, true) {
                out.extend_from_slice(b"=\r\n");
            }
        }
        Some(html) => {
            let boundary = Boundary::for_message(message_id);
            out.extend_from_slice(b"Content-Type: multipart/alternative;\r\n boundary=\"");
            out.extend_from_slice(boundary.as_bytes());
            out.extend_from_slice(b"\"\r\n\r\n");
            for (mime, body) in [(&b"text/plain"[..], text), (b"text/html", html)] {
                out.extend_from_slice(b"--");
                out.extend_from_slice(boundary.as_bytes());
                out.extend_from_slice(b"\r\n");
                let seven_bit = is_plain_7bit(body);
                part_headers(&mut out, mime, seven_bit);
                if seven_bit {
                    write_7bit(&mut out, body);
                } else {
                    write_qp(&mut out, body, false);
                }
                // The CRLF before a delimiter belongs to the delimiter (RFC 2046 5.1.1).
                out.extend_from_slice(b"\r\n");
            }
            out.extend_from_slice(b"--");
            out.extend_from_slice(boundary.as_bytes());
            out.extend_from_slice(b"--\r\n");
        }
    }
    Ok(out)
}

/// Refuses a Message-ID that could break its header line: control characters or white space.
/// Non-ASCII is fine (RFC 6532).
fn check_message_id(id: &str) -> Result<(), MailerError> {
    if id.is_empty() || id.bytes().any(|b| b <= b' ' || b == 0x7f) {
        return Err(MailerError::Build(
            "the Message-ID is empty or holds a control character or white space".into(),
        ));
    }
    if id.len() > MAX_LINE - "Message-ID: ".len() {
        return Err(MailerError::Build("the Message-ID is too long".into()));
    }
    Ok(())
}

/// `EmailAddress` never holds these; checked again because a header depends on it. The error
/// names the field, not the address (a signer's address is not for logs).
fn check_address(field: &str, address: &EmailAddress) -> Result<(), MailerError> {
    let bad = address
        .as_str()
        .bytes()
        .any(|b| b <= b' ' || b == 0x7f || b == b'<' || b == b'>');
    if bad {
        Err(MailerError::Build(format!(
            "the {field} address holds a control character, white space or an angle bracket"
        )))
    } else {
        Ok(())
    }
}

/// Room for a body once encoded: enough for Latin text in quoted-printable without growing.
fn body_estimate(body: &[u8]) -> usize {
    body.len() + body.len() / 4 + 160
}

// ---- headers -----------------------------------------------------------------------------

/// Writes one header field, folding between tokens so lines stay within 78 octets when they can.
struct Field<'a> {
    out: &'a mut Vec<u8>,
    /// Where the current line starts in `out`.
    line_start: usize,
    /// Whether a token was written (the first one never moves to a new line).
    has_token: bool,
    /// Whether the next token needs a space before it.
    need_space: bool,
}

impl<'a> Field<'a> {
    fn new(out: &'a mut Vec<u8>, name: &[u8]) -> Field<'a> {
        let line_start = out.len();
        out.extend_from_slice(name);
        out.push(b':');
        Field {
            out,
            line_start,
            has_token: false,
            need_space: true,
        }
    }

    fn column(&self) -> usize {
        self.out.len() - self.line_start
    }

    /// Octets left on this line for a token, after its separating space.
    fn room(&self) -> usize {
        HEADER_LINE.saturating_sub(self.column() + usize::from(self.need_space))
    }

    /// Continues the field on a new line (the CRLF and space are folding white space).
    fn fold(&mut self) {
        self.out.extend_from_slice(b"\r\n ");
        self.line_start = self.out.len() - 1;
        self.need_space = false;
    }

    /// Makes room for a token of `len` octets: a new line if it does not fit on this one.
    fn begin(&mut self, len: usize) {
        if self.has_token && len > self.room() {
            self.fold();
        }
        if self.need_space {
            self.out.push(b' ');
        }
        self.has_token = true;
        self.need_space = true;
    }

    fn token(&mut self, token: &[u8]) {
        self.begin(token.len());
        self.out.extend_from_slice(token);
    }

    /// `text` as RFC 2047 encoded-words (UTF-8, base64), each at most 75 octets and holding only
    /// whole characters, sized to fill the lines. Readers drop the white space between them.
    fn encoded_words(&mut self, text: &str) {
        let mut rest = text;
        while !rest.is_empty() {
            let mut take = whole_chars(rest, word_capacity(self.room()));
            // Rather a new line than a sliver of a word at the end of this one.
            if self.has_token && (take == 0 || take < rest.len() && take < MIN_WORD_TEXT) {
                self.fold();
                take = whole_chars(rest, word_capacity(self.room()));
            }
            if take == 0 {
                // Unreachable (a fresh line holds 45 octets); never loop forever regardless.
                take = rest.chars().next().map_or(rest.len(), char::len_utf8);
            }
            let (chunk, tail) = rest.split_at(take);
            self.begin(ENCODED_WORD_OVERHEAD + base64_len(chunk.len()));
            self.out.extend_from_slice(b"=?utf-8?b?");
            base64(self.out, chunk.as_bytes());
            self.out.extend_from_slice(b"?=");
            rest = tail;
        }
    }

    fn end(self) {
        self.out.extend_from_slice(b"\r\n");
    }
}

/// How many octets of text an encoded-word of at most `room` characters can carry.
fn word_capacity(room: usize) -> usize {
    let chars = room.min(ENCODED_WORD).saturating_sub(ENCODED_WORD_OVERHEAD);
    chars / 4 * 3
}

/// The longest prefix of `s` of at most `max` octets that ends on a character boundary.
fn whole_chars(s: &str, max: usize) -> usize {
    if s.len() <= max {
        return s.len();
    }
    let mut end = max;
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    end
}

/// `From`, `Reply-To` or `To`: `"Name" <address>`, `=?utf-8?b?...?= <address>`, or the bare
/// address when there is no name.
fn mailbox_header(out: &mut Vec<u8>, field: &[u8], name: &str, address: &EmailAddress) {
    let mut f = Field::new(out, field);
    let name = one_line(name);
    if name.is_empty() {
        f.token(address.as_str().as_bytes());
        f.end();
        return;
    }
    // A quoted-string: quotes, and a backslash before `"` and `\`.
    let quoted_len = 2 + name.len() + name.bytes().filter(|&b| b == b'"' || b == b'\\').count();
    if is_printable_ascii(&name) && !name.contains("=?") && quoted_len <= f.room() {
        f.begin(quoted_len);
        f.out.push(b'"');
        for b in name.bytes() {
            if b == b'"' || b == b'\\' {
                f.out.push(b'\\');
            }
            f.out.push(b);
        }
        f.out.push(b'"');
    } else {
        f.encoded_words(&name);
    }
    let address = address.as_str().as_bytes();
    f.begin(address.len() + 2);
    f.out.push(b'<');
    f.out.extend_from_slice(address);
    f.out.push(b'>');
    f.end();
}

/// `Subject`, white space collapsed: plain words when they are printable ASCII and fold well,
/// else encoded-words.
fn subject_header(out: &mut Vec<u8>, subject: &str) {
    let mut f = Field::new(out, b"Subject");
    let subject = one_line(subject);
    let first_room = f.room();
    let plain = is_printable_ascii(&subject)
        && !subject.contains("=?")
        && subject
            .split(' ')
            .enumerate()
            .all(|(i, word)| word.len() <= if i == 0 { first_room } else { HEADER_LINE - 1 });
    if plain {
        for word in subject.split(' ').filter(|w| !w.is_empty()) {
            f.token(word.as_bytes());
        }
    } else {
        f.encoded_words(&subject);
    }
    f.end();
}

/// `s` with each run of white space (CR and LF included) made one space, and none at either
/// end: a display name or subject as it is written. Borrowed when it is that already.
fn one_line(s: &str) -> Cow<'_, str> {
    // Only these bytes can start white space (Unicode White_Space: U+0009-000D, U+0020, U+0085,
    // U+00A0, U+1680, U+2000-200A, U+2028, U+2029, U+202F, U+205F, U+3000).
    let maybe_space = |b: u8| matches!(b, b'\t'..=b'\r' | b' ' | 0xc2 | 0xe1 | 0xe2 | 0xe3);
    let bytes = s.as_bytes();
    let simple = !s.ends_with(' ')
        && bytes
            .iter()
            .enumerate()
            .all(|(i, &b)| !maybe_space(b) || b == b' ' && i > 0 && bytes[i - 1] != b' ');
    if simple {
        return Cow::Borrowed(s);
    }
    let mut joined = String::with_capacity(s.len());
    for word in s.split_whitespace() {
        if !joined.is_empty() {
            joined.push(' ');
        }
        joined.push_str(word);
    }
    Cow::Owned(joined)
}

/// Whether every byte of `s` is printable ASCII or a space.
fn is_printable_ascii(s: &str) -> bool {
    s.bytes().all(|b| (b' '..=b'~').contains(&b))
}

const BASE64: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";

fn base64_len(n: usize) -> usize {
    n.div_ceil(3) * 4
}

/// Standard base64 with padding (RFC 4648), as RFC 2047's "B" encoding wants.
fn base64(out: &mut Vec<u8>, input: &[u8]) {
    let mut chunks = input.chunks_exact(3);
    for c in &mut chunks {
        let n = u32::from(c[0]) << 16 | u32::from(c[1]) << 8 | u32::from(c[2]);
        out.extend_from_slice(&[
            BASE64[(n >> 18) as usize & 63],
            BASE64[(n >> 12) as usize & 63],
            BASE64[(n >> 6) as usize & 63],
            BASE64[n as usize & 63],
        ]);
    }
    match *chunks.remainder() {
        [a] => {
            let n = u32::from(a) << 16;
            out.extend_from_slice(&[
                BASE64[(n >> 18) as usize & 63],
                BASE64[(n >> 12) as usize & 63],
                b'=',
                b'=',
            ]);
        }
        [a, b] => {
            let n = u32::from(a) << 16 | u32::from(b) << 8;
            out.extend_from_slice(&[
                BASE64[(n >> 18) as usize & 63],
                BASE64[(n >> 12) as usize & 63],
                BASE64[(n >> 6) as usize & 63],
                b'=',
            ]);
        }
        _ => {}
    }
}

/// `Tue, 03 Mar 2026 09:05:07 +0000` (RFC 5322 3.3).
fn write_date(out: &mut Vec<u8>, now: chrono::DateTime<chrono::Utc>) {
    const DAYS: [&[u8; 3]; 7] = [b"Mon", b"Tue", b"Wed", b"Thu", b"Fri", b"Sat", b"Sun"];
    const MONTHS: [&[u8; 3]; 12] = [
        b"Jan", b"Feb", b"Mar", b"Apr", b"May", b"Jun", b"Jul", b"Aug", b"Sep", b"Oct", b"Nov",
        b"Dec",
    ];
    let two = |out: &mut Vec<u8>, n: u32| {
        out.extend_from_slice(&[b'0' + (n / 10 % 10) as u8, b'0' + (n % 10) as u8])
    };
    out.extend_from_slice(DAYS[now.weekday().num_days_from_monday() as usize]);
    out.extend_from_slice(b", ");
    two(out, now.day());
    out.push(b' ');
    out.extend_from_slice(MONTHS[now.month0() as usize % 12]);
    out.push(b' ');
    let year = now.year().clamp(0, 9999) as u32;
    two(out, year / 100);
    two(out, year % 100);
    out.push(b' ');
    two(out, now.hour());
    out.push(b':');
    two(out, now.minute());
    out.push(b':');
    two(out, now.second());
    out.extend_from_slice(b" +0000");
}

// ---- bodies ------------------------------------------------------------------------------

fn part_headers(out: &mut Vec<u8>, mime: &[u8], seven_bit: bool) {
    out.extend_from_slice(b"Content-Type: ");
    out.extend_from_slice(mime);
    out.extend_from_slice(b"; charset=utf-8\r\nContent-Transfer-Encoding: ");
    out.extend_from_slice(if seven_bit {
        &b"7bit\r\n\r\n"[..]
    } else {
        b"quoted-printable\r\n\r\n"
    });
}

/// How many bytes at the start of `bytes` are printable ASCII (space included) other than `=`:
/// the bytes both encodings copy as they are, away from a line's ends. Eight bytes at a time.
fn plain_prefix(bytes: &[u8]) -> usize {
    const ONES: u64 = 0x0101_0101_0101_0101;
    const HIGHS: u64 = 0x8080_8080_8080_8080;
    let mut n = 0;
    for chunk in bytes.chunks_exact(8) {
        let Ok(word) = <[u8; 8]>::try_from(chunk) else {
            break;
        };
        let x = u64::from_le_bytes(word);
        // A byte below 0x20, above 0x7e, or equal to `=` (Hacker's Delight / "bit twiddling
        // hacks" hasless, hasmore and haszero; exact as a whole-word test).
        let below = x.wrapping_sub(ONES * 0x20) & !x;
        // (hasmore adds 127 - 0x7e, that is 1, to every byte.)
        let above = x.wrapping_add(ONES) | x;
        let eq = x ^ (ONES * u64::from(b'='));
        let equals = eq.wrapping_sub(ONES) & !eq;
        if (below | above | equals) & HIGHS != 0 {
            break;
        }
        n += 8;
    }
    n + bytes[n..]
        .iter()
        .take_while(|&&b| PLAIN[usize::from(b)])
        .count()
}

/// Printable ASCII and space, but `=`: what [`plain_prefix`] accepts.
static PLAIN: [bool; 256] = {
    let mut t = [false; 256];
    let mut b = b' ';
    while b <= b'~' {
        t[b as usize] = true;
        b += 1;
    }
    t[b'=' as usize] = false;
    t
};

/// Where the line break at `body[i]` ends, if there is one there (`\n` or `\r\n`).
fn line_break_at(body: &[u8], i: usize) -> Option<usize> {
    match body.get(i) {
        Some(b'\n') => Some(i + 1),
        Some(b'\r') if body.get(i + 1) == Some(&b'\n') => Some(i + 2),
        _ => None,
    }
}

/// Whether `body` can go as it is (7bit): lines of at most 76 octets of printable ASCII and
/// tabs, none starting with `.` or `From `, none ending in white space, no bare CR, and no `=_`
/// (which every multipart boundary starts with).
fn is_plain_7bit(body: &[u8]) -> bool {
    let line_ok = |start: usize, end: usize| {
        end - start <= QP_LINE && (end == start || !matches!(body[end - 1], b' ' | b'\t'))
    };
    let mut line_start = 0;
    let mut i = 0;
    loop {
        if i == line_start && (body[i..].starts_with(b".") || body[i..].starts_with(b"From ")) {
            return false;
        }
        i += plain_prefix(&body[i..]);
        if let Some(next) = line_break_at(body, i) {
            if !line_ok(line_start, i) {
                return false;
            }
            line_start = next;
            i = next;
            continue;
        }
        match body.get(i) {
            None => return line_ok(line_start, i),
            Some(b'\t') => i += 1,
            Some(b'=') if body.get(i + 1) != Some(&b'_') => i += 1,
            Some(_) => return false,
        }
    }
}

/// Writes a body [`is_plain_7bit`] accepted, each line break as CRLF.
fn write_7bit(out: &mut Vec<u8>, body: &[u8]) {
    let mut rest = body;
    while let Some(at) = rest.iter().position(|&b| b == b'\n') {
        let line = &rest[..at];
        out.extend_from_slice(line.strip_suffix(b"\r").unwrap_or(line));
        out.extend_from_slice(b"\r\n");
        rest = &rest[at + 1..];
    }
    out.extend_from_slice(rest);
}

/// Bytes quoted-printable writes as they are wherever they are in a line: printable ASCII but
/// `=`. Space and tab are literal except at the end of a line; `.` except at the start of one.
static QP_LITERAL: [bool; 256] = {
    let mut t = [false; 256];
    let mut b = b'!';
    while b <= b'~' {
        t[b as usize] = true;
        b += 1;
    }
    t[b'=' as usize] = false;
    t
};

const HEX: &[u8; 16] = b"0123456789ABCDEF";

/// Writes `body` quoted-printable, each line break (`\n` or `\r\n`) as CRLF, a CR alone as
/// `=0D`. Soft line breaks keep every line within 76 octets. Returns whether the last line was
/// left open (the body did not end with a line break); with `soft_end`, room is kept on that
/// line for the soft line break the caller will add.
fn write_qp(out: &mut Vec<u8>, body: &[u8], soft_end: bool) -> bool {
    let mut column = 0;
    let mut i = 0;
    while i < body.len() {
        // The common case, copied in one go: bytes that go as they are, up to the last column
        // before a soft break. Never at the start of an output line (`.` and `F` need a look
        // there) nor the last byte of a line (white space there is encoded, and it may take the
        // 76th column): those take the byte-by-byte way below.
        if column != 0 {
            let room = (QP_LINE - 1).saturating_sub(column);
            let window = &body[i..body.len().min(i + room)];
            let mut run = plain_prefix(window);
            if run > 0 && (i + run == body.len() || line_break_at(body, i + run).is_some()) {
                run -= 1;
            }
            out.extend_from_slice(&body[i..i + run]);
            column += run;
            i += run;
        }
        // Bytes encoded wherever they are (UTF-8 sequences, `=`), while they fit before a
        // soft break: no look at the line's ends is needed.
        while column + 3 < QP_LINE {
            match body.get(i) {
                Some(&b) if b >= 0x80 || b == b'=' => {
                    out.extend_from_slice(&[
                        b'=',
                        HEX[usize::from(b >> 4)],
                        HEX[usize::from(b & 15)],
                    ]);
                    column += 3;
                    i += 1;
                }
                _ => break,
            }
        }
        if i == body.len() {
            break;
        }
        if let Some(next) = line_break_at(body, i) {
            out.extend_from_slice(b"\r\n");
            column = 0;
            i = next;
            continue;
        }
        let b = body[i];
        let ends_line = || i + 1 == body.len() || line_break_at(body, i + 1).is_some();
        let literal = match b {
            // White space at the end of a line would be lost in transport.
            b' ' | b'\t' => !ends_line(),
            // A `.` opening a line is SMTP's end of data; `From ` is mbox's new message.
            b'.' => column != 0,
            b'F' => column != 0 || !body[i + 1..].starts_with(b"rom "),
            _ => QP_LITERAL[usize::from(b)],
        };
        let width = if literal { 1 } else { 3 };
        if column + width >= QP_LINE {
            // Only the last byte of a line may take the 76th column, and not when a soft break
            // follows it.
            let hard_end = ends_line() && (i + 1 < body.len() || !soft_end);
            if !hard_end || column + width > QP_LINE {
                out.extend_from_slice(b"=\r\n");
                column = 0;
                // Looked at again: at the start of a line, `.` and `F` change.
                continue;
            }
        }
        if literal {
            out.push(b);
        } else {
            out.extend_from_slice(&[b'=', HEX[usize::from(b >> 4)], HEX[usize::from(b & 15)]]);
        }
        column += width;
        i += 1;
    }
    !body.is_empty() && !body.ends_with(b"\n")
}

/// A multipart boundary that cannot occur in a quoted-printable body (`=_` never does there,
/// and 7bit bodies holding `=_` are sent quoted-printable), unique to the message: a hash of
/// its Message-ID.
struct Boundary([u8; 26]);

impl Boundary {
    fn for_message(message_id: &str) -> Boundary {
        // FNV-1a, 64 bits: stable across builds and platforms.
        let mut hash: u64 = 0xcbf2_9ce4_8422_2325;
        for &b in message_id.as_bytes() {
            hash ^= u64::from(b);
            hash = hash.wrapping_mul(0x0000_0100_0000_01b3);
        }
        let mut s = *b"=_missive_0000000000000000";
        for (i, slot) in s[10..].iter_mut().enumerate() {
            *slot = HEX[(hash >> (60 - 4 * i)) as usize & 15];
        }
        Boundary(s)
    }

    fn as_bytes(&self) -> &[u8] {
        &self.0
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::LanguageTag;
    use mailparse::{addrparse_header, body::Body, parse_mail, MailHeaderMap, ParsedMail};
    use proptest::prelude::*;

    fn letter() -> Letter {
        Letter {
            target_id: "presidency".into(),
            recipient: EmailAddress::parse("presidency@example.org").unwrap(),
            recipient_name: "President of the Republic".into(),
            from_name: "José Núñez".into(),
            from_address: EmailAddress::parse("letters@example.org").unwrap(),
            reply_to: EmailAddress::parse("jose@example.net").unwrap(),
            language: LanguageTag::parse("es").unwrap(),
            subject: "Detengan las deportaciones".into(),
            body_text: "Estimada señora Presidenta:\n\nJosé Núñez".into(),
            body_html: None,
            template_hash: "x".into(),
        }
    }

    fn build(l: &Letter) -> Vec<u8> {
        build_message(l, "<1@example.org>").unwrap()
    }

    #[test]
    fn from_is_the_organisation_with_the_signers_name_and_reply_to_is_the_signer() {
        let raw = String::from_utf8(build_message(&letter(), "<1@example.org>").unwrap()).unwrap();
        assert!(raw.contains("From: =?utf-8?b?"), "{raw}");
        assert!(raw.contains("<letters@example.org>"));
        assert!(raw.contains("Reply-To: =?utf-8?b?"));
        assert!(raw.contains("<jose@example.net>"));
        assert!(raw.contains("To: \"President of the Republic\" <presidency@example.org>"));
        assert!(raw.contains("Message-ID: <1@example.org>"));
    }

    #[test]
    fn a_subject_with_line_breaks_cannot_add_headers() {
        let mut l = letter();
        l.subject = "Hi\r\nBcc: victim@example.net".into();
        l.from_name = "Eve\r\nBcc: victim@example.net".into();
        let raw = String::from_utf8(build_message(&l, "<1@example.org>").unwrap()).unwrap();
        let headers = raw.split("\r\n\r\n").next().unwrap();
        assert!(
            !headers.lines().any(|line| line.starts_with("Bcc:")),
            "{headers}"
        );
    }

    /// What lettre 0.11 wrote for `letter()` (the builder Missive used before its own writer).
    const LETTRE_SINGLE_PART: &str = concat!(
        "From: =?utf-8?b?Sm9zw6kgTsO6w7Fleg==?= <letters@example.org>\r\n",
        "Reply-To: =?utf-8?b?Sm9zw6kgTsO6w7Fleg==?= <jose@example.net>\r\n",
        "To: \"President of the Republic\" <presidency@example.org>\r\n",
        "Subject: Detengan las deportaciones\r\n",
        "Message-ID: <1@example.org>\r\n",
        "Date: Sat, 28 Nov 2026 21:02:39 +0000\r\n",
        "MIME-Version: 1.0\r\n",
        "Content-Type: text/plain; charset=utf-8\r\n",
        "Content-Transfer-Encoding: quoted-printable\r\n",
        "\r\n",
        "Estimada se=C3=B1ora Presidenta:\r\n",
        "\r\n",
        "Jos=C3=A9 N=C3=BA=C3=B1ez\r\n",
    );

    fn header_lines(raw: &[u8]) -> Vec<String> {
        let text = std::str::from_utf8(raw).unwrap();
        let head = text.split("\r\n\r\n").next().unwrap();
        head.split("\r\n").map(str::to_owned).collect()
    }

    #[test]
    fn key_headers_are_the_ones_lettre_wrote() {
        let ours = build(&letter());
        let lettre = LETTRE_SINGLE_PART.as_bytes();

        let same_lines = |name: &str| {
            let pick = |raw: &[u8]| -> Vec<String> {
                header_lines(raw)
                    .into_iter()
                    .filter(|l| l.starts_with(&format!("{name}:")))
                    .collect()
            };
            assert_eq!(pick(&ours), pick(lettre), "{name}");
        };
        for name in [
            "From",
            "Reply-To",
            "To",
            "Subject",
            "Message-ID",
            "MIME-Version",
            "Content-Type",
            "Content-Transfer-Encoding",
        ] {
            same_lines(name);
        }
        let order = |raw: &[u8]| -> Vec<String> {
            header_lines(raw)
                .iter()
                .map(|l| l.split(':').next().unwrap().to_owned())
                .collect()
        };
        assert_eq!(
            order(&ours),
            order(lettre),
            "the same fields in the same order"
        );
        let date = header_lines(&ours)
            .into_iter()
            .find_map(|l| l.strip_prefix("Date: ").map(str::to_owned))
            .unwrap();
        assert!(
            mailparse::dateparse(&date).is_ok() && date.ends_with(" +0000") && date.len() == 31,
            "{date}"
        );
        // lettre added a line break after the body; the letter has none, and now nor does
        // what a reader decodes.
        let ours = parse_mail(&ours).unwrap();
        let theirs = parse_mail(lettre).unwrap();
        assert_eq!(
            ours.get_body().unwrap() + "\r\n",
            theirs.get_body().unwrap()
        );
        assert_eq!(
            strict_qp(body_bytes(&ours)),
            b"Estimada se\xc3\xb1ora Presidenta:\r\n\r\nJos\xc3\xa9 N\xc3\xba\xc3\xb1ez"
        );
    }

    #[test]
    fn a_dot_or_from_opening_a_line_is_encoded_and_line_breaks_become_crlf() {
        let mut l = letter();
        l.body_text = ".\n..hidden\r\nFrom here\nok. From\nend \ttab\t\nbare\rcr".into();
        let raw = build(&l);
        assert_wire_ready(&raw, true);
        let text = String::from_utf8(raw).unwrap();
        let body = text.split_once("\r\n\r\n").unwrap().1;
        assert_eq!(
            body,
            "=2E\r\n=2E.hidden\r\n=46rom here\r\nok. From\r\nend \ttab=09\r\nbare=0Dcr=\r\n"
        );
    }

    #[test]
    fn long_lines_get_soft_breaks_and_a_dot_after_one_is_encoded() {
        let mut l = letter();
        l.body_text = format!("{}.b {}é\n", "a".repeat(75), "c".repeat(200));
        let raw = build(&l);
        assert_wire_ready(&raw, true);
        let text = String::from_utf8(raw).unwrap();
        assert!(
            text.contains(&format!("\r\n\r\n{}=\r\n=2Eb ccc", "a".repeat(75))),
            "{text}"
        );
        let parsed = parse_mail(text.as_bytes()).unwrap();
        assert_eq!(
            strict_qp(body_bytes(&parsed)),
            l.body_text.replace('\n', "\r\n").as_bytes()
        );
    }

    #[test]
    fn short_plain_ascii_goes_as_it_is() {
        let mut l = letter();
        l.body_text = "Dear Minister,\n\nPlease act.\r\n\tAna\n".into();
        l.body_html = Some("<p>Please <b class=\"x\">act</b>.</p>".into());
        let raw = String::from_utf8(build(&l)).unwrap();
        assert_wire_ready(raw.as_bytes(), true);
        assert!(raw.contains(concat!(
            "Content-Transfer-Encoding: 7bit\r\n\r\n",
            "Dear Minister,\r\n\r\nPlease act.\r\n\tAna\r\n\r\n--=_missive_"
        )));
        assert!(raw.contains(concat!(
            "Content-Transfer-Encoding: 7bit\r\n\r\n",
            "<p>Please <b class=\"x\">act</b>.</p>\r\n--=_missive_"
        )));
        // A single part must end with the letter's own line break to go 7bit.
        l.body_html = None;
        l.body_text = "Dear Minister".into();
        let raw = String::from_utf8(build(&l)).unwrap();
        assert!(
            raw.ends_with("quoted-printable\r\n\r\nDear Minister=\r\n"),
            "{raw}"
        );
    }

    #[test]
    fn the_boundary_cannot_occur_in_a_body_and_differs_per_message() {
        let mut l = letter();
        l.body_text = "a=_b\n".into();
        l.body_html = Some("<p>=_missive_</p>\n".into());
        let one = String::from_utf8(build_message(&l, "<1@example.org>").unwrap()).unwrap();
        let two = String::from_utf8(build_message(&l, "<2@example.org>").unwrap()).unwrap();
        assert_wire_ready(one.as_bytes(), true);
        let boundary = |raw: &str| {
            raw.split("boundary=\"")
                .nth(1)
                .unwrap()
                .split('"')
                .next()
                .unwrap()
                .to_owned()
        };
        assert!(boundary(&one).starts_with("=_"));
        assert_ne!(boundary(&one), boundary(&two));
        assert_eq!(one.matches(&boundary(&one)).count(), 4, "{one}");
        assert!(one.contains("a=3D_b\r\n") && one.contains("<p>=3D_missive_</p>\r\n"));
    }

    #[test]
    fn long_names_become_encoded_words_of_whole_characters_within_75_octets() {
        let mut l = letter();
        l.from_name = "😀 José \"Pepe\" Núñez 北京市 ".repeat(6);
        l.recipient_name = format!("The {} Minister", "Very ".repeat(20));
        l.subject = format!("{} ¡Detengan las deportaciones!", "word ".repeat(30));
        let raw = build(&l);
        assert_wire_ready(&raw, true);
        let words = encoded_words(&raw);
        assert!(words.len() > 10, "{words:?}");
        let parsed = parse_mail(&raw).unwrap();
        assert_eq!(
            mailbox(&parsed, "From").0.as_deref(),
            Some(one_line(&l.from_name).as_str())
        );
        assert_eq!(
            mailbox(&parsed, "To").0.as_deref(),
            Some(one_line(&l.recipient_name).as_str())
        );
        assert_eq!(
            parsed.headers.get_first_value("Subject").unwrap(),
            one_line(&l.subject)
        );
    }

    #[test]
    fn a_long_address_gets_a_line_of_its_own_within_998_octets() {
        let mut l = letter();
        let domain = format!("{}.example.org", ["abcdefghij"; 16].join("."));
        l.recipient = EmailAddress::parse(&format!("{}@{domain}", "x".repeat(64))).unwrap();
        let raw = build(&l);
        assert_wire_ready(&raw, false);
        let text = String::from_utf8(raw).unwrap();
        assert!(text.contains(&format!(
            "To: \"President of the Republic\"\r\n <{}>\r\n",
            l.recipient
        )));
    }

    #[test]
    fn a_message_id_that_could_break_its_line_is_refused() {
        for bad in [
            "",
            "<1@example.org>\r\nBcc: x@example.net",
            "<a b@example.org>",
            "<\u{7f}@x.org>",
        ] {
            assert!(build_message(&letter(), bad).is_err(), "{bad:?}");
        }
        assert!(build_message(&letter(), &format!("<{}@example.org>", "a".repeat(990))).is_err());
        let raw = build_message(&letter(), "<0190a1b2@société.example>").unwrap();
        assert!(String::from_utf8(raw)
            .unwrap()
            .contains("\r\nMessage-ID: <0190a1b2@société.example>\r\n"));
    }

    #[test]
    fn the_date_is_rfc_5322_with_two_digit_days() {
        let at = |s: &str| s.parse::<chrono::DateTime<chrono::Utc>>().unwrap();
        for (when, expected) in [
            ("2026-03-03T09:05:07Z", "Tue, 03 Mar 2026 09:05:07 +0000"),
            ("1999-12-31T23:59:59Z", "Fri, 31 Dec 1999 23:59:59 +0000"),
        ] {
            let mut out = Vec::new();
            write_date(&mut out, at(when));
            assert_eq!(String::from_utf8(out).unwrap(), expected);
        }
    }

    proptest! {
        #[test]
        fn mailparse_reads_the_date_back(seconds in 0i64..253_402_300_800) {
            let when = chrono::DateTime::from_timestamp(seconds, 0).unwrap();
            let mut out = Vec::new();
            write_date(&mut out, when);
            let text = String::from_utf8(out).unwrap();
            prop_assert_eq!(mailparse::dateparse(&text).unwrap(), seconds, "{}", text);
        }
    }

    // ---- the property: mailparse reads back exactly what the letter says ------------------

    fn one_line(s: &str) -> String {
        s.split_whitespace().collect::<Vec<_>>().join(" ")
    }

    /// The display name and address of the single mailbox in `field`.
    fn mailbox(parsed: &ParsedMail<'_>, field: &str) -> (Option<String>, String) {
        let header = parsed.headers.get_first_header(field).unwrap();
        let info = addrparse_header(header)
            .unwrap()
            .extract_single_info()
            .unwrap_or_else(|| panic!("one mailbox in {field}"));
        (info.display_name, info.addr)
    }

    fn body_bytes<'a>(part: &'a ParsedMail<'a>) -> &'a [u8] {
        match part.get_body_encoded() {
            Body::QuotedPrintable(b) => b.get_raw(),
            Body::SevenBit(b) => b.get_raw(),
            _ => panic!("only 7bit and quoted-printable are written"),
        }
    }

    /// Decodes quoted-printable strictly: lines within 76 octets of printable ASCII, space and
    /// tab, none ending in white space, `=` only before two upper-case hex digits or as a soft
    /// line break (mailparse's decoder is lenient about all of these).
    fn strict_qp(encoded: &[u8]) -> Vec<u8> {
        let text = std::str::from_utf8(encoded).expect("quoted-printable is ASCII");
        let lines: Vec<&str> = text.split("\r\n").collect();
        let mut out = Vec::new();
        for (n, line) in lines.iter().enumerate() {
            assert!(line.len() <= 76, "line longer than 76: {line:?}");
            assert!(
                !line.ends_with([' ', '\t']),
                "white space ends a line: {line:?}"
            );
            let bytes = line.as_bytes();
            let mut i = 0;
            let mut soft = false;
            while i < bytes.len() {
                match bytes[i] {
                    b'=' if i + 1 == bytes.len() => {
                        soft = true;
                        i += 1;
                    }
                    b'=' => {
                        let hex = line.get(i + 1..i + 3).expect("two hex digits after =");
                        assert!(
                            hex.bytes().all(|b| matches!(b, b'0'..=b'9' | b'A'..=b'F')),
                            "{line:?}"
                        );
                        out.push(u8::from_str_radix(hex, 16).unwrap());
                        i += 3;
                    }
                    b @ (b' ' | b'\t' | b'!'..=b'~') => {
                        out.push(b);
                        i += 1;
                    }
                    b => panic!("byte {b:#x} in quoted-printable"),
                }
            }
            if !soft && n + 1 < lines.len() {
                out.extend_from_slice(b"\r\n");
            }
        }
        out
    }

    /// Every RFC 2047 encoded-word in the header block, each checked: at most 75 octets, UTF-8
    /// base64, and whole characters on its own.
    fn encoded_words(raw: &[u8]) -> Vec<String> {
        use base64::Engine as _;
        let mut words = Vec::new();
        for line in header_lines(raw) {
            for token in line.split(' ').filter(|t| t.starts_with("=?")) {
                assert!(token.len() <= 75, "encoded-word over 75 octets: {token}");
                let payload = token
                    .strip_prefix("=?utf-8?b?")
                    .and_then(|t| t.strip_suffix("?="))
                    .unwrap_or_else(|| panic!("not a UTF-8 B encoded-word: {token}"));
                let bytes = base64::engine::general_purpose::STANDARD
                    .decode(payload)
                    .unwrap();
                assert!(
                    std::str::from_utf8(&bytes).is_ok(),
                    "an encoded-word splits a character: {token}"
                );
                words.push(token.to_owned());
            }
        }
        words
    }

    /// The output contract of `build_message`, on the raw bytes.
    fn assert_wire_ready(raw: &[u8], short_addresses: bool) {
        assert!(raw.ends_with(b"\r\n"), "ends with CRLF");
        for (i, &b) in raw.iter().enumerate() {
            match b {
                b'\n' => assert!(i > 0 && raw[i - 1] == b'\r', "bare LF at {i}"),
                b'\r' => assert_eq!(raw.get(i + 1), Some(&b'\n'), "bare CR at {i}"),
                _ => {}
            }
        }
        let text = std::str::from_utf8(raw).expect("UTF-8");
        let (head, body) = text.split_once("\r\n\r\n").expect("a header block");
        for line in text[..text.len() - 2].split("\r\n") {
            assert!(line.len() <= 998, "line over 998 octets: {line}");
            assert!(!line.starts_with('.'), "line starts with a dot: {line}");
        }
        let mut fields = Vec::new();
        for line in head.split("\r\n") {
            if short_addresses {
                assert!(line.len() <= 78, "header line over 78 octets: {line}");
            }
            if !line.starts_with(' ') {
                fields.push(line.split(':').next().unwrap());
            }
        }
        let mut expected = vec![
            "From",
            "Reply-To",
            "To",
            "Subject",
            "Message-ID",
            "Date",
            "MIME-Version",
            "Content-Type",
        ];
        if !text.contains("multipart/alternative") {
            expected.push("Content-Transfer-Encoding");
        }
        assert_eq!(fields, expected, "{head}");
        for line in body.split("\r\n") {
            assert!(line.len() <= 76, "body line over 76 octets: {line}");
        }
        encoded_words(raw);
    }

    /// The body the reader should get: line breaks as `\n` (the letter may hold either form).
    fn normalised(s: &str) -> String {
        s.replace("\r\n", "\n")
    }

    /// Checks one text part against the letter's `expected` body, exactly (strict decoding) and
    /// as mailparse reads it.
    fn check_part(part: &ParsedMail<'_>, mime: &str, expected: &str) -> Result<(), TestCaseError> {
        prop_assert_eq!(&part.ctype.mimetype, mime);
        prop_assert_eq!(&part.ctype.charset, "utf-8");
        let cte = part
            .headers
            .get_first_value("Content-Transfer-Encoding")
            .unwrap();
        let encoded = body_bytes(part);
        let decoded = match cte.as_str() {
            "quoted-printable" => strict_qp(encoded),
            "7bit" => encoded.to_vec(),
            other => panic!("unexpected encoding {other}"),
        };
        let decoded = String::from_utf8(decoded).expect("UTF-8 once decoded");
        prop_assert_eq!(normalised(&decoded), normalised(expected));
        prop_assert_eq!(normalised(&part.get_body().unwrap()), normalised(expected));
        Ok(())
    }

    fn piece() -> impl Strategy<Value = String> {
        prop_oneof![
            4 => "[a-zA-Z0-9]{1,10}",
            2 => Just(" ".to_owned()),
            1 => prop::sample::select(vec![
                "  ", "\t", "\"", "\\", "\\\"", "=", "=?", "?=", "=?utf-8?b?QQ==?=", "=_", "<",
                ">", ",", ";", ":", "(", ")", "@", "é", "Núñez", "😀", "北京市", "ß", "\u{a0}",
                "Ω", "\u{301}", "\u{3000}", "\u{2028}", "\u{85}", "\u{200b}", "\u{1680}", "\u{202f}",
            ])
            .prop_map(str::to_owned),
            1 => "[a-z]{60,130}",
            1 => "[😀é北]{20,40}",
            2 => "\\PC{1,8}",
        ]
    }

    fn line_piece() -> impl Strategy<Value = String> {
        prop_oneof![
            8 => piece(),
            2 => prop::sample::select(vec![
                "\n", "\r\n", "\n.", "\r\n.", ".", "..", "\nFrom ", "From ", " \n", "\t\r\n",
                "=\n", "\r", "\u{0}", "\u{7f}", "\u{1b}", "\n\n", "--=_missive_",
            ])
            .prop_map(str::to_owned),
        ]
    }

    fn name() -> impl Strategy<Value = String> {
        prop::collection::vec(
            prop_oneof![6 => piece(), 1 => Just("\r\n".to_owned())],
            0..8,
        )
        .prop_map(|v| v.concat())
    }

    fn any_body() -> impl Strategy<Value = String> {
        prop::collection::vec(line_piece(), 0..60).prop_map(|v| v.concat())
    }

    /// Short ASCII lines, so that 7bit is often possible and its rules are put to the test.
    fn ascii_body() -> impl Strategy<Value = String> {
        let piece = prop_oneof![
            6 => "[a-zA-Z0-9,;:!?'\"()<>-]{1,12}",
            3 => Just(" ".to_owned()),
            2 => prop::sample::select(vec![
                "\n", "\r\n", "\n.", ".", "\nFrom ", "From ", " \n", "\t", "\t\n", "=", "=_",
                "\r", "\n\n",
            ])
            .prop_map(str::to_owned),
        ];
        prop::collection::vec(piece, 0..30).prop_map(|v| v.concat())
    }

    fn body() -> impl Strategy<Value = String> {
        prop_oneof![any_body(), ascii_body()]
    }

    fn address() -> impl Strategy<Value = EmailAddress> {
        prop::sample::select(vec![
            "letters@example.org",
            "o'brien+campaign@example.org",
            "zoe@société.example",
            "a.b-c@sub.example.co.uk",
        ])
        .prop_map(|a| EmailAddress::parse(a).unwrap())
    }

    /// `is_plain_7bit` as plainly as it can be said, line by line.
    fn plain_7bit_by_lines(body: &[u8]) -> bool {
        let lines: Vec<&[u8]> = body.split(|&b| b == b'\n').collect();
        let last = lines.len() - 1;
        lines.iter().enumerate().all(|(n, line)| {
            // A CR belongs to the line break only when a LF follows it.
            let line = if n < last {
                line.strip_suffix(b"\r").unwrap_or(line)
            } else {
                line
            };
            line.len() <= 76
                && !line.starts_with(b".")
                && !line.starts_with(b"From ")
                && !line.ends_with(b" ")
                && !line.ends_with(b"\t")
                && line
                    .iter()
                    .all(|&b| b == b'\t' || (b' '..=b'~').contains(&b))
                && !line.windows(2).any(|w| w == b"=_")
        })
    }

    proptest! {
        #[test]
        fn plain_prefix_stops_at_the_first_byte_not_copied_as_it_is(
            bytes in prop::collection::vec(prop_oneof![
                8 => b' '..=b'~',
                1 => any::<u8>(),
            ], 0..40)
        ) {
            let expected = bytes
                .iter()
                .take_while(|&&b| (b' '..=b'~').contains(&b) && b != b'=')
                .count();
            prop_assert_eq!(plain_prefix(&bytes), expected);
        }

        #[test]
        fn the_7bit_test_agrees_with_its_line_by_line_definition(body in body()) {
            prop_assert_eq!(
                is_plain_7bit(body.as_bytes()),
                plain_7bit_by_lines(body.as_bytes())
            );
        }
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(512))]

        #[test]
        fn mailparse_reads_back_exactly_what_the_letter_says(
            from_name in name(),
            recipient_name in name(),
            subject in name(),
            body_text in body(),
            body_html in prop::option::of(body()),
            from_address in address(),
            reply_to in address(),
            recipient in address(),
        ) {
            let l = Letter {
                from_name,
                recipient_name,
                subject,
                body_text,
                body_html,
                from_address,
                reply_to,
                recipient,
                ..letter()
            };
            let raw = build_message(&l, "<0190a1b2c3d4@example.org>").unwrap();
            assert_wire_ready(&raw, true);

            let parsed = parse_mail(&raw).unwrap();
            let name = |n: &str| Some(one_line(n)).filter(|n| !n.is_empty());
            prop_assert_eq!(
                mailbox(&parsed, "From"),
                (name(&l.from_name), l.from_address.to_string())
            );
            prop_assert_eq!(
                mailbox(&parsed, "Reply-To"),
                (name(&l.from_name), l.reply_to.to_string())
            );
            prop_assert_eq!(
                mailbox(&parsed, "To"),
                (name(&l.recipient_name), l.recipient.to_string())
            );
            prop_assert_eq!(
                parsed.headers.get_first_value("Subject").unwrap(),
                one_line(&l.subject)
            );
            prop_assert_eq!(
                parsed.headers.get_first_value("Message-ID").unwrap(),
                "<0190a1b2c3d4@example.org>"
            );
            match &l.body_html {
                None => {
                    prop_assert!(parsed.subparts.is_empty());
                    check_part(&parsed, "text/plain", &l.body_text)?;
                }
                Some(html) => {
                    prop_assert_eq!(&parsed.ctype.mimetype, "multipart/alternative");
                    prop_assert_eq!(parsed.subparts.len(), 2);
                    check_part(&parsed.subparts[0], "text/plain", &l.body_text)?;
                    check_part(&parsed.subparts[1], "text/html", html)?;
                }
            }
        }
    }
}
