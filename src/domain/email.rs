//! `EmailAddress`: a single mailbox address, checked strictly enough that it is safe in an SMTP
//! envelope and a header (no spaces, no angle brackets, no CR/LF), with the normalised form used to
//! recognise the same signer twice. An international domain is kept as its A-labels (`xn--`, UTS
//! #46), so both spellings of a domain are one address; a local part may hold UTF-8 (RFC 6531),
//! which only a relay that takes SMTPUTF8 can carry: `AddressPolicy` says whether the doors accept
//! such addresses.

use super::{Invalid, InvalidKind};
use idna::uts46::{AsciiDenyList, DnsLength, Hyphens, Uts46};
use std::fmt;
use unicode_normalization::UnicodeNormalization;

/// A syntactically valid email address (`local@domain`), at most 254 octets with its domain in
/// ASCII (A-labels). The local part may hold UTF-8; the domain never does.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct EmailAddress(String);

/// Which addresses the relay can carry, hence which ones Missive takes in (`smtp.smtputf8`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum AddressPolicy {
    /// Only ASCII before the `@`: the relay is not known to take SMTPUTF8. The default.
    #[default]
    AsciiOnly,
    /// UTF-8 before the `@` too: the relay takes SMTPUTF8 (RFC 6531).
    Smtputf8,
}

impl AddressPolicy {
    /// The policy for a relay that does (`true`) or does not take SMTPUTF8.
    pub fn from_smtputf8(relay_takes_smtputf8: bool) -> Self {
        if relay_takes_smtputf8 {
            AddressPolicy::Smtputf8
        } else {
            AddressPolicy::AsciiOnly
        }
    }
}

impl EmailAddress {
    /// Parses an address typed by a person: surrounding white space is ignored, the domain is
    /// lower-cased and written in ASCII (an international domain as its `xn--` A-labels), the
    /// local part is kept as typed and may hold UTF-8 (see `needs_smtputf8`).
    pub fn parse(input: &str) -> Result<Self, Invalid> {
        let s = input.trim();
        if s.is_empty() {
            return Err(Invalid::new("is empty"));
        }
        // A bound before any Unicode work; the real limit is on the ASCII form, below.
        if s.chars().count() > 254 {
            return Err(Invalid::new("is longer than 254 characters"));
        }
        let refuse = |why: &str| Invalid::new(format!("`{}` {why}", shorten(s)));
        let Some((local, domain)) = s.rsplit_once('@') else {
            return Err(refuse("has no `@`"));
        };
        check_local(local).map_err(refuse)?;
        let domain = ascii_domain(domain).map_err(refuse)?;
        let address = format!("{local}@{domain}");
        if address.len() > 254 {
            return Err(refuse(if address.is_ascii() {
                "is longer than 254 characters once its domain is written in ASCII"
            } else {
                "is longer than 254 bytes once its domain is written in ASCII (a letter outside \
                 a-z takes 2 to 4)"
            }));
        }
        Ok(EmailAddress(address))
    }

    /// Parses as `parse`, then refuses an address `policy` says the relay cannot carry: UTF-8
    /// before the `@` without SMTPUTF8. This is what every intake door calls.
    pub fn parse_with(input: &str, policy: AddressPolicy) -> Result<Self, Invalid> {
        let address = EmailAddress::parse(input)?;
        if address.needs_smtputf8() && policy == AddressPolicy::AsciiOnly {
            return Err(Invalid::of_kind(
                InvalidKind::NeedsSmtputf8,
                format!(
                    "`{}` has a character before the `@` that this campaign's mail server cannot \
                     carry: use an address with only the letters a to z, digits and . _ - + \
                     before the `@`",
                    shorten(input.trim())
                ),
            ));
        }
        Ok(address)
    }

    /// The address as it will be written in the envelope and headers.
    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// The form used to recognise one signer: the whole address lower-cased (and the local part
    /// in NFC, so an accent typed as one character or as two is the same signer).
    pub fn normalized(&self) -> String {
        if self.0.is_ascii() {
            self.0.to_lowercase()
        } else {
            self.0.nfc().collect::<String>().to_lowercase()
        }
    }

    /// The domain part (lower case, ASCII), used to pace letters per receiving mail server.
    pub fn domain(&self) -> &str {
        self.0.rsplit_once('@').map(|(_, d)| d).unwrap_or_default()
    }

    /// Whether sending to or from this address needs SMTPUTF8: its local part holds a character
    /// outside ASCII (the domain never does).
    pub fn needs_smtputf8(&self) -> bool {
        !self.0.is_ascii()
    }
}

