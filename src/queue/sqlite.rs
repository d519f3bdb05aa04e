//! The queue on SQLite: one file, WAL journal, a busy timeout so concurrent writers wait their
//! turn. The sending path and imports write through one dedicated connection (`writer`); reads,
//! reports and organiser commands use the pool. Every write transaction begins with a write, so
//! it takes the write lock at once and never fails half-way on a stale read snapshot. Batches
//! of ids travel as one JSON array bound to a single parameter and read with `json_each`;
//! batches of rows (signatures, letters and their texts, attempts and their results) go in
//! multi-row statements of a few fixed sizes, their values bound as they are, never escaped
//! into JSON and parsed back. Every state write's fence comes from `queue::moves`.
//!
//! Depends on `queue` (its types, `moves`, `rows`) and `domain` only.

use super::moves;
use super::rows::{self, ClaimedRow, StatusRow, SummaryRow};
use super::store::Store;
use super::{
    Ageing, AttemptRecord, ClaimRequest, ClaimedLetter, IntakeDetails, LetterSummary, Millis,
    NewSignature, QueueError, Recorded, Recovered, RelayHealthRecord, RetryOutcome, Scope,
    StatusReport,
};
use crate::domain::LetterState;
use sqlx::sqlite::{SqliteConnectOptions, SqliteJournalMode, SqlitePoolOptions, SqliteSynchronous};
use sqlx::SqlitePool;
use std::collections::{HashMap, HashSet};
use std::str::FromStr;
use std::time::Duration;

mod web_intake;

/// Hands a leased letter back unstarted (`moves::RELEASE`, `moves::RECOVER_CLAIMED`): the
/// attempt it was counted for is uncounted, and it waits as before. `?1` is the time.
fn unclaim_sql() -> String {
    format!(
        "SET state = {}, attempts = attempts - 1, updated_at = ?1,
            lease_owner = NULL, lease_token = NULL, lease_expires_at = NULL",
        moves::UNCLAIMED_STATE_SQL
    )
}

static MIGRATOR: sqlx::migrate::Migrator = sqlx::migrate!("./migrations/sqlite");

#[derive(Debug, Clone)]
pub(super) struct SqliteQueue {
    pool: SqlitePool,
    /// One connection for the sending path's writes (claims, marks, results, leases) and
    /// imports. SQLite admits one writer at a time anyway: here they queue in order instead of
    /// sleeping in SQLite's busy handler, and a connection that does all the writing keeps its
    /// page cache from one transaction to the next (another connection's commit would make it
    /// drop the whole cache), so a claimed letter's pages are still cached when it is marked and
    /// recorded.
    writer: SqlitePool,
}

/// The end of the statement moving a batch of letters on after their attempts: it follows the
/// rows of `r` (`WITH r (...) AS (VALUES ...`), then binds the time. Each row is fenced by its
/// lease token and by the leased states its next state may be reached from
/// (`moves::record_fence`); built once.
fn record_update_tail() -> &'static str {
    static SQL: std::sync::OnceLock<String> = std::sync::OnceLock::new();
    SQL.get_or_init(|| {
        let fences: String = LetterState::ALL
            .into_iter()
            .filter(|to| !moves::record_fence(*to).is_empty())
            .map(|to| {
                format!(
                    " WHEN '{}' THEN letters.state IN ({})",
                    to.as_str(),
                    moves::states_sql(&moves::record_fence(to))
                )
            })
            .collect();
        format!(
            ")
             UPDATE letters
                SET state = r.state, next_attempt_at = r.next_at, sent_at = r.sent_at,
                    last_code = r.code, last_enhanced_code = r.enhanced_code,
                    last_reply = r.reply, updated_at = ?,
                    lease_owner = NULL, lease_token = NULL, lease_expires_at = NULL
               FROM r
              WHERE letters.id = r.id AND letters.lease_token = r.token
                AND CASE r.state{fences} ELSE 0 END"
        )
    })
}

/// The columns of a new `signatures` row, in the order `bind_signature` binds them.
pub(super) use super::rows::SIGNATURE_COLUMNS;

type ScalarQuery<'q, O> =
    sqlx::query::QueryScalar<'q, sqlx::Sqlite, O, sqlx::sqlite::SqliteArguments<'q>>;

/// Binds `SIGNATURE_COLUMNS` for `sig`, with `details` (consent, where the signer came from)
/// or the defaults (no consent).
fn bind_signature<'q, O>(
    query: ScalarQuery<'q, O>,
    sig: &'q NewSignature,
    details: Option<&'q crate::queue::IntakeDetails>,
    now: Millis,
) -> ScalarQuery<'q, O> {
    let s = &sig.signer;
    query
        .bind(sig.public_id.as_str())
        .bind(sig.campaign.as_str())
        .bind(s.email.as_str())
        .bind(s.email.normalized())
        .bind(s.first_name.as_str())
        .bind(s.last_name.as_str())
        .bind(s.city.as_deref())
        .bind(s.postal_code.as_deref())
        .bind(s.country.as_deref())
        .bind(s.language.as_ref().map(|l| l.as_str()))
        .bind(s.message.as_deref())
        .bind(sig.source.as_str())
        .bind(now)
        .bind(details.is_some_and(|d| d.consent_contact))
        .bind(details.and_then(|d| d.referrer.as_deref()))
}

/// Rows in one multi-row INSERT at most.
const MAX_ROWS: usize = 64;

/// The statement sizes `n` rows go in: as many of `MAX_ROWS` as fit, then the powers of two
/// that make up the rest, largest first, so a table is written with one of seven statement
/// texts whatever the batch (each prepared once and kept in the connection's cache).
fn row_chunks(n: usize) -> impl Iterator<Item = usize> {
    let rest = n % MAX_ROWS;
    std::iter::repeat_n(MAX_ROWS, n / MAX_ROWS).chain(
        (0..MAX_ROWS.trailing_zeros())
            .rev()
            .map(|bit| 1 << bit)
            .filter(move |size| rest & size != 0),
    )
}

