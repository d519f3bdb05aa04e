//! The MIME message for one letter, built by lettre's `Message` builder: `From` the
//! organisation's address with the signer's name, `Reply-To` the signer, `To` the target, the
//! pinned subject and bodies (`multipart/alternative` when there is HTML), the Message-ID the
//! letter keeps on every attempt, and the date.
//!
//! lettre encodes what is not printable ASCII in headers as RFC 2047 encoded-words (folded
//! within 76 octets a line) and picks each body's transfer encoding (7bit, quoted-printable or
//! base64), so a message holds no 8-bit byte unless an address itself needs SMTPUTF8. Names
//! and subjects are made one line first, so nothing from a letter can carry a line break into
//! a header. The SMTP transport dot-stuffs the bytes as it sends them; the outbox writes them
//! as they are.
//!
//! Depends on `domain` only (and lettre's builder).

use super::MailerError;
use crate::domain::{EmailAddress, Letter};
use email_encoding::headers::writer::EmailWriter;
use lettre::message::header::{Header, HeaderName, HeaderValue};
use lettre::message::{Mailbox, Message, MultiPart, SinglePart};
use std::borrow::Cow;
use std::fmt::Write as _;

/// The hard limit on any line, CRLF excluded (RFC 5322 2.1.1).
const MAX_LINE: usize = 998;

/// Builds the complete RFC 5322 message for `letter`: every line ends with CRLF and none is
/// longer than 998 octets; header values never contain a CR or LF taken from the letter.
///
/// Errors only when `message_id` holds a control character or white space, or cannot fit on
/// a line, or when an address cannot be written (none can, once parsed).
pub fn build_message(letter: &Letter, message_id: &str) -> Result<Vec<u8>, MailerError> {
    check_message_id(message_id)?;
    let builder = Message::builder()
        .header(From(mailbox(
            "From",
            &letter.from_name,
            &letter.from_address,
        )?))
        .header(ReplyTo(mailbox(
            "Reply-To",
            &letter.from_name,
            &letter.reply_to,
        )?))
        .header(To(mailbox(
            "To",
            &letter.recipient_name,
            &letter.recipient,
        )?))
        .header(Subject(one_line(&letter.subject).into_owned()))
        .message_id(Some(message_id.to_owned()));
    let text = line_breaks(&letter.body_text);
    let message = match &letter.body_html {
        None => builder.singlepart(SinglePart::plain(text)),
        Some(html) => builder.multipart(MultiPart::alternative_plain_html(text, line_breaks(html))),
    }
    .map_err(|e| MailerError::Build(e.to_string()))?;
    Ok(message.formatted())
}

/// `"Name" <address>`, or the bare address when there is no name. The error names the field,
/// not the address (a signer's address is not for logs).
fn mailbox(field: &str, name: &str, address: &EmailAddress) -> Result<Mailbox, MailerError> {
    let address = address
        .as_str()
        .parse::<lettre::Address>()
        .map_err(|e| MailerError::Build(format!("the {field} address cannot be written: {e}")))?;
    let name = one_line(name);
    Ok(Mailbox::new(
        (!name.is_empty()).then(|| name.into_owned()),
        address,
    ))
}

/// A mailbox header (`From`, `Reply-To`, `To`) as lettre writes it, with one fix: lettre 0.11.23
/// writes ` <address>` after an encoded display name without folding, so a line holding
/// encoded-words could pass the 76 octets RFC 2047 (section 2) allows. These write the same
/// fields through lettre's own encoder, letting the address move to a line of its own.
macro_rules! mailbox_header {
    ($type:ident, $name:literal) => {
        #[derive(Debug, Clone)]
        struct $type(Mailbox);

        impl Header for $type {
            fn name() -> HeaderName {
                HeaderName::new_from_ascii_str($name)
            }

            fn parse(s: &str) -> Result<Self, Box<dyn std::error::Error + Send + Sync>> {
                Ok($type(s.parse()?))
            }

            fn display(&self) -> HeaderValue {
                HeaderValue::dangerous_new_pre_encoded(
                    Self::name(),
                    self.0.to_string(),
                    encode_mailbox($name, &self.0),
                )
            }
        }
    };
}