impl fmt::Display for EmailAddress {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl AsRef<str> for EmailAddress {
    fn as_ref(&self) -> &str {
        &self.0
    }
}

fn shorten(s: &str) -> String {
    let mut out: String = s
        .chars()
        .take(60)
        .map(|c| if is_control(c) { '\u{fffd}' } else { c })
        .collect();
    if s.chars().count() > 60 {
        out.push('…');
    }
    out
}

/// Control characters, and the invisible ones that reorder text (bidirectional embeddings,
/// overrides and isolates, the byte-order mark): an address that looks like another is a trap.
fn is_control(c: char) -> bool {
    c.is_control() || matches!(c, '\u{202a}'..='\u{202e}' | '\u{2066}'..='\u{2069}' | '\u{feff}')
}

fn check_local(local: &str) -> Result<(), &'static str> {
    if local.is_empty() {
        return Err("has nothing before the `@`");
    }
    if local.len() > 64 {
        return Err(if local.is_ascii() {
            "has more than 64 characters before the `@`"
        } else {
            "has more than 64 bytes before the `@` (a letter outside a-z takes 2 to 4)"
        });
    }
    if local.starts_with('.') || local.ends_with('.') || local.contains("..") {
        return Err("has a misplaced dot before the `@`");
    }
    // RFC 5322 atext plus dots, and (RFC 6531) any character outside ASCII that is neither a
    // control nor white space. Quoted local parts are legal but almost always typos here.
    let ok = local.chars().all(|c| {
        c.is_ascii_alphanumeric()
            || "!#$%&'*+-/=?^_`{|}~.".contains(c)
            || (!c.is_ascii() && !is_control(c) && !c.is_whitespace())
    });
    if ok {
        Ok(())
    } else {
        Err("has a character that is not allowed before the `@`")
    }
}

/// The domain in ASCII: UTS #46 maps it (lower case, A-labels for international labels, which
/// it also checks), then the checks below apply to what will be sent.
fn ascii_domain(domain: &str) -> Result<String, &'static str> {
    if domain.is_empty() {
        return Err("has no domain after the `@`");
    }
    // No ASCII deny list and no hyphen or length rules here: the checks below word those for a
    // person, on the ASCII form. Whatever UTS #46 lets through must still pass them.
    let ascii = Uts46::new()
        .to_ascii(
            domain.as_bytes(),
            AsciiDenyList::EMPTY,
            Hyphens::Allow,
            DnsLength::Ignore,
        )
        .map_err(|_| "has a domain that is not a valid international domain name")?;
    check_domain(&ascii)?;
    Ok(ascii.into_owned())
}

