//! The queue's side of web and API intake: signatures recorded with the signer's consents and
//! referrer, double opt-in (a signature awaiting confirmation, its confirmation emails queued
//! ahead of letters, its letters created when the link is followed, its deletion once the link
//! has expired) and the stored responses that make API retries idempotent.
//!
//! The policies are here, for every store: confirmation emails go ahead of letters, are named
//! so that no campaign target can collide with them, and are resent at most
//! `MAX_CONFIRMATION_EMAILS` times; each store implements the SQL next to its other SQL.

use super::store::{store, IntakeStore as _, Store as _};
use super::{Millis, NewLetter, NewSignature, Queue, QueueError, Recorded};
use crate::domain::{Letter, NewSigner};

/// What the web form and the API record beside the signer's details.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct IntakeDetails {
    /// Express consent to hear from the organisation again: true only if the signer said so.
    pub consent_contact: bool,
    /// Where the signature came from (a page, a partner's form), at most 500 characters.
    pub referrer: Option<String>,
}

/// A signature to hold until its signer follows the link in the confirmation email.
#[derive(Debug, Clone)]
pub struct NewAwaitingSignature {
    /// The signature, with no letters: they are rendered when it is confirmed.
    pub signature: NewSignature,
    pub details: IntakeDetails,
    /// SHA-256 (hex) of the token in the confirmation link; the token itself is never stored.
    pub token_hash: String,
    /// When the link stops working and the signature is deleted.
    pub expires_at: Millis,
    /// The confirmation email to the signer, queued ahead of letters.
    pub confirmation: NewConfirmation,
}

/// A confirmation email, with the Message-ID it keeps on every attempt.
#[derive(Debug, Clone)]
pub struct NewConfirmation {
    /// `target_id` is ignored: the queue names it `confirmation.<n>`.
    pub email: Letter,
    pub message_id: String,
}

/// The most confirmation emails one awaiting signature may cause (the first and resends), so a
/// stranger cannot flood someone's inbox by signing in their name again and again.
pub const MAX_CONFIRMATION_EMAILS: i64 = 5;

/// Confirmation emails are claimed before letters (workers take higher priorities first).
pub(super) const CONFIRMATION_PRIORITY: i64 = 10;

/// The target id of a signature's `n`th confirmation email. A dot is never part of a
/// campaign's target id, so this cannot collide with a letter.
pub(super) fn confirmation_target(n: i64) -> String {
    format!("confirmation.{n}")
}

/// What to do when someone signs again whose signature is already recorded.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum AgainStep {
    /// Signed and confirmed (or signed where no confirmation is asked): nothing to do.
    Duplicate,
    /// Still awaiting, and enough emails went to this address already.
    ResendLimit,
    /// Still awaiting: a fresh link, in the `n`th email.
    Resend { n: i64 },
}

/// The decision for a signer signing again, from their signature's pending expiry (`None`
/// once confirmed) and the confirmation emails already queued for it.
pub(super) fn again_step(confirm_expires_at: Option<Millis>, emails_sent: i64) -> AgainStep {
    match confirm_expires_at {
        None => AgainStep::Duplicate,
        Some(_) if emails_sent >= MAX_CONFIRMATION_EMAILS => AgainStep::ResendLimit,
        Some(_) => AgainStep::Resend { n: emails_sent + 1 },
    }
}

/// What recording an awaiting signature did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AwaitingRecorded {
    /// A new signature awaits confirmation; its email is queued.
    Awaiting { public_id: String },
    /// The signer had already signed and not yet confirmed: a fresh link was queued, and older
    /// links no longer work.
    Resent { public_id: String },
    /// As `Resent`, but enough emails went to this address already: nothing was queued.
    ResendLimit { public_id: String },
    /// The signer had already signed (and confirmed, or signed where no confirmation is asked):
    /// nothing was written.
    Duplicate { public_id: String },
}

/// A signature awaiting confirmation, as the confirmation link finds it.
#[derive(Debug, Clone)]
pub struct AwaitingSignature {
    pub public_id: String,
    pub campaign: String,
    /// The signer's details as recorded (they parsed when they were recorded).
    pub signer: NewSigner,
    /// Whether it was confirmed already (the link was followed before).
    pub confirmed: bool,
}