mailbox_header!(From, "From");
mailbox_header!(ReplyTo, "Reply-To");
mailbox_header!(To, "To");

/// `Subject`, as lettre writes it, with one fix: lettre 0.11.23 writes an ASCII word that looks
/// like an encoded-word (`=?utf-8?b?QQ==?=`) as it is, so readers decode it into something the
/// letter does not say. A subject holding `=?` is written as encoded-words, as RFC 2047
/// (section 5) asks.
#[derive(Debug, Clone)]
struct Subject(String);

impl Header for Subject {
    fn name() -> HeaderName {
        HeaderName::new_from_ascii_str("Subject")
    }

    fn parse(s: &str) -> Result<Self, Box<dyn std::error::Error + Send + Sync>> {
        Ok(Subject(s.to_owned()))
    }

    fn display(&self) -> HeaderValue {
        if !self.0.contains("=?") {
            return HeaderValue::new(Self::name(), self.0.clone());
        }
        let mut encoded = String::new();
        {
            let mut w = EmailWriter::new(&mut encoded, "Subject: ".len(), 0, false);
            // Writing into a String cannot fail.
            let _ = email_encoding::headers::rfc2047::encode(&self.0, &mut w);
        }
        HeaderValue::dangerous_new_pre_encoded(Self::name(), self.0.clone(), encoded)
    }
}

/// `mailbox` encoded after `Name: `, folded before `<address>` where the line would be too long.
fn encode_mailbox(field: &str, mailbox: &Mailbox) -> String {
    let mut encoded = String::new();
    {
        let mut w = EmailWriter::new(&mut encoded, field.len() + ": ".len(), 0, false);
        let address: &str = mailbox.email.as_ref();
        // Writing into a String cannot fail.
        let _ = match &mailbox.name {
            Some(name) => {
                email_encoding::headers::quoted_string::encode(name, &mut w).and_then(|()| {
                    w.space();
                    w.folding().write_str(&format!("<{address}>"))
                })
            }
            None => w.write_str(address),
        };
    }
    encoded
}

/// Refuses a Message-ID that could break its header line: control characters or white space.
fn check_message_id(id: &str) -> Result<(), MailerError> {
    if id.is_empty() || id.chars().any(|c| c.is_control() || c.is_whitespace()) {
        return Err(MailerError::Build(
            "the Message-ID is empty or holds a control character or white space".into(),
        ));
    }
    if id.len() > MAX_LINE - "Message-ID: ".len() {
        return Err(MailerError::Build("the Message-ID is too long".into()));
    }
    Ok(())
}

/// A body as a message may carry it: every line break as CRLF (a CR alone, which RFC 5322 does
/// not allow in a message, is a line break too), and no NUL (which no transfer encoding may
/// carry as it is, and lettre would write as it is in 7bit). lettre makes bare LFs CRLF itself,
/// but by inserting a CR before each one, moving the rest of the body every time: one pass
/// here costs less.
fn line_breaks(body: &str) -> String {
    let bytes = body.as_bytes();
    let mut out = String::with_capacity(body.len() + body.len() / 32 + 2);
    let mut from = 0;
    for at in memchr::memchr3_iter(b'\n', b'\r', 0, bytes) {
        out.push_str(&body[from..at]);
        match bytes[at] {
            b'\n' => out.push_str("\r\n"),
            b'\r' if bytes.get(at + 1) == Some(&b'\n') => {}
            b'\r' => out.push_str("\r\n"),
            _ => {}
        }
        from = at + 1;
    }
    out.push_str(&body[from..]);
    out
}