fn check_domain(domain: &str) -> Result<(), &'static str> {
    if domain.is_empty() {
        return Err("has no domain after the `@`");
    }
    if domain.len() > 253 {
        return Err("has a domain longer than 253 characters (in ASCII)");
    }
    let labels: Vec<&str> = domain.split('.').collect();
    if labels.len() < 2 {
        return Err("has a domain without a dot (e.g. `example.org`)");
    }
    for label in &labels {
        if label.is_empty() || label.len() > 63 {
            return Err("has an empty or overlong part in its domain");
        }
        if label.starts_with('-') || label.ends_with('-') {
            return Err("has a domain part that starts or ends with `-`");
        }
        if !label
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-')
        {
            return Err("has a character that is not allowed in its domain");
        }
    }
    let tld = labels[labels.len() - 1];
    if tld.len() < 2 || tld.bytes().all(|b| b.is_ascii_digit()) {
        return Err("has a domain that does not end in a name such as `.org`");
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn accepts_ordinary_addresses_and_lowercases_the_domain() {
        let e = EmailAddress::parse("  Jose.Nunez+ua@Example.NET ").unwrap();
        assert_eq!(e.as_str(), "Jose.Nunez+ua@example.net");
        assert_eq!(e.normalized(), "jose.nunez+ua@example.net");
        assert_eq!(e.domain(), "example.net");
        assert!(!e.needs_smtputf8());
    }

    #[test]
    fn rejects_malformed_addresses() {
        for bad in [
            "",
            "plainaddress",
            "@example.org",
            "a@",
            "a@localhost",
            "a b@example.org",
            "a@exa mple.org",
            "<a@example.org>",
            "a@example.org\r\nBcc: victim@example.net",
            "a..b@example.org",
            ".a@example.org",
            "a@-example.org",
            "a@example.1",
            "\"quoted\"@example.org",
            "a@exa_mple.org",
            "a@example.org.",
        ] {
            assert!(EmailAddress::parse(bad).is_err(), "accepted {bad:?}");
        }
    }

    #[test]
    fn an_international_domain_becomes_its_a_labels() {
        let e = EmailAddress::parse("zoe@exemple.Société.example").unwrap();

        assert_eq!(e.as_str(), "zoe@exemple.xn--socit-esab.example");
        assert_eq!(e.domain(), "exemple.xn--socit-esab.example");
        assert!(!e.needs_smtputf8(), "an A-label domain needs no SMTPUTF8");
    }

    #[test]
    fn the_u_label_and_a_label_spellings_are_one_address() {
        let unicode = EmailAddress::parse("Zoe@société.example").unwrap();
        let ascii = EmailAddress::parse("Zoe@XN--SOCIT-ESAB.example").unwrap();
        // Ideographic full stops separate labels too (UTS #46 maps them to dots).
        let ideographic = EmailAddress::parse("Zoe@société\u{3002}example").unwrap();

        assert_eq!(unicode, ascii);
        assert_eq!(unicode, ideographic);
        assert_eq!(unicode.normalized(), ascii.normalized());
    }

    #[test]
    fn an_invalid_international_domain_is_refused_by_name() {
        for bad in [
            "a@xn--zz.example",     // not Punycode
            "a@xn--ab-.example",    // malformed A-label
            "a@\u{5d0}a.example",   // Hebrew and Latin in one label (the Bidi rule)
            "a@\u{fffc}.example",   // a code point UTS #46 disallows
            "a@a\u{200d}b.example", // a joiner outside the scripts that need one
        ] {
            let err = EmailAddress::parse(bad).unwrap_err();
            assert!(err.reason().contains("domain"), "{bad:?}: {}", err.reason());
        }
        let err = EmailAddress::parse("a@xn--zz.example").unwrap_err();
        assert!(
            err.reason()
                .ends_with("has a domain that is not a valid international domain name"),
            "{}",
            err.reason()
        );
    }

    #[test]
    fn length_limits_apply_to_the_ascii_form() {
        // 40 `é` are a 46-octet A-label, 60 of them a 66-octet one: over 63, though 60 characters.
        let forty = "é".repeat(40);
        assert_eq!(
            EmailAddress::parse(&format!("a@{forty}.example"))
                .unwrap()
                .domain()
                .len(),
            46 + ".example".len()
        );
        let err = EmailAddress::parse(&format!("a@{}.example", "é".repeat(60))).unwrap_err();
        assert!(err.reason().contains("overlong part"), "{}", err.reason());

        // 64 octets before the `@`, not 64 characters: 33 `é` are 66 octets.
        assert!(EmailAddress::parse(&format!("{}@example.org", "é".repeat(32))).is_ok());
        let err = EmailAddress::parse(&format!("{}@example.org", "é".repeat(33))).unwrap_err();
        assert!(err.reason().contains("64 bytes"), "{}", err.reason());

        // 236 characters as typed, 260 octets once the four labels are A-labels.
        let typed = format!(
            "{}@{}.example",
            "x".repeat(64),
            [forty.as_str(); 4].join(".")
        );
        assert_eq!(typed.chars().count(), 236);
        let err = EmailAddress::parse(&typed).unwrap_err();
        assert!(
            err.reason()
                .ends_with("is longer than 254 characters once its domain is written in ASCII"),
            "{}",
            err.reason()
        );
    }

    #[test]
    fn a_utf8_local_part_is_accepted_and_needs_smtputf8() {
        for (input, stored) in [
            ("josé@example.net", "josé@example.net"),
            ("用户@例子.example", "用户@xn--fsqu00a.example"),
            (
                "Δοκιμή.Όνομα+tag@example.org",
                "Δοκιμή.Όνομα+tag@example.org",
            ),
        ] {
            let e = EmailAddress::parse(input).unwrap();
            assert_eq!(e.as_str(), stored);
            assert!(e.needs_smtputf8(), "{input}");
        }
    }

    #[test]
    fn a_utf8_local_part_still_refuses_what_breaks_an_envelope_or_deceives() {
        for bad in [
            "jos é@example.net",         // an ASCII space
            "josé\u{a0}x@example.net",   // a no-break space
            "josé\u{2028}x@example.net", // a line separator
            "josé\u{85}x@example.net",   // NEL, a C1 control
            "jo\u{202e}sé@example.net",  // a right-to-left override
            "\"josé\"@example.net",      // quotes
            "<josé@example.net>",        // angle brackets
            "jos..é@example.net",        // a misplaced dot
            "josé.@example.net",         // a trailing dot
        ] {
            assert!(EmailAddress::parse(bad).is_err(), "accepted {bad:?}");
        }
    }

    #[test]
    fn the_two_spellings_of_an_accent_are_one_signer() {
        let composed = EmailAddress::parse("jos\u{e9}@example.net").unwrap();
        let decomposed = EmailAddress::parse("jose\u{301}@example.net").unwrap();

        assert_ne!(composed.as_str(), decomposed.as_str(), "kept as typed");
        assert_eq!(composed.normalized(), decomposed.normalized());
        assert_eq!(
            EmailAddress::parse("JOSÉ@example.net")
                .unwrap()
                .normalized(),
            composed.normalized()
        );
    }

    #[test]
    fn the_ascii_only_policy_refuses_a_utf8_local_part_in_plain_words() {
        let err =
            EmailAddress::parse_with("josé@example.net", AddressPolicy::AsciiOnly).unwrap_err();

        assert_eq!(err.kind(), InvalidKind::NeedsSmtputf8);
        assert_eq!(
            err.reason(),
            "`josé@example.net` has a character before the `@` that this campaign's mail server \
             cannot carry: use an address with only the letters a to z, digits and . _ - + \
             before the `@`"
        );
        assert!(EmailAddress::parse_with("josé@example.net", AddressPolicy::Smtputf8).is_ok());
        let idn = EmailAddress::parse_with("jose@société.example", AddressPolicy::AsciiOnly);
        assert!(idn.is_ok(), "an international domain needs no SMTPUTF8");
        let malformed = EmailAddress::parse_with("nope", AddressPolicy::AsciiOnly).unwrap_err();
        assert_eq!(malformed.kind(), InvalidKind::Malformed);
    }

    /// Input made of hostile pieces (ASCII specials, white space and controls of every kind, bidi
    /// controls, full-width forms) among ordinary ones (letters with and without accents,
    /// ideographs), mostly shaped like an address so that many parse and the properties below
    /// are tested on what is accepted, not only on what is refused.
    fn hostile() -> impl Strategy<Value = String> {
        let ordinary = prop::sample::select(vec![
            "a", "Z", "0", "-", "+", "_", "é", "e\u{301}", "ß", "用", "Ω", "xn--",
        ]);
        let hostile = prop::sample::select(vec![
            "@",
            " ",
            "\t",
            "\r",
            "\n",
            "<",
            ">",
            ",",
            ";",
            "\"",
            "(",
            ")",
            "\\",
            "\u{0}",
            "\u{7f}",
            "\u{85}",
            "\u{a0}",
            "\u{2028}",
            "\u{202e}",
            "\u{200d}",
            "\u{feff}",
            "\u{ff20}",
            "\u{ff0e}",
            "\u{3002}",
            "\u{1f600}",
            "\u{fffc}",
        ]);
        let piece = prop_oneof![8 => ordinary, 1 => hostile, 1 => Just(".")];
        let run = move |n| prop::collection::vec(piece.clone(), 1..n).prop_map(|v| v.concat());
        let tld = prop::sample::select(vec![".org", ".example", ".xn--p1ai", ".рф", ""]);
        let shaped = (run(10), run(10), tld)
            .prop_map(|(local, domain, tld)| format!("{local}@{domain}{tld}"));
        prop_oneof![1 => run(30), 4 => shaped]
    }

    proptest! {
        #[test]
        fn a_parsed_address_never_holds_header_breaking_characters(s in prop_oneof!["\\PC{0,80}", hostile()]) {
            if let Ok(e) = EmailAddress::parse(&s) {
                let a = e.as_str();
                prop_assert!(!a.contains(['\r', '\n', ' ', '<', '>', ',', ';', '"']));
                prop_assert!(!a.chars().any(|c| is_control(c) || c.is_whitespace()), "{a:?}");
                prop_assert!(a.len() <= 254);
                let (local, domain) = a.rsplit_once('@').unwrap();
                prop_assert!(!local.contains('@') && local.len() <= 64);
                prop_assert!(domain.is_ascii() && domain == e.domain());
                prop_assert_eq!(e.needs_smtputf8(), !local.is_ascii());
                // Parsing what was stored gives it back: the stored form is already canonical.
                prop_assert_eq!(EmailAddress::parse(a).unwrap(), e.clone());
                let ascii_only = EmailAddress::parse_with(&s, AddressPolicy::AsciiOnly);
                prop_assert_eq!(ascii_only.is_ok(), !e.needs_smtputf8());
            }
        }
    }
}