/// How a batch of `n` rows goes in statements that may carry padding rows that match nothing:
/// `(rows, size)` pairs, as many full statements of `MAX_ROWS` as fit, then the rest in one
/// statement of the next power of two. One statement (one round trip to the database thread)
/// where `row_chunks` would need up to six, from the same seven statement texts.
fn padded_chunks(n: usize) -> impl Iterator<Item = (usize, usize)> {
    let rest = n % MAX_ROWS;
    std::iter::repeat_n((MAX_ROWS, MAX_ROWS), n / MAX_ROWS)
        .chain((rest > 0).then(|| (rest, rest.next_power_of_two())))
}

type RowsQuery<'q> = sqlx::query::Query<'q, sqlx::Sqlite, sqlx::sqlite::SqliteArguments<'q>>;

/// Binds `padding` rows of NULLs, one for each placeholder of `row`: the rows a padded
/// statement (`padded_chunks`) carries beyond the real ones.
fn bind_padding<'q>(mut query: RowsQuery<'q>, row: &str, padding: usize) -> RowsQuery<'q> {
    for _ in 0..padding * row.matches('?').count() {
        query = query.bind(None::<i64>);
    }
    query
}

/// `head`, `rows` copies of `row` separated by commas, then `tail`.
fn multi_row_sql(head: &str, row: &str, rows: usize, tail: &str) -> String {
    let mut sql = String::with_capacity(head.len() + (row.len() + 2) * rows + tail.len());
    sql.push_str(head);
    for i in 0..rows {
        if i > 0 {
            sql.push_str(", ");
        }
        sql.push_str(row);
    }
    sql.push_str(tail);
    sql
}

/// How often the WAL is copied back into the database file.
const CHECKPOINT_EVERY: Duration = Duration::from_millis(500);

/// Copies the WAL back into the database file every `CHECKPOINT_EVERY`, on a reader connection
/// and in PASSIVE mode (it neither waits for nor blocks the writer), until the pool closes.
/// A checkpoint with nothing to copy costs next to nothing.
async fn checkpoint_in_background(pool: SqlitePool) {
    let mut every = tokio::time::interval(CHECKPOINT_EVERY);
    every.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        every.tick().await;
        if pool.is_closed() {
            return;
        }
        if let Err(e) = sqlx::query("PRAGMA wal_checkpoint(PASSIVE)")
            .execute(&pool)
            .await
        {
            if pool.is_closed() {
                return;
            }
            tracing::debug!(error = %e, "background checkpoint failed; the writer checkpoints");
        }
    }
}

