//! The one interface every store implements: the SQL side of each queue operation, and only
//! that. `Queue` (in `mod.rs` and `web_intake.rs`) is an enum over the stores, and `store!`
//! calls the same method on whichever it holds: static dispatch, and a store that lacks a
//! method does not compile. What is not SQL (decoding rows, folding the status report, the
//! moves and their fences, the policies) lives beside this in `queue/`, shared by all stores.
//!
//! Each method's contract is the `Queue` method of the same name, which documents it. Two
//! traits, the core and web intake, so each store keeps the two in files of their own.
//!
//! Depends on `domain` only.

use super::{
    Ageing, AttemptRecord, AwaitingRecorded, AwaitingSignature, ClaimRequest, ClaimedLetter,
    Confirmed, IntakeDetails, LetterSummary, Millis, NewAwaitingSignature, NewLetter, NewSignature,
    QueueError, Recorded, Recovered, RelayHealthRecord, RetryOutcome, Scope, StatusReport,
    StoredResponse,
};

/// The SQL of every queue operation.
pub(super) trait Store {
    async fn close(&self);
    async fn ping(&self) -> Result<(), QueueError>;
    /// Signatures with their letters (and the intake's details, when given), in one
    /// transaction.
    async fn record_batch(
        &self,
        batch: &[NewSignature],
        details: &[IntakeDetails],
        now: Millis,
    ) -> Result<Vec<Recorded>, QueueError>;
    async fn claim(&self, req: &ClaimRequest<'_>) -> Result<Vec<ClaimedLetter>, QueueError>;
    async fn journal(
        &self,
        token: i64,
        marks: &[i64],
        records: &[AttemptRecord],
        now: Millis,
    ) -> Result<(Vec<i64>, u64), QueueError>;
    async fn release(&self, ids: &[(i64, i64)], now: Millis) -> Result<u64, QueueError>;
    async fn recover_expired(&self, now: Millis) -> Result<Recovered, QueueError>;
    async fn extend_leases(&self, token: i64, until: Millis) -> Result<u64, QueueError>;
    async fn sending_under(&self, token: i64, ids: &[i64]) -> Result<Vec<i64>, QueueError>;
    async fn resolve_in_doubt(
        &self,
        scope: &Scope<'_>,
        resend: bool,
        now: Millis,
    ) -> Result<u64, QueueError>;
    async fn next_due(
        &self,
        campaign: Option<&str>,
        exclude: Option<&[String]>,
    ) -> Result<Option<Millis>, QueueError>;
    async fn status(&self, campaign: Option<&str>) -> Result<StatusReport, QueueError>;
    async fn retry_failed(&self, campaign: Option<&str>, now: Millis) -> Result<u64, QueueError>;
    async fn retry_letter(&self, id: i64, now: Millis) -> Result<RetryOutcome, QueueError>;
    async fn letter(&self, id: i64) -> Result<Option<LetterSummary>, QueueError>;
    async fn signature_letters(
        &self,
        public_id: &str,
    ) -> Result<Option<Vec<LetterSummary>>, QueueError>;
    async fn pause(
        &self,
        campaign: &str,
        target: Option<&str>,
        now: Millis,
    ) -> Result<u64, QueueError>;
    async fn resume(
        &self,
        campaign: &str,
        target: Option<&str>,
        now: Millis,
    ) -> Result<u64, QueueError>;
    async fn cancel(
        &self,
        campaign: &str,
        target: Option<&str>,
        now: Millis,
    ) -> Result<u64, QueueError>;
    async fn pauses(&self) -> Result<Vec<(String, Option<String>)>, QueueError>;
    async fn recent_sends(
        &self,
        since: Millis,
    ) -> Result<Vec<(String, String, Millis)>, QueueError>;
    async fn waiting_per_target(
        &self,
        campaign: Option<&str>,
    ) -> Result<Vec<(String, String, i64)>, QueueError>;
    async fn save_relay_health(&self, record: &RelayHealthRecord) -> Result<(), QueueError>;
    async fn relay_health(&self) -> Result<Vec<RelayHealthRecord>, QueueError>;
    async fn ageing(
        &self,
        campaign: Option<&str>,
        queued_before: Millis,
    ) -> Result<Ageing, QueueError>;

    // Limits shared by every process (`Queue::reserve` and the others document them).
    async fn reserve(
        &self,
        key: &str,
        n: u32,
        interval_us: i64,
        now_us: i64,
    ) -> Result<i64, QueueError>;
    async fn hold(&self, key: &str, until_us: i64) -> Result<i64, QueueError>;
    async fn throttle(&self, key: &str) -> Result<Option<i64>, QueueError>;
    async fn lead(
        &self,
        role: &str,
        holder: &str,
        now: Millis,
        lease_ms: Millis,
        replacing: Option<&str>,
    ) -> Result<String, QueueError>;
    async fn resign(&self, role: &str, holder: &str) -> Result<(), QueueError>;
}

/// The SQL of web and API intake (`web_intake.rs`): double opt-in and idempotency keys.
pub(super) trait IntakeStore {
    async fn record_awaiting(
        &self,
        p: &NewAwaitingSignature,
        now: Millis,
    ) -> Result<AwaitingRecorded, QueueError>;
    async fn awaiting_by_token(
        &self,
        token_hash: &str,
        now: Millis,
    ) -> Result<Option<AwaitingSignature>, QueueError>;
    async fn confirm_signature(
        &self,
        token_hash: &str,
        letters: &[NewLetter],
        now: Millis,
    ) -> Result<Confirmed, QueueError>;
    async fn delete_expired_awaiting(&self, now: Millis) -> Result<u64, QueueError>;
    async fn idempotent_response(
        &self,
        api_key_hash: &str,
        key: &str,
    ) -> Result<Option<StoredResponse>, QueueError>;
    async fn store_idempotent_response(
        &self,
        api_key_hash: &str,
        key: &str,
        response: &StoredResponse,
        now: Millis,
    ) -> Result<StoredResponse, QueueError>;
    async fn prune_idempotency_keys(&self, before: Millis) -> Result<u64, QueueError>;
}

/// Calls `$call` on the store `$queue` holds, bound as `$s`.
macro_rules! store {
    ($queue:expr, $s:ident => $call:expr) => {
        match &$queue.backend {
            $crate::queue::Backend::Sqlite($s) => $call,
            $crate::queue::Backend::Postgres($s) => $call,
        }
    };
}
pub(super) use store;