/// What following a confirmation link did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Confirmed {
    /// Confirmed now; `letters` letters queued.
    Now { public_id: String, letters: usize },
    /// Confirmed earlier; nothing changed.
    Already { public_id: String },
    /// No signature awaits this token (expired and deleted, replaced by a newer link, or never).
    NotFound,
}

/// A response stored under an API key and an `Idempotency-Key`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoredResponse {
    /// SHA-256 (hex) of the request it answered.
    pub request_hash: String,
    pub status: u16,
    pub body: String,
}

impl Queue {
    /// Records many signatures with their letters and details in ONE transaction (group
    /// commit: concurrent web requests share a commit). Each signature is still all-or-nothing
    /// with its letters; duplicates are reported per signature, in order.
    /// `details[i]` goes with `batch[i]`.
    pub async fn record_signatures_with_details(
        &self,
        batch: &[NewSignature],
        details: &[IntakeDetails],
        now: Millis,
    ) -> Result<Vec<Recorded>, QueueError> {
        store!(self, q => q.record_batch(batch, details, now).await)
    }

    /// Records a signature awaiting confirmation and queues its confirmation email; if the
    /// signer is already awaiting, replaces the link and queues a fresh email (up to
    /// [`MAX_CONFIRMATION_EMAILS`]).
    pub async fn record_awaiting(
        &self,
        p: &NewAwaitingSignature,
        now: Millis,
    ) -> Result<AwaitingRecorded, QueueError> {
        store!(self, q => q.record_awaiting(p, now).await)
    }

    /// The signature whose confirmation link has this token hash, if it has not expired.
    pub async fn awaiting_by_token(
        &self,
        token_hash: &str,
        now: Millis,
    ) -> Result<Option<AwaitingSignature>, QueueError> {
        store!(self, q => q.awaiting_by_token(token_hash, now).await)
    }

    /// Confirms the signature with this token hash and queues `letters` for it, in one
    /// transaction. Only the first confirmation creates letters.
    pub async fn confirm_signature(
        &self,
        token_hash: &str,
        letters: &[NewLetter],
        now: Millis,
    ) -> Result<Confirmed, QueueError> {
        store!(self, q => q.confirm_signature(token_hash, letters, now).await)
    }

    /// Deletes signatures whose confirmation link expired before `now`, with their queued
    /// confirmation emails. Returns how many signatures.
    pub async fn delete_expired_awaiting(&self, now: Millis) -> Result<u64, QueueError> {
        store!(self, q => q.delete_expired_awaiting(now).await)
    }

    /// The response stored for this API key (hash) and idempotency key, if any.
    pub async fn idempotent_response(
        &self,
        api_key_hash: &str,
        key: &str,
    ) -> Result<Option<StoredResponse>, QueueError> {
        store!(self, q => q.idempotent_response(api_key_hash, key).await)
    }

    /// Stores a response under this API key (hash) and idempotency key; the first one stored
    /// wins, and is returned.
    pub async fn store_idempotent_response(
        &self,
        api_key_hash: &str,
        key: &str,
        response: &StoredResponse,
        now: Millis,
    ) -> Result<StoredResponse, QueueError> {
        store!(self, q => q.store_idempotent_response(api_key_hash, key, response, now) .await)
    }

    /// Forgets idempotency keys stored before `before`. Returns how many.
    pub async fn prune_idempotency_keys(&self, before: Millis) -> Result<u64, QueueError> {
        store!(self, q => q.prune_idempotency_keys(before).await)
    }

    /// Checks the database answers (readiness probes).
    pub async fn ping(&self) -> Result<(), QueueError> {
        store!(self, q => q.ping().await)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn signing_again_resends_the_link_up_to_the_limit_and_only_while_awaiting() {
        assert_eq!(again_step(None, 1), AgainStep::Duplicate);
        assert_eq!(again_step(Some(9), 1), AgainStep::Resend { n: 2 });
        assert_eq!(
            again_step(Some(9), MAX_CONFIRMATION_EMAILS),
            AgainStep::ResendLimit
        );
        assert_eq!(confirmation_target(3), "confirmation.3");
    }
}
