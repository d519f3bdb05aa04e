//! SMTP replies (RFC 5321 section 4.2): the parser that turns the bytes a server sent into
//! `Reply` values, one complete reply at a time, single-line (`250 Ok`) or multi-line
//! (`250-first` ... `250 last`). It is pure (no I/O) so every malformed, over-long or endless
//! reply is an error here, tested without a socket, and never a hang or an unbounded buffer in
//! the client that feeds it.
//!
//! Depends on nothing but `memchr`.

use std::fmt;

/// The longest reply line accepted, CRLF included. RFC 5321 allows 512 octets; servers are
/// generous with their texts, so this leaves room while still bounding the buffer.
pub(super) const MAX_LINE: usize = 4096;
/// The largest reply accepted, all lines together (an EHLO reply is well under 1 KiB).
pub(super) const MAX_REPLY: usize = 64 * 1024;

/// One complete reply: its three-digit code and the text of each line.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct Reply {
    pub(super) code: u16,
    /// Each line's text after `NNN ` or `NNN-`, without the line ending.
    pub(super) lines: Vec<String>,
}

impl Reply {
    /// 2xx: the command was carried out.
    pub(super) fn is_positive(&self) -> bool {
        (200..300).contains(&self.code)
    }

    /// 4xx or 5xx: the command was refused.
    pub(super) fn is_negative(&self) -> bool {
        (400..600).contains(&self.code)
    }

    /// The lines joined by spaces, the enhanced status code kept only where it first appears
    /// (`550-5.1.1 No such user` / `550 5.1.1 here` reads `5.1.1 No such user here`).
    pub(super) fn text(&self) -> String {
        let Some((first, rest)) = self.lines.split_first() else {
            return String::new();
        };
        let repeated = first
            .split_whitespace()
            .next()
            .filter(|word| super::super::enhanced_code(word).is_some());
        let mut text = first.clone();
        for line in rest {
            text.push(' ');
            let line = match repeated {
                Some(code) => line
                    .strip_prefix(code)
                    .filter(|rest| rest.starts_with(' '))
                    .map_or(line.as_str(), str::trim_start),
                None => line.as_str(),
            };
            text.push_str(line);
        }
        text
    }
}

impl fmt::Display for Reply {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} {}", self.code, self.text())
    }
}

/// Why bytes from the server are not a reply.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub(super) enum ReplyError {
    #[error("the server sent something that is not an SMTP reply: `{0}`")]
    Malformed(String),
    #[error("the server sent a reply line longer than {MAX_LINE} bytes")]
    LineTooLong,
    #[error("the server sent a reply longer than {MAX_REPLY} bytes")]
    TooLarge,
    #[error("the server's reply mixes codes {0} and {1} on its lines")]
    MixedCodes(u16, u16),
}

/// Reads one complete reply from the start of `buf`.
///
/// `Ok(Some((reply, used)))`: a reply and the number of bytes it took; `Ok(None)`: the reply is
/// not complete yet, read more and call again with the longer buffer. Lines may end in CRLF or
/// a bare LF. Errors as soon as the bytes cannot become a valid reply within the limits, so the
/// caller never waits for, or buffers, more than `MAX_REPLY + MAX_LINE` bytes.
pub(super) fn parse(buf: &[u8]) -> Result<Option<(Reply, usize)>, ReplyError> {
    let mut pos = 0;
    let mut code = None;
    let mut lines = Vec::new();
    loop {
        let rest = &buf[pos..];
        let Some(end) = memchr::memchr(b'\n', rest) else {
            if rest.len() > MAX_LINE {
                return Err(ReplyError::LineTooLong);
            }
            if buf.len() > MAX_REPLY {
                return Err(ReplyError::TooLarge);
            }
            return Ok(None);
        };
        if end + 1 > MAX_LINE {
            return Err(ReplyError::LineTooLong);
        }
        let raw = &rest[..end];
        let line = raw.strip_suffix(b"\r").unwrap_or(raw);
        pos += end + 1;
        if pos > MAX_REPLY {
            return Err(ReplyError::TooLarge);
        }
        let (this, last, text) = parse_line(line)?;
        match code {
            Some(first) if first != this => return Err(ReplyError::MixedCodes(first, this)),
            _ => code = Some(this),
        }
        lines.push(text);
        if last {
            return Ok(Some((Reply { code: this, lines }, pos)));
        }
    }
}

