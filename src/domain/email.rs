//! `EmailAddress`: a single mailbox address, checked strictly enough that it is safe in an SMTP
//! envelope and a header (no spaces, no angle brackets, no CR/LF), with the normalised form used to
//! recognise the same signer twice.

use super::Invalid;
use std::fmt;

/// A syntactically valid email address (`local@domain`), at most 254 characters.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct EmailAddress(String);

impl EmailAddress {
    /// Parses an address typed by a person: surrounding white space is ignored, the domain is
    /// lower-cased, the local part is kept as typed.
    pub fn parse(input: &str) -> Result<Self, Invalid> {
        let s = input.trim();
        if s.is_empty() {
            return Err(Invalid::new("is empty"));
        }
        if s.chars().count() > 254 {
            return Err(Invalid::new("is longer than 254 characters"));
        }
        let Some((local, domain)) = s.rsplit_once('@') else {
            return Err(Invalid::new(format!("`{}` has no `@`", shorten(s))));
        };
        check_local(local).map_err(|why| Invalid::new(format!("`{}` {why}", shorten(s))))?;
        check_domain(domain).map_err(|why| Invalid::new(format!("`{}` {why}", shorten(s))))?;
        Ok(EmailAddress(format!("{local}@{}", domain.to_lowercase())))
    }

    /// The address as it will be written in the envelope and headers.
    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// The form used to recognise one signer: the whole address lower-cased.
    pub fn normalized(&self) -> String {
        self.0.to_lowercase()
    }

    /// The domain part (lower case), used to pace letters per receiving mail server.
    pub fn domain(&self) -> &str {
        self.0.rsplit_once('@').map(|(_, d)| d).unwrap_or_default()
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
        .map(|c| if c.is_control() { '\u{fffd}' } else { c })
        .collect();
    if s.chars().count() > 60 {
        out.push('…');
    }
    out
}

fn check_local(local: &str) -> Result<(), &'static str> {
    if local.is_empty() {
        return Err("has nothing before the `@`");
    }
    if local.len() > 64 {
        return Err("has more than 64 characters before the `@`");
    }
    if local.starts_with('.') || local.ends_with('.') || local.contains("..") {
        return Err("has a misplaced dot before the `@`");
    }
    // RFC 5322 atext plus dots. Quoted local parts are legal but almost always typos here.
    let ok = local
        .chars()
        .all(|c| c.is_ascii_alphanumeric() || "!#$%&'*+-/=?^_`{|}~.".contains(c));
    if ok {
        Ok(())
    } else {
        Err("has a character that is not allowed before the `@`")
    }
}

fn check_domain(domain: &str) -> Result<(), &'static str> {
    if domain.is_empty() {
        return Err("has no domain after the `@`");
    }
    if domain.len() > 253 {
        return Err("has a domain longer than 253 characters");
    }
    let labels: Vec<&str> = domain.split('.').collect();
    if labels.len() < 2 {
        return Err("has a domain without a dot (e.g. `example.org`)");
    }
    for label in &labels {
        if label.is_empty() || label.chars().count() > 63 {
            return Err("has an empty or overlong part in its domain");
        }
        if label.starts_with('-') || label.ends_with('-') {
            return Err("has a domain part that starts or ends with `-`");
        }
        if !label.chars().all(|c| c.is_alphanumeric() || c == '-') {
            return Err("has a character that is not allowed in its domain");
        }
    }
    let tld = labels[labels.len() - 1];
    if tld.chars().count() < 2 || tld.chars().all(|c| c.is_ascii_digit()) {
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
        ] {
            assert!(EmailAddress::parse(bad).is_err(), "accepted {bad:?}");
        }
    }

    #[test]
    fn accepts_international_domains() {
        assert!(EmailAddress::parse("zoe@exemple.société.example").is_ok());
    }

    proptest! {
        #[test]
        fn a_parsed_address_never_holds_header_breaking_characters(s in "\\PC{0,80}") {
            if let Ok(e) = EmailAddress::parse(&s) {
                prop_assert!(!e.as_str().contains(['\r', '\n', ' ', '<', '>', ',', ';']));
            }
        }
    }
}
