//! `Letter`: one rendered letter from one signer to one target, final in every byte the
//! recipient reads. The letters module produces it, the queue stores it, the mailer sends it.

use super::{EmailAddress, LanguageTag};

/// A rendered letter with its addressing. Rendering happens once, when the letter is created,
/// so later template edits never change a letter already queued.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Letter {
    /// The target's id within its campaign.
    pub target_id: String,
    /// The target's address.
    pub recipient: EmailAddress,
    /// The target's display name (name or office title).
    pub recipient_name: String,
    /// The signer's name: the `From` display name.
    pub from_name: String,
    /// The organisation's address: the `From` address and envelope sender.
    pub from_address: EmailAddress,
    /// The signer's address: `Reply-To`.
    pub reply_to: EmailAddress,
    /// The language the letter is written in.
    pub language: LanguageTag,
    /// One line, no CR/LF.
    pub subject: String,
    pub body_text: String,
    pub body_html: Option<String>,
    /// Hash of the templates the letter was rendered from.
    pub template_hash: String,
}
