//! Identifiers that end up in file paths, URLs and database keys: campaign slugs, target ids and
//! language tags. All are short lowercase ASCII, so none can smuggle a path or a header.

use super::Invalid;
use std::fmt;

fn check_ident(s: &str, what: &str, max: usize) -> Result<(), Invalid> {
    if s.is_empty() {
        return Err(Invalid::new(format!("{what} is empty")));
    }
    if s.len() > max {
        return Err(Invalid::new(format!(
            "{what} `{s}` is longer than {max} characters"
        )));
    }
    if !s
        .chars()
        .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-' || c == '_')
        || s.starts_with('-')
    {
        return Err(Invalid::new(format!(
            "{what} `{}` may only hold lowercase letters, digits, `-` and `_`",
            s.escape_debug()
        )));
    }
    Ok(())
}

macro_rules! ident_type {
    ($(#[$doc:meta])* $name:ident, $what:literal, $max:literal) => {
        $(#[$doc])*
        #[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
        pub struct $name(String);

        impl $name {
            /// Parses the identifier, rejecting anything but lowercase letters, digits, `-` and `_`.
            pub fn parse(input: &str) -> Result<Self, Invalid> {
                check_ident(input, $what, $max)?;
                Ok($name(input.to_owned()))
            }

            /// The identifier as text.
            pub fn as_str(&self) -> &str {
                &self.0
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(&self.0)
            }
        }

        impl AsRef<str> for $name {
            fn as_ref(&self) -> &str {
                &self.0
            }
        }
    };
}

ident_type!(
    /// A campaign's slug: the name of its folder under `letters/` and its URL segment.
    CampaignSlug,
    "campaign slug",
    64
);
ident_type!(
    /// A target's stable id within its campaign (`presidency`, `interior`...).
    TargetId,
    "target id",
    64
);

/// A primary language subtag (`en`, `fr`, `es`): the language a letter or page is written in.
/// Region subtags are dropped (`fr-CA` is `fr`), as templates are kept per language.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct LanguageTag(String);

impl LanguageTag {
    /// Parses `xx`, `xxx` or `xx-YY` (case-insensitive).
    pub fn parse(input: &str) -> Result<Self, Invalid> {
        let s = input.trim();
        let primary = s.split(['-', '_']).next().unwrap_or_default();
        let ok =
            (2..=3).contains(&primary.len()) && primary.chars().all(|c| c.is_ascii_alphabetic());
        if !ok {
            return Err(Invalid::new(format!(
                "`{}` is not a language code such as `en`, `fr` or `es`",
                s.escape_debug()
            )));
        }
        Ok(LanguageTag(primary.to_ascii_lowercase()))
    }

    /// The tag as text.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for LanguageTag {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn slugs_reject_paths_and_uppercase() {
        assert!(CampaignSlug::parse("mexico-deportations").is_ok());
        for bad in ["", "../etc", "Mexico", "a b", "a/b", "-x", "ñ"] {
            assert!(CampaignSlug::parse(bad).is_err(), "accepted {bad:?}");
        }
    }

    #[test]
    fn language_tags_keep_the_primary_subtag() {
        assert_eq!(LanguageTag::parse("fr-CA").unwrap().as_str(), "fr");
        assert_eq!(LanguageTag::parse("ES").unwrap().as_str(), "es");
        assert!(LanguageTag::parse("english").is_err());
        assert!(LanguageTag::parse("e").is_err());
        assert!(LanguageTag::parse("").is_err());
    }
}