/// Records finished attempts and moves their letters on, inside `tx`.
async fn record_in(
    tx: &mut sqlx::Transaction<'_, sqlx::Sqlite>,
    records: &[AttemptRecord],
    now: Millis,
) -> Result<u64, QueueError> {
    // Multi-row statements with bound values: a few statements per batch, not two per
    // letter, from a few fixed texts (prepared once, cached). Every attempt is kept, in
    // batch order.
    const ATTEMPT_ROW: &str = "(?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)";
    let mut rest = records.iter();
    for (rows, size) in padded_chunks(records.len()) {
        // Padding rows are all NULL, and left out by the WHERE.
        let sql = multi_row_sql(
            "INSERT INTO attempts (letter_id, attempt, worker, started_at, finished_at,
                duration_ms, outcome, stage, code, enhanced_code, reply)
             SELECT * FROM (VALUES ",
            ATTEMPT_ROW,
            size,
            ") WHERE column1 IS NOT NULL",
        );
        let mut query = sqlx::query(&sql);
        for r in rest.by_ref().take(rows) {
            query = query
                .bind(r.letter_id)
                .bind(r.attempt)
                .bind(r.worker.as_str())
                .bind(r.started_at)
                .bind(r.finished_at)
                .bind(r.finished_at - r.started_at)
                .bind(r.next.state().as_str())
                .bind(r.stage.as_deref())
                .bind(r.code)
                .bind(r.enhanced_code.as_deref())
                .bind(r.reply.as_deref());
        }
        bind_padding(query, ATTEMPT_ROW, size - rows)
            .execute(&mut **tx)
            .await?;
    }
    // A letter's records apply in batch order (`rows::rounds`).
    let rounds = rows::rounds(records);
    const MOVE_ROW: &str = "(?, ?, ?, ?, ?, ?, ?, ?)";
    let mut moved = 0;
    for round in &rounds {
        let mut rest = round.iter();
        for (rows, size) in padded_chunks(round.len()) {
            // Padding rows have no id, and so match no letter.
            let sql = multi_row_sql(
                "WITH r (id, token, state, code, enhanced_code, reply, next_at, sent_at)
                   AS (VALUES ",
                MOVE_ROW,
                size,
                record_update_tail(),
            );
            let mut query = sqlx::query(&sql);
            for r in rest.by_ref().take(rows) {
                let outcome = r.outcome();
                query = query
                    .bind(r.letter_id)
                    .bind(r.lease_token)
                    .bind(outcome.state.as_str())
                    .bind(r.code)
                    .bind(r.enhanced_code.as_deref())
                    .bind(r.reply.as_deref())
                    .bind(outcome.next_attempt_at)
                    .bind(outcome.sent_at);
            }
            moved += bind_padding(query, MOVE_ROW, size - rows)
                .bind(now)
                .execute(&mut **tx)
                .await?
                .rows_affected();
        }
    }
    Ok(moved)
}

impl SqliteQueue {
    /// The file's connection options: created if missing, WAL, and the tuning below.
    fn options(url: &str) -> Result<SqliteConnectOptions, sqlx::Error> {
        Ok(SqliteConnectOptions::from_str(url)?
            .create_if_missing(true)
            .journal_mode(SqliteJournalMode::Wal)
            // In WAL mode NORMAL survives a process crash (kill -9); only an OS crash or power
            // loss can roll back the last commits.
            .synchronous(SqliteSynchronous::Normal)
            .busy_timeout(Duration::from_secs(30))
            .foreign_keys(true)
            .pragma("temp_store", "memory")
            // 4 MB of page cache per connection: the sending path reads each letter's pages
            // once and writes them three times within seconds; a larger cache measured no
            // faster, and every connection holds its own.
            .pragma("cache_size", "-4000")
            // Connections other than the writer checkpoint every ~40 MB of WAL rather than
            // 4 MB: a letter's pages are rewritten at claim, mark and record, and a checkpoint
            // copies only the latest version.
            .pragma("wal_autocheckpoint", "10000"))
    }

    /// Applies the pending migrations to the file (creating it if missing); returns them.
    /// (Opening the queue applies them too: one process owns an SQLite file.)
    pub(super) async fn migrate(url: &str) -> Result<Vec<String>, QueueError> {
        let connect_err = |source| QueueError::Connect {
            url: crate::config::redact_url(url),
            source,
        };
        let pool = SqlitePoolOptions::new()
            .max_connections(1)
            .connect_with(Self::options(url).map_err(connect_err)?)
            .await
            .map_err(connect_err)?;
        let applied = super::migrations::apply(&MIGRATOR, &pool).await;
        pool.close().await;
        applied
    }

    /// Opens (creating it if missing) and migrates the database file.
    pub(super) async fn connect(url: &str, max_connections: u32) -> Result<Self, QueueError> {
        let connect_err = |source| QueueError::Connect {
            url: crate::config::redact_url(url),
            source,
        };
        let options = Self::options(url).map_err(connect_err)?;
        let pool = SqlitePoolOptions::new()
            .max_connections(max_connections)
            .test_before_acquire(false)
            .connect_with(options.clone())
            .await
            .map_err(connect_err)?;
        MIGRATOR.run(&pool).await?;
        // A file connection does not go stale between uses: no ping before each one (a round
        // trip to the connection's thread before every transaction of the sending path).
        // The writer leaves checkpoints to a task of their own (below), so the sending path's
        // commits do not stop to copy the WAL back; past ~160 MB of WAL it does them itself.
        let writer = SqlitePoolOptions::new()
            .max_connections(1)
            .test_before_acquire(false)
            .connect_with(options.pragma("wal_autocheckpoint", "40000"))
            .await
            .map_err(connect_err)?;
        if let Ok(runtime) = tokio::runtime::Handle::try_current() {
            runtime.spawn(checkpoint_in_background(pool.clone()));
        }
        Ok(SqliteQueue { pool, writer })
    }
}

impl Store for SqliteQueue {
    async fn close(&self) {
        self.writer.close().await;
        self.pool.close().await;
    }

    async fn ping(&self) -> Result<(), QueueError> {
        sqlx::query("SELECT 1").execute(&self.pool).await?;
        Ok(())
    }

    /// Records signatures with their letters in one transaction; `details[i]` (consent, where
    /// the signer came from) goes with `batch[i]` when given, else the defaults (no consent).
    async fn record_batch(
        &self,
        batch: &[NewSignature],
        details: &[IntakeDetails],
        now: Millis,
    ) -> Result<Vec<Recorded>, QueueError> {
        if batch.is_empty() {
            return Ok(Vec::new());
        }
        let mut tx = self.writer.begin().await?;
        // Multi-row INSERTs with bound values: a handful of statements per batch rather than
        // one per row, and the texts (letters of several KB) bound as they are, never escaped
        // into JSON and parsed back. Strings are bound as `&str`: sqlx borrows those, where a
        // `&String` would be copied. Signatures go in batch order, so of two rows for one
        // signer in a batch the first is the one kept.
        let mut created = HashSet::with_capacity(batch.len());
        let mut rest = batch.iter().enumerate();
        for rows in row_chunks(batch.len()) {
            let sql = multi_row_sql(
                &format!("INSERT INTO signatures ({SIGNATURE_COLUMNS}) VALUES "),
                "(?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                rows,
                " ON CONFLICT (campaign, email_normalized) DO NOTHING RETURNING public_id",
            );
            let mut query = sqlx::query_scalar::<_, String>(&sql);
            for (i, sig) in rest.by_ref().take(rows) {
                query = bind_signature(query, sig, details.get(i), now);
            }
            created.extend(query.fetch_all(&mut *tx).await?);
        }
        let letters: Vec<(&NewSignature, &crate::queue::NewLetter)> = batch
            .iter()
            .filter(|sig| created.contains(&sig.public_id))
            .flat_map(|sig| sig.letters.iter().map(move |l| (sig, l)))
            .collect();
        // Letters and their bodies in padded statements (`padded_chunks`): one statement per
        // 64 rows, whatever the batch; their order within a batch does not matter.
        const LETTER_ROW: &str = "(?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)";
        let mut rest = letters.iter();
        for (rows, size) in padded_chunks(letters.len()) {
            let sql = multi_row_sql(
                "INSERT INTO letters (signature_id, campaign, target_id, recipient, recipient_name,
                    recipient_domain, from_name, from_address, reply_to, language, template_hash,
                    message_id, state, attempts, next_attempt_at, queued_at, created_at, updated_at)
                 SELECT (SELECT id FROM signatures WHERE public_id = column1), column2, column3,
                    column4, column5, column6, column7, column8, column9, column10, column11,
                    column12, 'queued', 0, column13, column13, column13, column13
                   FROM (VALUES ",
                LETTER_ROW,
                size,
                ") WHERE column1 IS NOT NULL",
            );
            let mut query = sqlx::query(&sql);
            for (sig, l) in rest.by_ref().take(rows) {
                let letter = &l.letter;
                query = query
                    .bind(sig.public_id.as_str())
                    .bind(sig.campaign.as_str())
                    .bind(letter.target_id.as_str())
                    .bind(letter.recipient.as_str())
                    .bind(letter.recipient_name.as_str())
                    .bind(letter.recipient.domain())
                    .bind(letter.from_name.as_str())
                    .bind(letter.from_address.as_str())
                    .bind(letter.reply_to.as_str())
                    .bind(letter.language.as_str())
                    .bind(letter.template_hash.as_str())
                    .bind(l.message_id.as_str())
                    .bind(now);
            }
            bind_padding(query, LETTER_ROW, size - rows)
                .execute(&mut *tx)
                .await?;
        }
        const BODY_ROW: &str = "(?, ?, ?, ?)";
        let mut rest = letters.iter();
        for (rows, size) in padded_chunks(letters.len()) {
            let sql = multi_row_sql(
                "INSERT INTO letter_bodies (letter_id, subject, body_text, body_html)
                 SELECT (SELECT id FROM letters WHERE message_id = column1), column2, column3,
                    column4
                   FROM (VALUES ",
                BODY_ROW,
                size,
                ") WHERE column1 IS NOT NULL",
            );
            let mut query = sqlx::query(&sql);
            for (_, l) in rest.by_ref().take(rows) {
                let letter = &l.letter;
                query = query
                    .bind(l.message_id.as_str())
                    .bind(letter.subject.as_str())
                    .bind(letter.body_text.as_str())
                    .bind(letter.body_html.as_deref());
            }
            bind_padding(query, BODY_ROW, size - rows)
                .execute(&mut *tx)
                .await?;
        }
        // The signatures already there for the signers the batch did not create.
        let mut existing = HashMap::new();
        for sig in batch.iter().filter(|s| !created.contains(&s.public_id)) {
            let key = (sig.campaign.clone(), sig.signer.email.normalized());
            if existing.contains_key(&key) {
                continue;
            }
            let public_id: String = sqlx::query_scalar(
                "SELECT public_id FROM signatures WHERE campaign = ?1 AND email_normalized = ?2",
            )
            .bind(key.0.as_str())
            .bind(key.1.as_str())
            .fetch_one(&mut *tx)
            .await?;
            existing.insert(key, public_id);
        }
        let out = rows::recorded(batch, &created, &existing)?;
        tx.commit().await?;
        Ok(out)
    }

    async fn claim(&self, req: &ClaimRequest<'_>) -> Result<Vec<ClaimedLetter>, QueueError> {
        static SQL: std::sync::OnceLock<String> = std::sync::OnceLock::new();
        let sql = SQL.get_or_init(|| {
            format!(
                "UPDATE letters
                SET state = 'claimed', lease_owner = ?1, lease_token = ?2, lease_expires_at = ?3,
                    attempts = attempts + 1, updated_at = ?4
              WHERE id IN (
                    SELECT id FROM letters
                     WHERE state IN ({}) AND next_attempt_at <= ?4
                       AND (?5 IS NULL OR campaign = ?5)
                       AND (?7 IS NULL OR target_id = ?7)
                       AND (?8 IS NULL OR kind = 'confirmation'
                            OR campaign NOT IN (SELECT value FROM json_each(?8)))
                       AND NOT EXISTS (SELECT 1 FROM pauses p WHERE p.campaign = letters.campaign
                                          AND p.target_id IN ('{}', letters.target_id))
                     ORDER BY priority DESC, next_attempt_at, id
                     LIMIT ?6)
             RETURNING id",
                moves::CLAIM.fence_sql(),
                rows::WHOLE_CAMPAIGN
            )
        });
        let ids: Vec<i64> = sqlx::query_scalar(sql)
            .bind(req.owner)
            .bind(req.token)
            .bind(req.now + req.lease_ms)
            .bind(req.now)
            .bind(req.campaign)
            .bind(req.limit)
            .bind(req.target)
            .bind(
                req.exclude_campaigns
                    .map(|c| serde_json::to_string(c).expect("campaign names serialise")),
            )
            .fetch_all(&self.writer)
            .await?;
        if ids.is_empty() {
            return Ok(Vec::new());
        }
        // What the letters say, read on a reader connection once the claim is committed: the
        // one writer only moves them (the sending path's marks and results wait for it), and
        // the reading goes on beside it. A claimed letter's row and text no longer change; a
        // letter deleted in between (its signature erased) is simply not sent.
        let letters: Vec<ClaimedRow> = sqlx::query_as(
            "SELECT l.id, l.campaign, l.target_id, l.recipient, l.recipient_name, l.from_name,
                    l.from_address, l.reply_to, l.language, l.template_hash, l.message_id,
                    l.attempts, l.queued_at, b.subject, b.body_text, b.body_html
               FROM letters AS l LEFT JOIN letter_bodies AS b ON b.letter_id = l.id
              WHERE l.id IN (SELECT value FROM json_each(?1))
              ORDER BY l.id",
        )
        .bind(serde_json::to_string(&ids).expect("ids serialise"))
        .fetch_all(&self.pool)
        .await?;
        rows::claimed(letters, ids.len(), req.token)
    }

    /// One write of the sending path: `records` (finished attempts) are recorded and their
    /// letters moved on, and the letters in `marks` (about to be transmitted) move from
    /// `claimed` to `sending`, in one transaction. Returns the marked ids that moved and how
    /// many letters the records moved.
    async fn journal(
        &self,
        token: i64,
        marks: &[i64],
        records: &[AttemptRecord],
        now: Millis,
    ) -> Result<(Vec<i64>, u64), QueueError> {
        if marks.is_empty() && records.is_empty() {
            return Ok((Vec::new(), 0));
        }
        let mut tx = self.writer.begin().await?;
        let recorded = if records.is_empty() {
            0
        } else {
            record_in(&mut tx, records, now).await?
        };
        let marked = if marks.is_empty() {
            Vec::new()
        } else {
            let list = serde_json::to_string(marks).expect("ids serialise");
            sqlx::query_scalar(&format!(
                "UPDATE letters SET state = 'sending', updated_at = ?1
                  WHERE lease_token = ?2 AND state IN ({})
                    AND id IN (SELECT value FROM json_each(?3))
                 RETURNING id",
                moves::MARK_SENDING.fence_sql()
            ))
            .bind(now)
            .bind(token)
            .bind(list)
            .fetch_all(&mut *tx)
            .await?
        };
        tx.commit().await?;
        Ok((marked, recorded))
    }

    async fn release(&self, ids: &[(i64, i64)], now: Millis) -> Result<u64, QueueError> {
        if ids.is_empty() {
            return Ok(0);
        }
        let mut tx = self.writer.begin().await?;
        let mut n = 0;
        for (id, token) in ids {
            n += sqlx::query(&format!(
                "UPDATE letters {}
                  WHERE id = ?2 AND lease_token = ?3 AND state IN ({})",
                unclaim_sql(),
                moves::RELEASE.fence_sql()
            ))
            .bind(now)
            .bind(id)
            .bind(token)
            .execute(&mut *tx)
            .await?
            .rows_affected();
        }
        tx.commit().await?;
        Ok(n)
    }

    async fn recover_expired(&self, now: Millis) -> Result<Recovered, QueueError> {
        const LOST: &str = "the worker sending this letter stopped after the data may have been \
                            transmitted, before the server's reply was recorded (lease expired)";
        let mut tx = self.writer.begin().await?;
        // Claimed but DATA never accepted: the server holds no complete message. Queue again,
        // uncounting the attempt that never happened.
        let requeued = sqlx::query(&format!(
            "UPDATE letters {} WHERE state IN ({}) AND lease_expires_at < ?1",
            unclaim_sql(),
            moves::RECOVER_CLAIMED.fence_sql()
        ))
        .bind(now)
        .execute(&mut *tx)
        .await?
        .rows_affected();
        // In the conversation past DATA: it may have been delivered. Never resent on its own.
        let in_doubt_from = moves::RECOVER_SENDING.fence_sql();
        sqlx::query(&format!(
            "INSERT INTO attempts (letter_id, attempt, worker, started_at, finished_at, duration_ms,
                outcome, stage, reply)
             SELECT id, attempts, COALESCE(lease_owner, ''), updated_at, ?1, ?1 - updated_at,
                'in_doubt', 'end_of_data', ?2
               FROM letters
              WHERE state IN ({in_doubt_from}) AND lease_expires_at < ?1"
        ))
        .bind(now)
        .bind(LOST)
        .execute(&mut *tx)
        .await?;
        let in_doubt = sqlx::query(&format!(
            "UPDATE letters
                SET state = 'in_doubt', updated_at = ?1, last_code = NULL, last_enhanced_code = NULL,
                    last_reply = ?2, lease_owner = NULL, lease_token = NULL, lease_expires_at = NULL
              WHERE state IN ({in_doubt_from}) AND lease_expires_at < ?1"
        ))
        .bind(now)
        .bind(LOST)
        .execute(&mut *tx)
        .await?
        .rows_affected();
        tx.commit().await?;
        Ok(Recovered { requeued, in_doubt })
    }

    async fn sending_under(&self, token: i64, ids: &[i64]) -> Result<Vec<i64>, QueueError> {
        Ok(sqlx::query_scalar(
            "SELECT id FROM letters WHERE lease_token = ?1 AND state = 'sending'
                AND id IN (SELECT value FROM json_each(?2))",
        )
        .bind(token)
        .bind(serde_json::to_string(ids).expect("ids serialise"))
        .fetch_all(&self.pool)
        .await?)
    }

    async fn extend_leases(&self, token: i64, until: Millis) -> Result<u64, QueueError> {
        Ok(sqlx::query(&format!(
            "UPDATE letters SET lease_expires_at = ?1
              WHERE lease_expires_at IS NOT NULL AND lease_token = ?2 AND state IN ({})",
            moves::LEASED.fence_sql()
        ))
        .bind(until)
        .bind(token)
        .execute(&self.writer)
        .await?
        .rows_affected())
    }

    async fn resolve_in_doubt(
        &self,
        scope: &Scope<'_>,
        resend: bool,
        now: Millis,
    ) -> Result<u64, QueueError> {
        let sql = if resend {
            format!(
                "UPDATE letters SET state = 'queued', next_attempt_at = ?1, queued_at = ?1,
                        updated_at = ?1
                  WHERE state IN ({}) AND (?2 IS NULL OR campaign = ?2) AND (?3 IS NULL OR id = ?3)",
                moves::RESOLVE_RESEND.fence_sql()
            )
        } else {
            format!(
                "UPDATE letters SET state = 'sent', sent_at = ?1, updated_at = ?1,
                        last_reply = 'marked sent by an organiser after being in doubt'
                  WHERE state IN ({}) AND (?2 IS NULL OR campaign = ?2) AND (?3 IS NULL OR id = ?3)",
                moves::RESOLVE_SENT.fence_sql()
            )
        };
        Ok(sqlx::query(&sql)
            .bind(now)
            .bind(scope.campaign)
            .bind(scope.letter)
            .execute(&self.pool)
            .await?
            .rows_affected())
    }

    async fn next_due(
        &self,
        campaign: Option<&str>,
        exclude: Option<&[String]>,
    ) -> Result<Option<Millis>, QueueError> {
        static SQL: std::sync::OnceLock<String> = std::sync::OnceLock::new();
        let sql = SQL.get_or_init(|| {
            format!(
                "SELECT MIN(next_attempt_at) FROM letters
                  WHERE state IN ({}) AND (?1 IS NULL OR campaign = ?1)
                    AND (?2 IS NULL OR kind = 'confirmation' OR campaign NOT IN (SELECT value FROM json_each(?2)))
                    AND NOT EXISTS (SELECT 1 FROM pauses p WHERE p.campaign = letters.campaign
                                       AND p.target_id IN ('{}', letters.target_id))",
                moves::CLAIM.fence_sql(),
                rows::WHOLE_CAMPAIGN
            )
        });
        Ok(sqlx::query_scalar(sql)
            .bind(campaign)
            .bind(exclude.map(|c| serde_json::to_string(c).expect("campaign names serialise")))
            .fetch_one(&self.pool)
            .await?)
    }

    async fn status(&self, campaign: Option<&str>) -> Result<StatusReport, QueueError> {
        // One pass over the covering index `letters_report` (campaign, target_id, state, kind,
        // queued_at), which leaves out the letters workers hold: counts and the oldest queued
        // time per group. The held ones (a claim batch or so per worker) are found through
        // `letters_leased`.
        let leased = moves::LEASED.fence_sql();
        let groups: Vec<StatusRow> = sqlx::query_as(&format!(
            "SELECT campaign, target_id, state, kind, COUNT(*) AS letters,
                    MIN(queued_at) AS oldest_queued_at
               FROM letters
              WHERE state NOT IN ({leased}) AND (?1 IS NULL OR campaign = ?1)
              GROUP BY campaign, target_id, state, kind
             UNION ALL
             SELECT campaign, target_id, state, kind, COUNT(*), MIN(queued_at) FROM letters
              WHERE lease_expires_at IS NOT NULL AND state IN ({leased})
                AND (?1 IS NULL OR campaign = ?1)
              GROUP BY campaign, target_id, state, kind
             ORDER BY 1, 2, 3, 4"
        ))
        .bind(campaign)
        .fetch_all(&self.pool)
        .await?;
        let signatures = sqlx::query_scalar(
            "SELECT COUNT(*) FROM signatures WHERE (?1 IS NULL OR campaign = ?1)",
        )
        .bind(campaign)
        .fetch_one(&self.pool)
        .await?;
        rows::fold_status(groups, signatures)
    }

    async fn retry_failed(&self, campaign: Option<&str>, now: Millis) -> Result<u64, QueueError> {
        Ok(sqlx::query(&format!(
            "UPDATE letters SET state = 'queued', next_attempt_at = ?1, queued_at = ?1, updated_at = ?1
              WHERE state IN ({}) AND (?2 IS NULL OR campaign = ?2)",
            moves::RETRY_FAILED.fence_sql()
        ))
        .bind(now)
        .bind(campaign)
        .execute(&self.pool)
        .await?
        .rows_affected())
    }

    async fn retry_letter(&self, id: i64, now: Millis) -> Result<RetryOutcome, QueueError> {
        let mut tx = self.pool.begin().await?;
        let n = sqlx::query(&format!(
            "UPDATE letters SET state = 'queued', next_attempt_at = ?1, queued_at = ?1, updated_at = ?1
              WHERE id = ?2 AND state IN ({})",
            moves::RETRY_LETTER.fence_sql()
        ))
        .bind(now)
        .bind(id)
        .execute(&mut *tx)
        .await?
        .rows_affected();
        let outcome = if n == 1 {
            RetryOutcome::Requeued
        } else {
            let state: Option<String> =
                sqlx::query_scalar("SELECT state FROM letters WHERE id = ?1")
                    .bind(id)
                    .fetch_optional(&mut *tx)
                    .await?;
            match state {
                None => RetryOutcome::NotFound,
                Some(s) => RetryOutcome::NotRetryable(rows::state_of(&s)?),
            }
        };
        tx.commit().await?;
        Ok(outcome)
    }

    async fn letter(&self, id: i64) -> Result<Option<LetterSummary>, QueueError> {
        let row: Option<SummaryRow> = sqlx::query_as(
            "SELECT id, campaign, target_id, state, attempts, last_code, last_reply
               FROM letters WHERE id = ?1",
        )
        .bind(id)
        .fetch_optional(&self.pool)
        .await?;
        row.map(SummaryRow::into_summary).transpose()
    }

    async fn pause(
        &self,
        campaign: &str,
        target: Option<&str>,
        now: Millis,
    ) -> Result<u64, QueueError> {
        let mut tx = self.pool.begin().await?;
        sqlx::query(
            "INSERT INTO pauses (campaign, target_id, created_at) VALUES (?1, ?2, ?3)
             ON CONFLICT (campaign, target_id) DO NOTHING",
        )
        .bind(campaign)
        .bind(target.unwrap_or(rows::WHOLE_CAMPAIGN))
        .bind(now)
        .execute(&mut *tx)
        .await?;
        let held = sqlx::query(&format!(
            "UPDATE letters SET state = 'held', updated_at = ?1
              WHERE state IN ({}) AND campaign = ?2 AND (?3 IS NULL OR target_id = ?3)",
            moves::PAUSE.fence_sql()
        ))
        .bind(now)
        .bind(campaign)
        .bind(target)
        .execute(&mut *tx)
        .await?
        .rows_affected();
        tx.commit().await?;
        Ok(held)
    }

    async fn resume(
        &self,
        campaign: &str,
        target: Option<&str>,
        now: Millis,
    ) -> Result<u64, QueueError> {
        let mut tx = self.pool.begin().await?;
        // Resuming a campaign lifts its target pauses too; resuming a target lifts only its own.
        sqlx::query("DELETE FROM pauses WHERE campaign = ?1 AND (?2 IS NULL OR target_id = ?2)")
            .bind(campaign)
            .bind(target)
            .execute(&mut *tx)
            .await?;
        let resumed = sqlx::query(&format!(
            "UPDATE letters SET state = 'queued', updated_at = ?1
              WHERE state IN ({}) AND campaign = ?2 AND (?3 IS NULL OR target_id = ?3)
                AND NOT EXISTS (SELECT 1 FROM pauses p WHERE p.campaign = letters.campaign
                                   AND p.target_id IN ('{}', letters.target_id))",
            moves::RESUME.fence_sql(),
            rows::WHOLE_CAMPAIGN
        ))
        .bind(now)
        .bind(campaign)
        .bind(target)
        .execute(&mut *tx)
        .await?
        .rows_affected();
        tx.commit().await?;
        Ok(resumed)
    }

    async fn cancel(
        &self,
        campaign: &str,
        target: Option<&str>,
        now: Millis,
    ) -> Result<u64, QueueError> {
        Ok(sqlx::query(&format!(
            "UPDATE letters SET state = 'cancelled', updated_at = ?1,
                    last_reply = 'cancelled by an organiser'
              WHERE state IN ({}) AND campaign = ?2 AND (?3 IS NULL OR target_id = ?3)",
            moves::CANCEL.fence_sql()
        ))
        .bind(now)
        .bind(campaign)
        .bind(target)
        .execute(&self.pool)
        .await?
        .rows_affected())
    }

    async fn pauses(&self) -> Result<Vec<(String, Option<String>)>, QueueError> {
        let pauses: Vec<(String, String)> =
            sqlx::query_as("SELECT campaign, target_id FROM pauses ORDER BY campaign, target_id")
                .fetch_all(&self.pool)
                .await?;
        Ok(pauses
            .into_iter()
            .map(|(c, t)| rows::pause_of(c, t))
            .collect())
    }

    async fn recent_sends(
        &self,
        since: Millis,
    ) -> Result<Vec<(String, String, Millis)>, QueueError> {
        static SQL: std::sync::OnceLock<String> = std::sync::OnceLock::new();
        let sql = SQL.get_or_init(|| {
            format!(
                "SELECT l.recipient, l.recipient_domain, a.started_at
                   FROM attempts a JOIN letters l ON l.id = a.letter_id
                  WHERE a.started_at >= ?1 AND l.kind = 'letter'
                 UNION ALL
                 SELECT recipient, recipient_domain, updated_at FROM letters
                  WHERE state IN ({}) AND kind = 'letter' AND updated_at >= ?1
                  ORDER BY 3",
                moves::LEASED.fence_sql()
            )
        });
        Ok(sqlx::query_as(sql)
            .bind(since)
            .fetch_all(&self.pool)
            .await?)
    }

    async fn waiting_per_target(
        &self,
        campaign: Option<&str>,
    ) -> Result<Vec<(String, String, i64)>, QueueError> {
        Ok(sqlx::query_as(
            "SELECT campaign, target_id, COUNT(*) FROM letters
              WHERE state IN ('queued', 'deferred', 'held') AND kind = 'letter'
                AND (?1 IS NULL OR campaign = ?1)
              GROUP BY campaign, target_id",
        )
        .bind(campaign)
        .fetch_all(&self.pool)
        .await?)
    }

    async fn save_relay_health(&self, r: &RelayHealthRecord) -> Result<(), QueueError> {
        sqlx::query(
            "INSERT INTO relay_health (relay, state, since, stage, code, enhanced_code, reply, hint,
                retry_at, worker, updated_at)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11)
             ON CONFLICT (relay) DO UPDATE SET state = excluded.state, since = excluded.since,
                stage = excluded.stage, code = excluded.code,
                enhanced_code = excluded.enhanced_code, reply = excluded.reply,
                hint = excluded.hint, retry_at = excluded.retry_at, worker = excluded.worker,
                updated_at = excluded.updated_at",
        )
        .bind(&r.relay)
        .bind(if r.usable { "usable" } else { "unusable" })
        .bind(r.since)
        .bind(r.stage.as_deref())
        .bind(r.code)
        .bind(r.enhanced_code.as_deref())
        .bind(r.reply.as_deref())
        .bind(r.hint.as_deref())
        .bind(r.retry_at)
        .bind(&r.worker)
        .bind(r.updated_at)
        .execute(&self.writer)
        .await?;
        Ok(())
    }

    async fn relay_health(&self) -> Result<Vec<RelayHealthRecord>, QueueError> {
        let records: Vec<rows::RelayHealthRow> = sqlx::query_as(
            "SELECT relay, state, since, stage, code, enhanced_code, reply, hint, retry_at,
                    worker, updated_at
               FROM relay_health ORDER BY relay",
        )
        .fetch_all(&self.pool)
        .await?;
        records
            .into_iter()
            .map(rows::RelayHealthRow::into_record)
            .collect()
    }

    async fn ageing(
        &self,
        campaign: Option<&str>,
        queued_before: Millis,
    ) -> Result<Ageing, QueueError> {
        let (letters, oldest_queued_at): (i64, Option<i64>) = sqlx::query_as(
            "SELECT COUNT(*), MIN(queued_at) FROM letters
              WHERE state = 'deferred' AND queued_at <= ?1 AND (?2 IS NULL OR campaign = ?2)",
        )
        .bind(queued_before)
        .bind(campaign)
        .fetch_one(&self.pool)
        .await?;
        Ok(Ageing {
            letters,
            oldest_queued_at,
        })
    }

    async fn reserve(
        &self,
        key: &str,
        n: u32,
        interval_us: i64,
        now_us: i64,
    ) -> Result<i64, QueueError> {
        Ok(sqlx::query_scalar(
            "INSERT INTO throttles (key, tat_us) VALUES (?1, ?3 + ?2 * ?4)
             ON CONFLICT (key) DO UPDATE SET tat_us = MAX(throttles.tat_us, ?3) + ?2 * ?4
             RETURNING tat_us",
        )
        .bind(key)
        .bind(i64::from(n))
        .bind(now_us)
        .bind(interval_us)
        .fetch_one(&self.writer)
        .await?)
    }

    async fn hold(&self, key: &str, until_us: i64) -> Result<i64, QueueError> {
        Ok(sqlx::query_scalar(
            "INSERT INTO throttles (key, tat_us) VALUES (?1, ?2)
             ON CONFLICT (key) DO UPDATE SET tat_us = MAX(throttles.tat_us, ?2)
             RETURNING tat_us",
        )
        .bind(key)
        .bind(until_us)
        .fetch_one(&self.writer)
        .await?)
    }

    async fn throttle(&self, key: &str) -> Result<Option<i64>, QueueError> {
        Ok(
            sqlx::query_scalar("SELECT tat_us FROM throttles WHERE key = ?1")
                .bind(key)
                .fetch_optional(&self.pool)
                .await?,
        )
    }

    async fn lead(
        &self,
        role: &str,
        holder: &str,
        now: Millis,
        lease_ms: Millis,
        replacing: Option<&str>,
    ) -> Result<String, QueueError> {
        let took: Option<String> = sqlx::query_scalar(
            "INSERT INTO leadership (role, holder, expires_at) VALUES (?1, ?2, ?3 + ?4)
             ON CONFLICT (role) DO UPDATE
                SET holder = excluded.holder, expires_at = excluded.expires_at
              WHERE leadership.holder = excluded.holder OR leadership.expires_at < ?3
                 OR leadership.holder = ?5
             RETURNING holder",
        )
        .bind(role)
        .bind(holder)
        .bind(now)
        .bind(lease_ms)
        .bind(replacing)
        .fetch_optional(&self.writer)
        .await?;
        if let Some(held) = took {
            return Ok(held);
        }
        // Held by someone else: who.
        Ok(
            sqlx::query_scalar("SELECT holder FROM leadership WHERE role = ?1")
                .bind(role)
                .fetch_optional(&self.writer)
                .await?
                .unwrap_or_default(),
        )
    }

    async fn resign(&self, role: &str, holder: &str) -> Result<(), QueueError> {
        sqlx::query("DELETE FROM leadership WHERE role = ?1 AND holder = ?2")
            .bind(role)
            .bind(holder)
            .execute(&self.writer)
            .await?;
        Ok(())
    }

    async fn signature_letters(
        &self,
        public_id: &str,
    ) -> Result<Option<Vec<LetterSummary>>, QueueError> {
        let exists: Option<i64> =
            sqlx::query_scalar("SELECT id FROM signatures WHERE public_id = ?1")
                .bind(public_id)
                .fetch_optional(&self.pool)
                .await?;
        let Some(sig) = exists else { return Ok(None) };
        let letters: Vec<SummaryRow> = sqlx::query_as(
            "SELECT id, campaign, target_id, state, attempts, last_code, last_reply FROM letters
              WHERE signature_id = ?1 ORDER BY id",
        )
        .bind(sig)
        .fetch_all(&self.pool)
        .await?;
        letters
            .into_iter()
            .map(SummaryRow::into_summary)
            .collect::<Result<_, _>>()
            .map(Some)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn batches_split_into_few_statement_sizes_that_add_up() {
        for n in 0..300 {
            let sizes: Vec<usize> = row_chunks(n).collect();
            assert_eq!(sizes.iter().sum::<usize>(), n, "{n}: {sizes:?}");
            assert!(sizes.windows(2).all(|w| w[0] >= w[1]), "{n}: {sizes:?}");
            assert!(sizes.iter().all(|s| s.is_power_of_two() && *s <= MAX_ROWS));
        }
        assert_eq!(row_chunks(200).collect::<Vec<_>>(), [64, 64, 64, 8]);
        assert_eq!(row_chunks(0).count(), 0);
    }

    #[test]
    fn padded_batches_take_one_statement_per_64_rows_of_a_known_size() {
        for n in 0..300 {
            let chunks: Vec<(usize, usize)> = padded_chunks(n).collect();
            assert_eq!(
                chunks.iter().map(|c| c.0).sum::<usize>(),
                n,
                "{n}: {chunks:?}"
            );
            assert_eq!(chunks.len(), n.div_ceil(MAX_ROWS), "{n}: {chunks:?}");
            for (rows, size) in chunks {
                assert!(size.is_power_of_two() && size <= MAX_ROWS, "{n}: {size}");
                assert!(rows <= size && size < 2 * rows, "{n}: {rows} in {size}");
            }
        }
        assert_eq!(
            padded_chunks(200).collect::<Vec<_>>(),
            [(64, 64), (64, 64), (64, 64), (8, 8)]
        );
        assert_eq!(padded_chunks(13).collect::<Vec<_>>(), [(13, 16)]);
    }

    #[tokio::test]
    async fn the_wal_is_copied_back_into_the_database_file_in_the_background() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("q.db");
        let q = SqliteQueue::connect(&format!("sqlite://{}", file.display()), 2)
            .await
            .unwrap();
        let size = || std::fs::metadata(&file).unwrap().len();
        let before = size();
        // About 2 MB through the writer: far below its own checkpoint threshold (~160 MB).
        sqlx::query("CREATE TABLE filler (x BLOB)")
            .execute(&q.writer)
            .await
            .unwrap();
        for _ in 0..4 {
            sqlx::query(
                "WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM n WHERE i < 128)
                 INSERT INTO filler SELECT zeroblob(4000) FROM n",
            )
            .execute(&q.writer)
            .await
            .unwrap();
        }
        let deadline = std::time::Instant::now() + 10 * CHECKPOINT_EVERY;
        while size() < before + 2_000_000 && std::time::Instant::now() < deadline {
            tokio::time::sleep(CHECKPOINT_EVERY / 5).await;
        }
        assert!(
            size() >= before + 2_000_000,
            "the database file is still {} bytes (was {before}): nothing was checkpointed",
            size()
        );
        q.close().await;
    }

    #[test]
    fn multi_row_statements_repeat_the_row() {
        assert_eq!(
            multi_row_sql("INSERT INTO t (a, b) VALUES ", "(?, ?)", 3, " RETURNING a"),
            "INSERT INTO t (a, b) VALUES (?, ?), (?, ?), (?, ?) RETURNING a"
        );
    }
}
