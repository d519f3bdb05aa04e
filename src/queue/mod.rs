//! The durable queue: signatures, their letters and every attempt to send one, behind one API
//! whatever the database. Each store's SQL lives in its own file (`sqlite.rs` for one process
//! on one machine, `postgres.rs` for many processes on many machines) behind one
//! crate-private interface (`store.rs`); what is not SQL is here and in `moves.rs` (every state
//! write, as data checked against `domain::TRANSITIONS`) and `rows.rs` (decoding and folding
//! rows), shared by every store.
//!
//! Guarantees every backend keeps:
//! - a signature and all its letters are written in one transaction; a signature is unique per
//!   campaign and normalised email, a letter per signature and target;
//! - a claim leases letters to one worker with a fencing token, and every state write after it
//!   checks that token, so a worker that lost its lease cannot overwrite a row;
//! - no transaction is ever held open across an SMTP conversation: claims and results are
//!   separate, short transactions.
//!
//! Depends on `domain`, and on `config::redact_url` so that no error shows a database
//! password.

mod clock;
mod migrations;
mod moves;
mod postgres;
mod rows;
mod sqlite;
mod store;
mod web_intake;

use store::{store, Store as _};

pub use web_intake::{
    AwaitingRecorded, AwaitingSignature, Confirmed, IntakeDetails, NewAwaitingSignature,
    NewConfirmation, StoredResponse, MAX_CONFIRMATION_EMAILS,
};

use crate::domain::{Letter, LetterState, Signer};
use std::collections::BTreeMap;

/// Milliseconds since the Unix epoch: the queue's clock unit. Callers pass `now` in, so tests
/// and the scheduler control time.
pub type Millis = i64;

/// The current wall-clock time in queue units.
pub fn now_millis() -> Millis {
    chrono::Utc::now().timestamp_millis()
}

/// Errors of the queue.
#[derive(Debug, thiserror::Error)]
pub enum QueueError {
    /// `url` as given; shown with its password replaced (`config::redact_url`).
    #[error("cannot open the database at {}: {source} (hint: check database.url / MISSIVE_DATABASE__URL)", crate::config::redact_url(.url))]
    Connect { url: String, source: sqlx::Error },
    #[error("cannot prepare the database tables: {0}")]
    Migrate(#[from] sqlx::migrate::MigrateError),
    #[error("database error: {0}")]
    Database(#[from] sqlx::Error),
    #[error("the database url `{}` is not supported (hint: use sqlite://FILE or postgres://...)", crate::config::redact_url(.0))]
    Unsupported(String),
    #[error(
        "the database lacks migrations this version of Missive needs: {0} \
         (hint: run `missive migrate` once, or set database.migrate_on_start = true)"
    )]
    MigrationsPending(String),
    #[error(
        "the database was migrated by a newer Missive (its migration {0} is unknown here) \
         (hint: run the newer version, or restore a backup taken before the upgrade)"
    )]
    MigratedByNewer(i64),
}

impl QueueError {
    /// Whether the same statement may well succeed if tried again in a moment: the connection
    /// dropped or timed out, the server restarting or full, a deadlock or serialisation
    /// failure, SQLite busy. Anything else (bad SQL, a constraint) would fail again.
    pub fn is_transient(&self) -> bool {
        let QueueError::Database(e) = self else {
            return false;
        };
        match e {
            sqlx::Error::Io(_) | sqlx::Error::PoolTimedOut | sqlx::Error::Tls(_) => true,
            sqlx::Error::Protocol(_) | sqlx::Error::WorkerCrashed => true,
            sqlx::Error::Database(d) => d.code().is_some_and(|code| {
                // PostgreSQL: connection exceptions (08), operator intervention (57P: shutdown,
                // terminated), too many connections, serialisation failure, deadlock. SQLite:
                // busy and locked, with their extended codes.
                code.starts_with("08")
                    || code.starts_with("57P")
                    || matches!(&*code, "53300" | "40001" | "40P01")
                    || matches!(&*code, "5" | "6" | "261" | "262" | "517" | "773")
            }),
            _ => false,
        }
    }
}

fn is_postgres(url: &str) -> bool {
    url.starts_with("postgres://") || url.starts_with("postgresql://")
}

/// Where a signature came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Source {
    Cli,
    Csv,
    Web,
    Api,
}

impl Source {
    /// The name stored with the signature.
    pub fn as_str(self) -> &'static str {
        match self {
            Source::Cli => "cli",
            Source::Csv => "csv",
            Source::Web => "web",
            Source::Api => "api",
        }
    }
}

