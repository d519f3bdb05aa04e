//! The message as it goes on the wire after DATA (RFC 5321 section 4.5.2): every line that
//! begins with `.` gets one more, the last line ends in CRLF, and `.` CRLF closes it. Missive's
//! MIME writer never starts a line with a dot, so the common case is a search that finds
//! nothing and no copy at all; any other bytes are still sent correctly.
//!
//! A dot after a bare LF is stuffed too: some servers end lines at a bare LF, and an unstuffed
//! `LF . CRLF` would end the message early there (the "SMTP smuggling" ambiguity).
//!
//! Depends on nothing but `memchr`.

use std::borrow::Cow;

/// What to write after DATA's 354: `body` then `end`, in one write.
#[derive(Debug, PartialEq, Eq)]
pub(super) struct DataBody<'a> {
    /// The message, dot-stuffed (borrowed when nothing needed stuffing).
    pub(super) body: Cow<'a, [u8]>,
    /// What completes the last line, then the terminating `.` CRLF.
    pub(super) end: &'static [u8],
}

/// The end of data after a message whose last line already ends in CRLF (or an empty one).
const DOT: &[u8] = b".\r\n";
/// ... after a message whose last line has no line ending.
const CRLF_DOT: &[u8] = b"\r\n.\r\n";
/// ... after a message that ends in a bare CR.
const LF_DOT: &[u8] = b"\n.\r\n";

/// Encodes `message` for transmission after DATA.
pub(super) fn encode(message: &[u8]) -> DataBody<'_> {
    let leading = message.first() == Some(&b'.');
    let inner = memchr::memmem::find(message, b"\n.").is_some();
    let bare_lf_at_end = message.ends_with(b"\n") && !message.ends_with(b"\r\n");
    if !leading && !inner && !bare_lf_at_end {
        let end = if message.is_empty() || message.ends_with(b"\r\n") {
            DOT
        } else if message.ends_with(b"\r") {
            LF_DOT
        } else {
            CRLF_DOT
        };
        return DataBody {
            body: Cow::Borrowed(message),
            end,
        };
    }
    let mut out = Vec::with_capacity(message.len() + 64);
    if leading {
        out.push(b'.');
    }
    let mut from = 0;
    for at in memchr::memmem::find_iter(message, b"\n.") {
        // Up to and including the LF, then the extra dot; the line's own dot follows.
        out.extend_from_slice(&message[from..=at]);
        out.push(b'.');
        from = at + 1;
    }
    out.extend_from_slice(&message[from..]);
    let end = if out.ends_with(b"\r\n") {
        DOT
    } else if out.ends_with(b"\n") {
        // A bare LF closing the last line becomes CRLF.
        out.pop();
        CRLF_DOT
    } else if out.ends_with(b"\r") {
        LF_DOT
    } else {
        CRLF_DOT
    };
    DataBody {
        body: Cow::Owned(out),
        end,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The bytes on the wire.
    fn wire(message: &[u8]) -> Vec<u8> {
        let d = encode(message);
        [&d.body[..], d.end].concat()
    }

    #[test]
    fn a_message_without_leading_dots_is_sent_as_it_is_without_a_copy() {
        let m = b"Subject: hi\r\n\r\nHello. Bye.\r\n";
        let d = encode(m);
        assert!(matches!(d.body, Cow::Borrowed(_)), "fast path: no copy");
        assert_eq!(wire(m), b"Subject: hi\r\n\r\nHello. Bye.\r\n.\r\n");
    }

    #[test]
    fn lines_starting_with_a_dot_get_one_more() {
        assert_eq!(
            wire(b".hidden\r\nmid\r\n..two\r\n.\r\nend\r\n"),
            b"..hidden\r\nmid\r\n...two\r\n..\r\nend\r\n.\r\n"
        );
    }

    #[test]
    fn a_lone_dot_line_cannot_end_the_message_early() {
        let stuffed = wire(b"a\r\n.\r\nMAIL FROM:<x@example.org>\r\n");
        assert_eq!(stuffed, b"a\r\n..\r\nMAIL FROM:<x@example.org>\r\n.\r\n");
        // Also after a bare LF, which some servers take for a line ending.
        assert_eq!(wire(b"a\n.\r\nb\r\n"), b"a\n..\r\nb\r\n.\r\n");
    }

    #[test]
    fn a_missing_final_line_ending_is_added() {
        assert_eq!(wire(b"no newline"), b"no newline\r\n.\r\n");
        assert_eq!(wire(b"ends in cr\r"), b"ends in cr\r\n.\r\n");
        assert_eq!(wire(b"bare lf\n"), b"bare lf\r\n.\r\n");
        assert_eq!(
            wire(b".dot and no newline"),
            b"..dot and no newline\r\n.\r\n"
        );
    }

    #[test]
    fn an_empty_message_is_just_the_final_dot() {
        assert_eq!(wire(b""), b".\r\n");
        assert_eq!(wire(b"."), b"..\r\n.\r\n");
        assert_eq!(wire(b"\r\n"), b"\r\n.\r\n");
    }

    #[test]
    fn dots_not_at_a_line_start_are_left_alone() {
        let m = b"a.b\r\nc .d\r\n\r.e\r\n";
        assert!(matches!(encode(m).body, Cow::Borrowed(_)));
        assert_eq!(wire(m), b"a.b\r\nc .d\r\n\r.e\r\n.\r\n");
    }

    /// Reading the wire back as a server does (line starts after LF, one dot removed, stop at
    /// the lone dot) gives the message with its last line ended.
    #[test]
    fn unstuffing_gives_the_message_back() {
        fn unstuff(wire: &[u8]) -> Vec<u8> {
            let mut out = Vec::new();
            for line in wire.split_inclusive(|b| *b == b'\n') {
                if line == b".\r\n" {
                    return out;
                }
                out.extend_from_slice(line.strip_prefix(b".").unwrap_or(line));
            }
            panic!("no end of data in {:?}", String::from_utf8_lossy(wire));
        }
        for m in [
            &b"plain\r\n"[..],
            b".a\r\n..b\r\n.\r\n",
            b"x\r\n.\r\n.\r\n",
            b"",
            b"...",
        ] {
            let mut expected = m.to_vec();
            if !expected.is_empty() && !expected.ends_with(b"\r\n") {
                expected.extend_from_slice(b"\r\n");
            }
            assert_eq!(
                unstuff(&wire(m)),
                expected,
                "{:?}",
                String::from_utf8_lossy(m)
            );
        }
    }
}
