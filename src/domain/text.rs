//! Free text typed by signers: names, one-line fields (city, postal code, country) and the
//! optional personal message. Control characters never survive parsing, so no value here can
//! break a header or a CSV row; the message is bounded and is only ever data, never a template.

use super::Invalid;
use unicode_normalization::UnicodeNormalization;

/// The most characters a personal message may have.
pub const MESSAGE_MAX_CHARS: usize = 2000;

fn nfc_trim(input: &str) -> String {
    input.trim().nfc().collect()
}

/// A first or last name: 1 to 100 characters, one line, no `<`, `>` or control characters
/// (so it can never forge an address in a `From` display name).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PersonName(String);

impl PersonName {
    /// Parses a name typed by a person (NFC-normalised, trimmed).
    pub fn parse(input: &str) -> Result<Self, Invalid> {
        let s = nfc_trim(input);
        if s.is_empty() {
            return Err(Invalid::new("is empty"));
        }
        if s.chars().count() > 100 {
            return Err(Invalid::new("is longer than 100 characters"));
        }
        if s.chars().any(|c| c.is_control()) {
            return Err(Invalid::new("contains a line break or control character"));
        }
        if s.contains(['<', '>', '@']) {
            return Err(Invalid::new(
                "contains `<`, `>` or `@`, which a name does not need",
            ));
        }
        Ok(PersonName(s))
    }

    /// The name as text.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

/// An optional one-line field (city, postal code, country): empty input is `None`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OptionalLine(Option<String>);

impl OptionalLine {
    /// Parses an optional single-line value of at most `max` characters.
    pub fn parse(input: Option<&str>, max: usize) -> Result<Self, Invalid> {
        let s = nfc_trim(input.unwrap_or_default());
        if s.is_empty() {
            return Ok(OptionalLine(None));
        }
        if s.chars().count() > max {
            return Err(Invalid::new(format!("is longer than {max} characters")));
        }
        if s.chars().any(|c| c.is_control()) {
            return Err(Invalid::new("contains a line break or control character"));
        }
        Ok(OptionalLine(Some(s)))
    }

    /// The value, if any.
    pub fn as_deref(&self) -> Option<&str> {
        self.0.as_deref()
    }
}

/// The signer's own words, added to their letters: at most [`MESSAGE_MAX_CHARS`] characters,
/// line breaks kept (as `\n`), tabs kept, every other control character removed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PersonalMessage(Option<String>);

impl PersonalMessage {
    /// Parses an optional message; white space only is no message.
    pub fn parse(input: Option<&str>) -> Result<Self, Invalid> {
        let raw = input.unwrap_or_default();
        // Count before cleaning too, so a 10 MB paste is refused without building a copy of it.
        if raw.len() > MESSAGE_MAX_CHARS * 4 && raw.chars().count() > MESSAGE_MAX_CHARS * 2 {
            return Err(Invalid::new(format!(
                "is {} characters long; at most {MESSAGE_MAX_CHARS} are allowed",
                raw.chars().count()
            )));
        }
        let unified = raw.replace("\r\n", "\n").replace('\r', "\n");
        let cleaned: String = unified
            .nfc()
            .filter(|c| *c == '\n' || *c == '\t' || !c.is_control())
            .filter(|c| !matches!(c, '\u{2028}' | '\u{2029}' | '\u{200e}' | '\u{200f}' | '\u{202a}'..='\u{202e}' | '\u{2066}'..='\u{2069}'))
            .collect();
        let trimmed = cleaned.trim();
        if trimmed.is_empty() {
            return Ok(PersonalMessage(None));
        }
        let n = trimmed.chars().count();
        if n > MESSAGE_MAX_CHARS {
            return Err(Invalid::new(format!(
                "is {n} characters long; at most {MESSAGE_MAX_CHARS} are allowed"
            )));
        }
        Ok(PersonalMessage(Some(trimmed.to_owned())))
    }

    /// The message, if any.
    pub fn as_deref(&self) -> Option<&str> {
        self.0.as_deref()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn names_keep_accents_and_refuse_line_breaks() {
        assert_eq!(
            PersonName::parse(" José Núñez ").unwrap().as_str(),
            "José Núñez"
        );
        assert_eq!(PersonName::parse("Zoë").unwrap().as_str(), "Zoë");
        assert!(PersonName::parse("Eve\r\nBcc: x@example.org").is_err());
        assert!(PersonName::parse("Boss <boss@example.org>").is_err());
        assert!(PersonName::parse("   ").is_err());
        assert!(PersonName::parse(&"a".repeat(101)).is_err());
    }

    #[test]
    fn names_are_nfc_normalised() {
        // "e" + combining acute becomes the single code point "é".
        assert_eq!(PersonName::parse("Jose\u{301}").unwrap().as_str(), "José");
    }

    #[test]
    fn messages_keep_newlines_and_drop_control_characters() {
        let m = PersonalMessage::parse(Some("Hola\r\nAdiós\u{7}\u{202e}!")).unwrap();
        assert_eq!(m.as_deref(), Some("Hola\nAdiós!"));
        assert_eq!(
            PersonalMessage::parse(Some("  \n ")).unwrap().as_deref(),
            None
        );
    }

    #[test]
    fn messages_are_bounded() {
        assert!(PersonalMessage::parse(Some(&"x".repeat(MESSAGE_MAX_CHARS))).is_ok());
        let err = PersonalMessage::parse(Some(&"x".repeat(MESSAGE_MAX_CHARS + 1))).unwrap_err();
        assert!(err.reason().contains("2001 characters"), "{err}");
        assert!(PersonalMessage::parse(Some(&"x".repeat(10 * 1024 * 1024))).is_err());
    }

    proptest! {
        #[test]
        fn no_parsed_text_holds_a_carriage_return(s in "\\PC{0,300}|[\\r\\n\\u{0}-\\u{1f}a-z]{0,50}") {
            if let Ok(n) = PersonName::parse(&s) { prop_assert!(!n.as_str().contains(['\r', '\n'])); }
            if let Ok(l) = OptionalLine::parse(Some(&s), 100) { prop_assert!(!l.as_deref().unwrap_or("").contains(['\r', '\n'])); }
            if let Ok(m) = PersonalMessage::parse(Some(&s)) { prop_assert!(!m.as_deref().unwrap_or("").contains('\r')); }
        }
    }
}