/// A letter to create, with the Message-ID it keeps on every attempt.
#[derive(Debug, Clone)]
pub struct NewLetter {
    pub letter: Letter,
    pub message_id: String,
}

/// A signature to record with its letters.
#[derive(Debug, Clone)]
pub struct NewSignature {
    /// The id shown outside (API, confirmation links): not guessable, not sequential.
    pub public_id: String,
    pub campaign: String,
    pub signer: Signer,
    pub source: Source,
    pub letters: Vec<NewLetter>,
}

/// What recording a signature did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Recorded {
    /// New signature; `letters` letters queued.
    Created { public_id: String, letters: usize },
    /// The same person had already signed this campaign; nothing was written.
    Duplicate { public_id: String },
}

/// What a worker asks for when it claims letters.
#[derive(Debug, Clone)]
pub struct ClaimRequest<'a> {
    /// Who holds the lease (shown in reports and logs).
    pub owner: &'a str,
    /// The fencing token every later write for these letters must present.
    pub token: i64,
    pub now: Millis,
    pub lease_ms: Millis,
    pub limit: u32,
    pub campaign: Option<&'a str>,
    /// Only this target's letters (a paced target with a free slot).
    pub target: Option<&'a str>,
    /// Not these campaigns' letters (they are paced per target and claimed target by target,
    /// by the pacing leader), except their confirmation emails, which are never paced.
    pub exclude_campaigns: Option<&'a [String]>,
}

/// A letter leased to a worker.
#[derive(Debug, Clone)]
pub struct ClaimedLetter {
    pub id: i64,
    pub campaign: String,
    pub message_id: String,
    /// Attempts so far, this one included.
    pub attempt: u32,
    pub lease_token: i64,
    /// When the letter was (last) queued: the start of its maximum age.
    pub queued_at: Millis,
    pub letter: Letter,
}

/// Where a letter goes after an attempt.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NextState {
    Sent,
    Deferred { retry_at: Millis },
    Failed,
    InDoubt,
    Expired,
}

impl NextState {
    /// The state this result leaves the letter in.
    pub fn state(self) -> LetterState {
        match self {
            NextState::Sent => LetterState::Sent,
            NextState::Deferred { .. } => LetterState::Deferred,
            NextState::Failed => LetterState::Failed,
            NextState::InDoubt => LetterState::InDoubt,
            NextState::Expired => LetterState::Expired,
        }
    }
}

/// One finished attempt, to be recorded.
#[derive(Debug, Clone)]
pub struct AttemptRecord {
    pub letter_id: i64,
    pub lease_token: i64,
    pub attempt: u32,
    pub worker: String,
    pub started_at: Millis,
    pub finished_at: Millis,
    pub next: NextState,
    /// The SMTP stage reached (`connect`, `rcpt`, `end_of_data`...), or `outbox`.
    pub stage: Option<String>,
    pub code: Option<u16>,
    pub enhanced_code: Option<String>,
    /// The server's reply or the error, as an organiser should read it.
    pub reply: Option<String>,
}

/// Counts for `missive status`.
#[derive(Debug, Clone, Default, serde::Serialize)]
pub struct StatusReport {
    pub signatures: i64,
    /// Letters per state, over everything selected (letters to targets only).
    pub by_state: BTreeMap<LetterState, i64>,
    /// Letters per campaign, target and state.
    pub by_target: Vec<TargetCount>,
    /// Confirmation emails (double opt-in) per state.
    pub confirmations: BTreeMap<LetterState, i64>,
    /// When the oldest letter or confirmation email still waiting to be sent was queued.
    pub oldest_waiting_since: Option<Millis>,
}

/// One row of the per-target report.
#[derive(Debug, Clone, serde::Serialize)]
pub struct TargetCount {
    pub campaign: String,
    pub target_id: String,
    pub state: LetterState,
    pub letters: i64,
}

/// A letter as reports and previews show it.
#[derive(Debug, Clone, serde::Serialize)]
pub struct LetterSummary {
    pub id: i64,
    pub campaign: String,
    pub target_id: String,
    pub state: LetterState,
    pub attempts: i64,
    pub last_code: Option<i64>,
    pub last_reply: Option<String>,
}

/// What crash recovery did.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Serialize)]
pub struct Recovered {
    /// Leased letters whose conversation never reached DATA: queued again.
    pub requeued: u64,
    /// Letters past DATA when their worker vanished: now `in_doubt`.
    pub in_doubt: u64,
}

