//! Pure domain types, parsed once at the edge (CLI, CSV, web, API) and trusted everywhere after.
//!
//! Every type here has private fields and a `parse` constructor: once a value exists it is valid,
//! so nothing downstream re-checks emails, names or slugs. Nothing in this module does I/O, and it
//! depends on no other module of the crate.

mod email;
mod letter;
mod names;
mod signer;
mod state;
mod text;

pub use email::{AddressPolicy, EmailAddress};
pub use letter::Letter;
pub use names::{CampaignSlug, LanguageTag, TargetId};
pub use signer::{NewSigner, Signer, SignerError, SignerField};
pub use state::{LetterState, TRANSITIONS};
pub use text::{OptionalLine, PersonName, PersonalMessage, MESSAGE_MAX_CHARS};

/// Why a value was rejected: a phrase a supporter or organiser can act on.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{reason}")]
pub struct Invalid {
    reason: String,
    kind: InvalidKind,
}

/// What sort of refusal an `Invalid` is, for a caller that words its own answer (the web form,
/// in the supporter's language).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum InvalidKind {
    /// The value is not well formed.
    Malformed,
    /// A well-formed address the relay cannot carry: UTF-8 before the `@`, without SMTPUTF8.
    NeedsSmtputf8,
}

impl Invalid {
    pub(crate) fn new(reason: impl Into<String>) -> Self {
        Invalid::of_kind(InvalidKind::Malformed, reason)
    }

    pub(crate) fn of_kind(kind: InvalidKind, reason: impl Into<String>) -> Self {
        Invalid {
            reason: reason.into(),
            kind,
        }
    }

    /// The reason as text.
    pub fn reason(&self) -> &str {
        &self.reason
    }

    /// What sort of refusal this is.
    pub fn kind(&self) -> InvalidKind {
        self.kind
    }
}