/// `NNN text` (last line), `NNN-text` (more follow) or a bare `NNN` (last line, no text).
fn parse_line(line: &[u8]) -> Result<(u16, bool, String), ReplyError> {
    let malformed = || {
        let shown = String::from_utf8_lossy(&line[..line.len().min(80)]);
        ReplyError::Malformed(shown.escape_debug().to_string())
    };
    let digits = line.get(..3).ok_or_else(malformed)?;
    let valid = matches!(digits[0], b'2'..=b'5')
        && digits[1].is_ascii_digit()
        && digits[2].is_ascii_digit();
    if !valid {
        return Err(malformed());
    }
    let code = digits
        .iter()
        .fold(0u16, |n, d| n * 10 + u16::from(d - b'0'));
    let last = match line.get(3) {
        None | Some(b' ') => true,
        Some(b'-') => false,
        Some(_) => return Err(malformed()),
    };
    let text = line.get(4..).unwrap_or_default();
    Ok((code, last, String::from_utf8_lossy(text).into_owned()))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn one(bytes: &[u8]) -> Reply {
        let (reply, used) = parse(bytes).unwrap().unwrap();
        assert_eq!(used, bytes.len(), "the whole reply was used");
        reply
    }

    #[test]
    fn a_single_line_reply_gives_its_code_and_text() {
        let r = one(b"250 2.1.0 Ok\r\n");
        assert_eq!(r.code, 250);
        assert_eq!(r.lines, vec!["2.1.0 Ok"]);
        assert!(r.is_positive());
        assert_eq!(r.to_string(), "250 2.1.0 Ok");
    }

    #[test]
    fn a_multi_line_reply_is_read_to_its_last_line() {
        let r = one(b"250-mx.example.org\r\n250-PIPELINING\r\n250 SIZE 1000\r\n");
        assert_eq!(r.lines, vec!["mx.example.org", "PIPELINING", "SIZE 1000"]);
    }

    #[test]
    fn a_bare_code_and_bare_lf_endings_are_accepted() {
        assert_eq!(one(b"250\r\n").lines, vec![""]);
        assert_eq!(one(b"220-a\n220 b\n").lines, vec!["a", "b"]);
    }

    #[test]
    fn a_repeated_enhanced_code_is_kept_once_in_the_text() {
        let r = one(
            b"550-5.1.1 The email account that you tried to reach\r\n550 5.1.1 does not exist\r\n",
        );
        assert!(r.is_negative());
        assert_eq!(
            r.text(),
            "5.1.1 The email account that you tried to reach does not exist"
        );
        let d = crate::mailer::Delivery::from_reply(crate::mailer::Stage::Rcpt, r.code, &r.text());
        assert_eq!(d.enhanced_code.as_deref(), Some("5.1.1"));
        // Lines without a code are joined as they are.
        assert_eq!(
            one(b"421-Busy\r\n421 try later\r\n").text(),
            "Busy try later"
        );
    }

    #[test]
    fn an_incomplete_reply_asks_for_more_and_the_rest_is_left_for_the_next() {
        assert_eq!(parse(b"").unwrap(), None);
        assert_eq!(parse(b"25").unwrap(), None);
        assert_eq!(parse(b"250-first\r\n250 sec").unwrap(), None);
        // Pipelined replies arrive together: each parse takes exactly one.
        let both = b"250 2.1.0 Ok\r\n354 go ahead\r\n";
        let (first, used) = parse(both).unwrap().unwrap();
        assert_eq!((first.code, used), (250, 14));
        let (second, _) = parse(&both[used..]).unwrap().unwrap();
        assert_eq!(second.code, 354);
    }

    #[test]
    fn garbage_is_an_error_not_a_reply() {
        for bad in [
            &b"HELLO THERE\r\n"[..],
            b"25\r\n",
            b"2x0 Ok\r\n",
            b"650 Ok\r\n",
            b"099 Ok\r\n",
            b"250_Ok\r\n",
            b"\r\n",
            b"\xff\xfe\xfd\r\n",
        ] {
            assert!(
                matches!(parse(bad), Err(ReplyError::Malformed(_))),
                "{:?}",
                String::from_utf8_lossy(bad)
            );
        }
        assert_eq!(
            parse(b"250-a\r\n550 b\r\n"),
            Err(ReplyError::MixedCodes(250, 550))
        );
    }

    #[test]
    fn an_over_long_line_is_an_error_complete_or_not() {
        let mut long = b"250 ".to_vec();
        long.extend(std::iter::repeat_n(b'a', MAX_LINE));
        assert_eq!(
            parse(&long),
            Err(ReplyError::LineTooLong),
            "still unfinished"
        );
        long.extend_from_slice(b"\r\n");
        assert_eq!(parse(&long), Err(ReplyError::LineTooLong), "finished");
    }

    #[test]
    fn an_endless_multi_line_reply_is_an_error() {
        let mut endless = Vec::new();
        while endless.len() <= MAX_REPLY {
            endless.extend_from_slice(b"250-this reply never ends\r\n");
        }
        assert_eq!(parse(&endless), Err(ReplyError::TooLarge));
    }

    #[test]
    fn a_malformed_line_is_shown_escaped_and_cut_short() {
        let mut bad = b"\x1b[31mHELLO".to_vec();
        bad.extend(std::iter::repeat_n(b'x', 500));
        bad.extend_from_slice(b"\r\n");
        let Err(ReplyError::Malformed(shown)) = parse(&bad) else {
            panic!("not malformed")
        };
        assert!(shown.starts_with("\\u{1b}[31mHELLO"), "{shown}");
        assert!(shown.len() < 100, "{shown}");
    }
}