/// The relay's health as a worker last saw it (one record per relay, `host:port`).
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct RelayHealthRecord {
    pub relay: String,
    pub usable: bool,
    /// When it entered this state.
    pub since: Millis,
    /// The last fault: the stage the session stopped at, the relay's words, the fix.
    pub stage: Option<String>,
    pub code: Option<u16>,
    pub enhanced_code: Option<String>,
    pub reply: Option<String>,
    pub hint: Option<String>,
    /// While unusable: when a worker tries again.
    pub retry_at: Option<Millis>,
    pub worker: String,
    pub updated_at: Millis,
}

/// Letters that have failed transiently and waited long: they expire at their next transient
/// failure (`sending.max_age_hours`), and `status` warns about them.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Serialize)]
pub struct Ageing {
    pub letters: i64,
    /// When the oldest of them was queued.
    pub oldest_queued_at: Option<Millis>,
}

/// Which letters an organiser's command applies to.
#[derive(Debug, Clone, Copy, Default)]
pub struct Scope<'a> {
    pub campaign: Option<&'a str>,
    pub letter: Option<i64>,
}

/// What `retry --letter` found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RetryOutcome {
    Requeued,
    NotFound,
    /// The letter is in a state retry does not apply to.
    NotRetryable(LetterState),
}

/// The queue, over whichever database the URL names.
#[derive(Debug, Clone)]
pub struct Queue {
    backend: Backend,
    /// The database's clock, as read from this process's (`clock.rs`).
    clock: clock::Clock,
}

#[derive(Debug, Clone)]
enum Backend {
    Sqlite(sqlite::SqliteQueue),
    Postgres(postgres::PgQueue),
}

impl Queue {
    /// Opens the database at `url` (creating an SQLite file if missing) and applies migrations.
    pub async fn connect(url: &str, max_connections: u32) -> Result<Queue, QueueError> {
        Queue::connect_with(url, max_connections, true).await
    }

    /// Opens the database as `[database]` says: on PostgreSQL, migrations are applied only
    /// with `migrate_on_start`, and a schema with migrations pending is an error.
    pub async fn open(settings: &crate::config::DatabaseSettings) -> Result<Queue, QueueError> {
        Queue::connect_with(
            &settings.url,
            settings.max_connections,
            settings.migrate_on_start,
        )
        .await
    }

    async fn connect_with(
        url: &str,
        max_connections: u32,
        migrate: bool,
    ) -> Result<Queue, QueueError> {
        let backend = if url.starts_with("sqlite:") {
            Backend::Sqlite(sqlite::SqliteQueue::connect(url, max_connections).await?)
        } else if is_postgres(url) {
            Backend::Postgres(postgres::PgQueue::connect(url, max_connections, migrate).await?)
        } else {
            return Err(QueueError::Unsupported(url.to_owned()));
        };
        let clock = match &backend {
            // One machine's file: its clock is the database's.
            Backend::Sqlite(_) => clock::Clock::local(),
            Backend::Postgres(q) => clock::Clock::of_database(q.pool().clone()).await?,
        };
        Ok(Queue { backend, clock })
    }

    /// Applies the migrations not applied yet; returns the descriptions of those it applied.
    pub async fn migrate(url: &str) -> Result<Vec<String>, QueueError> {
        if is_postgres(url) {
            postgres::PgQueue::migrate(url).await
        } else if url.starts_with("sqlite:") {
            sqlite::SqliteQueue::migrate(url).await
        } else {
            Err(QueueError::Unsupported(url.to_owned()))
        }
    }

    /// Now, on the database's clock: what every process sharing this queue agrees on (leases,
    /// due times, the limits' arrival times), however their own clocks drift. On SQLite, this
    /// machine's clock.
    pub fn now(&self) -> Millis {
        self.clock.now()
    }

    /// `now()` in microseconds: the unit of the limits (`reserve`, `hold`).
    pub fn now_us(&self) -> i64 {
        self.clock.now_us()
    }

