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

pub use email::EmailAddress;
pub use letter::Letter;
pub use names::{CampaignSlug, LanguageTag, TargetId};
pub use signer::{NewSigner, Signer, SignerError, SignerField};
pub use state::{LetterState, TRANSITIONS};
pub use text::{OptionalLine, PersonName, PersonalMessage, MESSAGE_MAX_CHARS};

/// Why a value was rejected: a phrase a supporter or organiser can act on.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct Invalid(pub(crate) String);

impl Invalid {
    pub(crate) fn new(reason: impl Into<String>) -> Self {
        Invalid(reason.into())
    }

    /// The reason as text.
    pub fn reason(&self) -> &str {
        &self.0
    }
}
