//! A signer: the person in whose name letters are written. `NewSigner` is raw input from any edge
//! (CLI flags, a CSV row, a web form, JSON); `Signer::parse` checks every field at once and
//! reports each bad one by name, so a form can show every error beside its field. The email
//! is checked against the door's `AddressPolicy`, so every door refuses the same addresses.

use super::{
    AddressPolicy, EmailAddress, Invalid, LanguageTag, OptionalLine, PersonName, PersonalMessage,
};
use std::fmt;

/// Raw signer input, as typed. Empty strings and `None` are the same for optional fields.
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Deserialize, serde::Serialize)]
pub struct NewSigner {
    pub first_name: String,
    pub last_name: String,
    pub email: String,
    pub city: Option<String>,
    pub postal_code: Option<String>,
    pub country: Option<String>,
    pub language: Option<String>,
    pub message: Option<String>,
}

/// A fully validated signer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Signer {
    pub first_name: PersonName,
    pub last_name: PersonName,
    pub email: EmailAddress,
    pub city: OptionalLine,
    pub postal_code: OptionalLine,
    pub country: OptionalLine,
    /// The language the signer chose, if any; the campaign decides what to do with it.
    pub language: Option<LanguageTag>,
    pub message: PersonalMessage,
}

/// The fields of a signer, named as in forms, CSV headers and JSON.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum SignerField {
    FirstName,
    LastName,
    Email,
    City,
    PostalCode,
    Country,
    Language,
    Message,
}

impl SignerField {
    /// The field's name in forms, CSV headers and JSON.
    pub fn name(self) -> &'static str {
        match self {
            SignerField::FirstName => "first_name",
            SignerField::LastName => "last_name",
            SignerField::Email => "email",
            SignerField::City => "city",
            SignerField::PostalCode => "postal_code",
            SignerField::Country => "country",
            SignerField::Language => "language",
            SignerField::Message => "message",
        }
    }
}

/// Every field that was rejected, with its reason.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub struct SignerError {
    pub fields: Vec<(SignerField, Invalid)>,
}

impl fmt::Display for SignerError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, (field, why)) in self.fields.iter().enumerate() {
            if i > 0 {
                f.write_str("; ")?;
            }
            write!(f, "{}: {}", field.name(), why)?;
        }
        Ok(())
    }
}

impl Signer {
    /// Checks every field, the email against what `addresses` lets the relay carry; on failure
    /// lists all the bad ones.
    pub fn parse(input: &NewSigner, addresses: AddressPolicy) -> Result<Signer, SignerError> {
        fn take<T>(
            errors: &mut Vec<(SignerField, Invalid)>,
            field: SignerField,
            r: Result<T, Invalid>,
        ) -> Option<T> {
            match r {
                Ok(v) => Some(v),
                Err(e) => {
                    errors.push((field, e));
                    None
                }
            }
        }
        let mut errors = Vec::new();
        let e = &mut errors;
        let first_name = take(
            e,
            SignerField::FirstName,
            PersonName::parse(&input.first_name),
        );
        let last_name = take(
            e,
            SignerField::LastName,
            PersonName::parse(&input.last_name),
        );
        let email = take(
            e,
            SignerField::Email,
            EmailAddress::parse_with(&input.email, addresses),
        );
        let city = take(
            e,
            SignerField::City,
            OptionalLine::parse(input.city.as_deref(), 100),
        );
        let postal_code = take(
            e,
            SignerField::PostalCode,
            OptionalLine::parse(input.postal_code.as_deref(), 20),
        );
        let country = take(
            e,
            SignerField::Country,
            OptionalLine::parse(input.country.as_deref(), 100),
        );
        let language = match input.language.as_deref().map(str::trim) {
            None | Some("") => Some(None),
            Some(l) => take(e, SignerField::Language, LanguageTag::parse(l).map(Some)),
        };
        let message = take(
            e,
            SignerField::Message,
            PersonalMessage::parse(input.message.as_deref()),
        );
        match (
            first_name,
            last_name,
            email,
            city,
            postal_code,
            country,
            language,
            message,
        ) {
            (
                Some(first_name),
                Some(last_name),
                Some(email),
                Some(city),
                Some(postal_code),
                Some(country),
                Some(language),
                Some(message),
            ) => Ok(Signer {
                first_name,
                last_name,
                email,
                city,
                postal_code,
                country,
                language,
                message,
            }),
            _ => Err(SignerError { fields: errors }),
        }
    }

    /// "First Last", as signed under the letter and shown as the `From` display name.
    pub fn full_name(&self) -> String {
        format!("{} {}", self.first_name.as_str(), self.last_name.as_str())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::InvalidKind;

    fn jose() -> NewSigner {
        NewSigner {
            first_name: "José".into(),
            last_name: "Núñez".into(),
            email: "jose@example.net".into(),
            city: Some("Montréal".into()),
            ..NewSigner::default()
        }
    }

    #[test]
    fn a_complete_signer_parses() {
        let s = Signer::parse(&jose(), AddressPolicy::AsciiOnly).unwrap();
        assert_eq!(s.full_name(), "José Núñez");
        assert_eq!(s.city.as_deref(), Some("Montréal"));
        assert_eq!(s.postal_code.as_deref(), None);
    }

    #[test]
    fn every_bad_field_is_reported_by_name() {
        let input = NewSigner {
            first_name: "".into(),
            email: "nope".into(),
            language: Some("klingon".into()),
            ..jose()
        };
        let err = Signer::parse(&input, AddressPolicy::AsciiOnly).unwrap_err();
        let names: Vec<_> = err.fields.iter().map(|(f, _)| f.name()).collect();
        assert_eq!(names, ["first_name", "email", "language"]);
    }

    #[test]
    fn a_utf8_local_part_is_an_email_error_unless_the_relay_takes_smtputf8() {
        let input = NewSigner {
            email: "josé@example.net".into(),
            ..jose()
        };

        let err = Signer::parse(&input, AddressPolicy::AsciiOnly).unwrap_err();
        let accepted = Signer::parse(&input, AddressPolicy::Smtputf8).unwrap();

        assert_eq!(err.fields.len(), 1);
        assert_eq!(err.fields[0].0, SignerField::Email);
        assert_eq!(err.fields[0].1.kind(), InvalidKind::NeedsSmtputf8);
        assert!(accepted.email.needs_smtputf8());
    }
}