    /// Which store this queue is on: `sqlite` or `postgres`.
    pub fn store_name(&self) -> &'static str {
        match self.backend {
            Backend::Sqlite(_) => "sqlite",
            Backend::Postgres(_) => "postgres",
        }
    }

    /// Records signatures with their letters. Each signature and its letters are written
    /// together (the whole batch is one transaction); duplicates are reported, not errors.
    pub async fn record_signatures(
        &self,
        batch: &[NewSignature],
        now: Millis,
    ) -> Result<Vec<Recorded>, QueueError> {
        store!(self, q => q.record_batch(batch, &[], now).await)
    }

    /// Leases up to `limit` due letters to a worker, oldest due first.
    pub async fn claim(&self, req: &ClaimRequest<'_>) -> Result<Vec<ClaimedLetter>, QueueError> {
        store!(self, q => q.claim(req).await)
    }

    /// Records finished attempts and moves their letters on, in one transaction. A record whose
    /// lease token no longer matches changes no letter (its attempt row is still kept).
    /// Returns how many letters were moved.
    pub async fn record_attempts(
        &self,
        records: &[AttemptRecord],
        now: Millis,
    ) -> Result<u64, QueueError> {
        Ok(self.journal(0, &[], records, now).await?.1)
    }

    /// Hands back leased letters whose conversation never started (claimed, or recorded as
    /// about to go but never handed to the relay): they are queued again, and the attempt they
    /// were counted for is uncounted.
    pub async fn release(&self, ids: &[(i64, i64)], now: Millis) -> Result<u64, QueueError> {
        store!(self, q => q.release(ids, now).await)
    }

    /// Letters whose worker vanished (lease expired): those it had not started are queued
    /// again; those marked `sending` may have been delivered, so they become `in_doubt`, never
    /// silently resent.
    pub async fn recover_expired(&self, now: Millis) -> Result<Recovered, QueueError> {
        store!(self, q => q.recover_expired(now).await)
    }

    /// Moves leased letters to `sending` as their envelopes go out (no byte of a message is
    /// transmitted before), in one write for many letters. Returns the ids that moved (a letter whose lease was lost does not).
    pub async fn mark_sending(
        &self,
        token: i64,
        ids: &[i64],
        now: Millis,
    ) -> Result<Vec<i64>, QueueError> {
        Ok(self.journal(token, ids, &[], now).await?.0)
    }

    /// The sending path's one write: records finished attempts (as `record_attempts`) and
    /// moves the letters in `marks`, leased under `token`, to `sending` (as `mark_sending`),
    /// in one transaction. Returns the marked ids that moved and how many letters the records
    /// moved.
    pub async fn journal(
        &self,
        token: i64,
        marks: &[i64],
        records: &[AttemptRecord],
        now: Millis,
    ) -> Result<(Vec<i64>, u64), QueueError> {
        store!(self, q => q.journal(token, marks, records, now).await)
    }

    /// Extends every lease held under `token` until `until` (the worker's heartbeat).
    /// Of `ids`, those in `sending` under the lease `token`: after a journal write whose answer
    /// was lost, the letters it did mark.
    pub async fn sending_under(&self, token: i64, ids: &[i64]) -> Result<Vec<i64>, QueueError> {
        store!(self, q => q.sending_under(token, ids).await)
    }

    pub async fn extend_leases(&self, token: i64, until: Millis) -> Result<u64, QueueError> {
        store!(self, q => q.extend_leases(token, until).await)
    }

    /// Settles `in_doubt` letters: queue them again (`resend`) or record them as sent.
    pub async fn resolve_in_doubt(
        &self,
        scope: &Scope<'_>,
        resend: bool,
        now: Millis,
    ) -> Result<u64, QueueError> {
        store!(self, q => q.resolve_in_doubt(scope, resend, now).await)
    }

    /// When the next waiting letter (of `campaign`, if given; not of a campaign in `exclude`,
    /// except confirmation emails; not paused) is due, if any.
    pub async fn next_due(
        &self,
        campaign: Option<&str>,
        exclude: Option<&[String]>,
    ) -> Result<Option<Millis>, QueueError> {
        store!(self, q => q.next_due(campaign, exclude).await)
    }

    /// Counts for reports.
    pub async fn status(&self, campaign: Option<&str>) -> Result<StatusReport, QueueError> {
        store!(self, q => q.status(campaign).await)
    }

    /// Queues failed and expired letters again, due now. Returns how many.
    pub async fn retry_failed(
        &self,
        campaign: Option<&str>,
        now: Millis,
    ) -> Result<u64, QueueError> {
        store!(self, q => q.retry_failed(campaign, now).await)
    }

    /// Queues one failed, expired or deferred letter again, due now.
    pub async fn retry_letter(&self, id: i64, now: Millis) -> Result<RetryOutcome, QueueError> {
        store!(self, q => q.retry_letter(id, now).await)
    }

    /// One letter's state and last reply.
    pub async fn letter(&self, id: i64) -> Result<Option<LetterSummary>, QueueError> {
        store!(self, q => q.letter(id).await)
    }

    /// The letters of one signature, by its public id.
    pub async fn signature_letters(
        &self,
        public_id: &str,
    ) -> Result<Option<Vec<LetterSummary>>, QueueError> {
        store!(self, q => q.signature_letters(public_id).await)
    }

    /// Pauses a campaign (or one target): its waiting letters are `held` and none is claimed
    /// until it is resumed, including letters created meanwhile. Returns how many were held.
    pub async fn pause(
        &self,
        campaign: &str,
        target: Option<&str>,
        now: Millis,
    ) -> Result<u64, QueueError> {
        store!(self, q => q.pause(campaign, target, now).await)
    }

    /// Lifts a pause; held letters are queued again. Returns how many.
    pub async fn resume(
        &self,
        campaign: &str,
        target: Option<&str>,
        now: Millis,
    ) -> Result<u64, QueueError> {
        store!(self, q => q.resume(campaign, target, now).await)
    }

    /// Cancels a campaign's (or one target's) waiting letters: they will never be sent.
    /// Returns how many.
    pub async fn cancel(
        &self,
        campaign: &str,
        target: Option<&str>,
        now: Millis,
    ) -> Result<u64, QueueError> {
        store!(self, q => q.cancel(campaign, target, now).await)
    }

    /// The pauses in force: `(campaign, None)` for a whole campaign, or one target.
    pub async fn pauses(&self) -> Result<Vec<(String, Option<String>)>, QueueError> {
        store!(self, q => q.pauses().await)
    }

    /// Every attempt since `since` with its recipient and domain, and every letter leased now
    /// (claimed since then, not attempted yet), oldest first: what pacing restores when a
    /// worker starts or becomes the pacing leader, so neither allows a burst.
    pub async fn recent_sends(
        &self,
        since: Millis,
    ) -> Result<Vec<(String, String, Millis)>, QueueError> {
        store!(self, q => q.recent_sends(since).await)
    }

    /// Letters waiting (queued, deferred or held) per campaign and target.
    pub async fn waiting_per_target(
        &self,
        campaign: Option<&str>,
    ) -> Result<Vec<(String, String, i64)>, QueueError> {
        store!(self, q => q.waiting_per_target(campaign).await)
    }

    /// Writes the relay's health record (replacing the one before).
    pub async fn save_relay_health(&self, record: &RelayHealthRecord) -> Result<(), QueueError> {
        store!(self, q => q.save_relay_health(record).await)
    }

    /// Every relay's health record.
    pub async fn relay_health(&self) -> Result<Vec<RelayHealthRecord>, QueueError> {
        store!(self, q => q.relay_health().await)
    }

    /// Deferred letters (of `campaign`, if given) queued at or before `queued_before`.
    pub async fn ageing(
        &self,
        campaign: Option<&str>,
        queued_before: Millis,
    ) -> Result<Ageing, QueueError> {
        store!(self, q => q.ageing(campaign, queued_before).await)
    }

    /// Reserves `n` tokens of the GCRA named `key` (`interval_us` apart) at `now_us`, for every
    /// process sharing the queue at once; returns the limit's new theoretical arrival time, from
    /// which `pacing::Gcra` gives each token's time.
    pub async fn reserve(
        &self,
        key: &str,
        n: u32,
        interval_us: i64,
        now_us: i64,
    ) -> Result<i64, QueueError> {
        store!(self, q => q.reserve(key, n, interval_us, now_us).await)
    }

    /// Moves the limit named `key` to `until_us` at the earliest (a cool-down): no token of it
    /// is given before. Returns its arrival time.
    pub async fn hold(&self, key: &str, until_us: i64) -> Result<i64, QueueError> {
        store!(self, q => q.hold(key, until_us).await)
    }

    /// The arrival time of the limit named `key`, if it was ever used.
    pub async fn throttle(&self, key: &str) -> Result<Option<i64>, QueueError> {
        store!(self, q => q.throttle(key).await)
    }

    /// Takes or renews the lease on `role` for `holder` until `now + lease_ms`, if it is free,
    /// expired, already `holder`'s, or held by `replacing` (a holder known to be gone). Returns
    /// who holds it now: `holder`, or the one who kept it.
    pub async fn lead(
        &self,
        role: &str,
        holder: &str,
        now: Millis,
        lease_ms: Millis,
        replacing: Option<&str>,
    ) -> Result<String, QueueError> {
        store!(self, q => q.lead(role, holder, now, lease_ms, replacing).await)
    }

    /// Gives up the lease on `role`, if `holder` holds it.
    pub async fn resign(&self, role: &str, holder: &str) -> Result<(), QueueError> {
        store!(self, q => q.resign(role, holder).await)
    }

    /// Closes the pool, flushing the database.
    pub async fn close(&self) {
        store!(self, q => q.close().await)
    }
}