/// `s` with each run of white space (CR and LF included) made one space, and none at either
/// end: a display name or subject as it is written. Borrowed when it is that already.
fn one_line(s: &str) -> Cow<'_, str> {
    let mut words = s.split_whitespace();
    let simple = s.len()
        == words
            .clone()
            .map(|w| w.len() + 1)
            .sum::<usize>()
            .saturating_sub(1)
        && !s.starts_with(char::is_whitespace);
    if simple && !s.contains(|c: char| c.is_whitespace() && c != ' ') {
        return Cow::Borrowed(s);
    }
    let mut joined = String::with_capacity(s.len());
    if let Some(first) = words.next() {
        joined.push_str(first);
    }
    for word in words {
        joined.push(' ');
        joined.push_str(word);
    }
    Cow::Owned(joined)
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

    fn header_lines(raw: &[u8]) -> Vec<String> {
        let text = std::str::from_utf8(raw).unwrap();
        let head = text.split("\r\n\r\n").next().unwrap();
        head.split("\r\n").map(str::to_owned).collect()
    }

    #[test]
    fn from_is_the_organisation_with_the_signers_name_and_reply_to_is_the_signer() {
        let raw = build(&letter());
        assert_wire_ready(&raw);
        let parsed = parse_mail(&raw).unwrap();
        assert_eq!(
            mailbox(&parsed, "From"),
            (Some("José Núñez".into()), "letters@example.org".into())
        );
        assert_eq!(
            mailbox(&parsed, "Reply-To"),
            (Some("José Núñez".into()), "jose@example.net".into())
        );
        assert_eq!(
            mailbox(&parsed, "To"),
            (
                Some("President of the Republic".into()),
                "presidency@example.org".into()
            )
        );
        let text = String::from_utf8(raw.clone()).unwrap();
        assert!(
            text.contains("\r\nMessage-ID: <1@example.org>\r\n"),
            "{text}"
        );
        let date = parsed.headers.get_first_value("Date").unwrap();
        assert!(mailparse::dateparse(&date).is_ok(), "{date}");
    }

    #[test]
    fn a_subject_or_name_with_line_breaks_cannot_add_headers() {
        let mut l = letter();
        l.subject = "Hi\r\nBcc: victim@example.net".into();
        l.from_name = "Eve\r\nBcc: victim@example.net".into();
        l.recipient_name = "Office\nBcc: victim@example.net".into();
        let raw = build(&l);
        let headers = header_lines(&raw);
        assert!(
            !headers.iter().any(|line| line.starts_with("Bcc:")),
            "{headers:?}"
        );
        let parsed = parse_mail(&raw).unwrap();
        assert_eq!(
            parsed.headers.get_first_value("Subject").unwrap(),
            "Hi Bcc: victim@example.net"
        );
    }

    #[test]
    fn bodies_keep_every_line_and_dots_are_left_to_the_smtp_transport() {
        let mut l = letter();
        l.body_text = ".\n..hidden\r\nFrom here\nok. From\nend \ttab\t\nlast".into();
        let raw = build(&l);
        assert_wire_ready(&raw);
        let parsed = parse_mail(&raw).unwrap();
        assert_eq!(
            normalised(&parsed.get_body().unwrap()).trim_end_matches('\n'),
            normalised(&l.body_text)
        );
    }

    #[test]
    fn a_message_id_that_could_break_its_line_is_refused() {
        for bad in [
            "",
            "<1@example.org>\r\nBcc: x@example.net",
            "<a b@example.org>",
            "<\u{7f}@x.org>",
            "<a\u{2028}b@example.org>",
        ] {
            assert!(build_message(&letter(), bad).is_err(), "{bad:?}");
        }
        assert!(build_message(&letter(), &format!("<{}@example.org>", "a".repeat(990))).is_err());
    }

    #[test]
    fn html_letters_are_multipart_alternative_with_both_bodies() {
        let mut l = letter();
        l.body_text = "Dear Minister,\n\nPlease act.\n".into();
        l.body_html = Some("<p>Please <b class=\"x\">act</b>, señora.</p>".into());
        let raw = build(&l);
        assert_wire_ready(&raw);
        let parsed = parse_mail(&raw).unwrap();
        assert_eq!(parsed.ctype.mimetype, "multipart/alternative");
        assert_eq!(parsed.subparts.len(), 2);
        assert_eq!(parsed.subparts[0].ctype.mimetype, "text/plain");
        assert_eq!(parsed.subparts[1].ctype.mimetype, "text/html");
        assert!(normalised(&parsed.subparts[1].get_body().unwrap()).contains("señora"));
    }

    #[test]
    fn long_names_become_encoded_words_within_76_octets_a_line() {
        let mut l = letter();
        l.from_name = "😀 José \"Pepe\" Núñez 北京市 ".repeat(6);
        l.recipient_name = format!("The {} Minister", "Very ".repeat(20));
        l.subject = format!("{} ¡Detengan las deportaciones!", "word ".repeat(30));
        let raw = build(&l);
        assert_wire_ready(&raw);
        assert!(encoded_word_lines(&raw) > 5);
        let parsed = parse_mail(&raw).unwrap();
        assert_eq!(
            mailbox(&parsed, "From").0.as_deref(),
            Some(one_line(&l.from_name).as_ref())
        );
        assert_eq!(
            mailbox(&parsed, "To").0.as_deref(),
            Some(one_line(&l.recipient_name).as_ref())
        );
        assert_eq!(
            parsed.headers.get_first_value("Subject").unwrap(),
            one_line(&l.subject)
        );
    }

    #[test]
    fn every_line_break_becomes_crlf_and_nul_is_dropped() {
        assert_eq!(
            line_breaks("a\nb\r\nc\rd\r\r\ne\0f\n"),
            "a\r\nb\r\nc\r\nd\r\n\r\nef\r\n"
        );
        assert_eq!(line_breaks("no breaks"), "no breaks");
        assert_eq!(line_breaks(""), "");
        assert_eq!(line_breaks("\r"), "\r\n");
        assert_eq!(line_breaks("é\nñ"), "é\r\nñ");
    }

    #[test]
    fn one_line_collapses_white_space_and_borrows_when_it_can() {
        assert!(matches!(one_line("José Núñez"), Cow::Borrowed(_)));
        assert_eq!(one_line("  a \t b\r\nc\u{2028}d  "), "a b c d");
        assert_eq!(one_line("a  b"), "a b");
        assert_eq!(one_line(""), "");
        assert_eq!(one_line(" \n "), "");
    }

    // ---- the property: mailparse reads back exactly what the letter says ------------------

    /// The display name and address of the single mailbox in `field`.
    fn mailbox(parsed: &ParsedMail<'_>, field: &str) -> (Option<String>, String) {
        let header = parsed.headers.get_first_header(field).unwrap();
        let info = addrparse_header(header)
            .unwrap()
            .extract_single_info()
            .unwrap_or_else(|| panic!("one mailbox in {field}"));
        (info.display_name, info.addr)
    }

    /// A part's body as it is on the wire, and decoded strictly: quoted-printable and base64
    /// by the rules, not as leniently as mailparse reads them.
    fn strictly_decoded(part: &ParsedMail<'_>) -> Vec<u8> {
        match part.get_body_encoded() {
            Body::QuotedPrintable(b) => strict_qp(b.get_raw()),
            Body::SevenBit(b) => {
                let raw = b.get_raw();
                assert!(
                    raw.iter().all(|&b| b < 0x80 && b != 0),
                    "7bit holds 8-bit bytes"
                );
                raw.to_vec()
            }
            Body::Base64(b) => {
                use base64::Engine as _;
                let raw = std::str::from_utf8(b.get_raw()).expect("base64 is ASCII");
                for line in raw.split("\r\n") {
                    assert!(line.len() <= 76, "base64 line longer than 76: {line:?}");
                }
                let joined: String = raw.split("\r\n").collect();
                base64::engine::general_purpose::STANDARD
                    .decode(joined.trim_end())
                    .expect("valid base64")
            }
            _ => panic!("only 7bit, quoted-printable and base64 are written"),
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

    /// The RFC 2047 encoded-words in `line` (`=?charset?b-or-q?text?=`).
    fn encoded_words(line: &str) -> Vec<&str> {
        let mut words = Vec::new();
        let mut rest = line;
        while let Some(start) = rest.find("=?") {
            let candidate = &rest[start..];
            let parts: Vec<&str> = candidate[2..].splitn(3, '?').collect();
            let word = match parts.as_slice() {
                [charset, encoding, tail]
                    if !charset.is_empty()
                        && !charset.contains(char::is_whitespace)
                        && matches!(*encoding, "b" | "B" | "q" | "Q") =>
                {
                    tail.find("?=")
                        .filter(|end| !tail[..*end].contains(char::is_whitespace))
                        .map(|end| &candidate[..2 + charset.len() + 3 + end + 2])
                }
                _ => None,
            };
            match word {
                Some(word) => {
                    words.push(word);
                    rest = &candidate[word.len()..];
                }
                None => rest = &candidate[2..],
            }
        }
        words
    }

    /// How many header lines hold an RFC 2047 encoded-word; each is checked to be at most 76
    /// octets (RFC 2047 section 2), its words UTF-8.
    fn encoded_word_lines(raw: &[u8]) -> usize {
        let mut lines = 0;
        for line in header_lines(raw) {
            let words = encoded_words(&line);
            if words.is_empty() {
                continue;
            }
            lines += 1;
            assert!(line.len() <= 76, "encoded-word line over 76 octets: {line}");
            for word in words {
                assert!(
                    word.to_ascii_lowercase().starts_with("=?utf-8?"),
                    "not a UTF-8 encoded-word: {word}"
                );
            }
        }
        lines
    }

    /// What every message must be on the wire: CRLF line endings only, no line over 998
    /// octets, encoded-word lines within 76, one each of the fields a letter has, and no 8-bit
    /// byte (the addresses here need no SMTPUTF8).
    fn assert_wire_ready(raw: &[u8]) {
        assert!(raw.ends_with(b"\r\n"), "ends with CRLF");
        for (i, &b) in raw.iter().enumerate() {
            match b {
                b'\n' => assert!(i > 0 && raw[i - 1] == b'\r', "bare LF at {i}"),
                b'\r' => assert_eq!(raw.get(i + 1), Some(&b'\n'), "bare CR at {i}"),
                _ => {}
            }
            assert!(b < 0x80, "8-bit byte at {i}");
        }
        let text = std::str::from_utf8(raw).expect("ASCII");
        for line in text[..text.len() - 2].split("\r\n") {
            assert!(line.len() <= 998, "line over 998 octets: {line}");
        }
        encoded_word_lines(raw);
        let mut fields: Vec<String> = header_lines(raw)
            .iter()
            .filter(|l| !l.starts_with([' ', '\t']))
            .map(|l| l.split(':').next().unwrap().to_ascii_lowercase())
            .collect();
        fields.sort();
        let mut expected = vec![
            "content-type",
            "date",
            "from",
            "message-id",
            "mime-version",
            "reply-to",
            "subject",
            "to",
        ];
        if !text.contains("multipart/alternative") {
            expected.push("content-transfer-encoding");
        }
        expected.sort();
        assert_eq!(fields, expected, "{text}");
    }

    /// The body the reader should get: line breaks as `\n` (the letter may hold CRLF, LF, or
    /// a CR alone, which is a line break too), without NUL.
    fn normalised(s: &str) -> String {
        s.replace("\r\n", "\n")
            .replace('\r', "\n")
            .replace('\0', "")
    }

    /// Checks one text part against the letter's `expected` body, exactly (strict decoding) and
    /// as mailparse reads it. A body that does not end with a line break may be read with one
    /// added: the part's last line must end with CRLF on the wire.
    fn check_part(part: &ParsedMail<'_>, mime: &str, expected: &str) -> Result<(), TestCaseError> {
        prop_assert_eq!(&part.ctype.mimetype, mime);
        prop_assert_eq!(&part.ctype.charset, "utf-8");
        let decoded = String::from_utf8(strictly_decoded(part)).expect("UTF-8 once decoded");
        let expected = normalised(expected);
        let same = |got: String| {
            let got = normalised(&got);
            got == expected || got.strip_suffix('\n') == Some(expected.as_str())
        };
        prop_assert!(
            same(decoded.clone()),
            "decoded {:?}, expected {:?}",
            decoded,
            expected
        );
        let read = part.get_body().unwrap();
        prop_assert!(
            same(read.clone()),
            "read {:?}, expected {:?}",
            read,
            expected
        );
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
            assert_wire_ready(&raw);

            let parsed = parse_mail(&raw).unwrap();
            let name = |n: &str| Some(one_line(n).into_owned()).filter(|n| !n.is_empty());
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
