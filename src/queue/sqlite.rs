//! The queue on SQLite: one file, WAL journal, a busy timeout so concurrent writers wait their
//! turn. The sending path and imports write through one dedicated connection (`writer`); reads,
//! reports and organiser commands use the pool. Every write transaction begins with a write, so
//! it takes the write lock at once and never fails half-way on a stale read snapshot. Batches
//! of ids travel as one JSON array bound to a single parameter and read with `json_each`;
//! batches of rows (signatures, letters and their texts, attempts and their results) go in
//! multi-row statements of a few fixed sizes, their values bound as they are, never escaped
//! into JSON and parsed back.

use super::{
    Ageing, AttemptRecord, ClaimRequest, ClaimedLetter, LetterSummary, Millis, NewSignature,
    QueueError, Recorded, Recovered, RelayHealthRecord, RetryOutcome, Scope, StatusReport,
    TargetCount,
};
use crate::domain::{EmailAddress, LanguageTag, Letter, LetterState};
use sqlx::sqlite::{SqliteConnectOptions, SqliteJournalMode, SqlitePoolOptions, SqliteSynchronous};
use sqlx::{Row, SqlitePool};
use std::str::FromStr;
use std::time::Duration;

mod web_intake;

/// Hands a leased letter back unstarted: the attempt it was counted for is uncounted, and it
/// is queued again (deferred if it had failed before). `?1` is the time.
const UNCLAIM: &str = "SET state = CASE WHEN attempts > 1 THEN 'deferred' ELSE 'queued' END,
    attempts = attempts - 1, updated_at = ?1,
    lease_owner = NULL, lease_token = NULL, lease_expires_at = NULL";

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

fn state_of(s: &str) -> LetterState {
    // The CHECK constraint admits only known names.
    s.parse().unwrap_or(LetterState::Failed)
}

/// The end of the statement moving a batch of letters on after their attempts: it follows the
/// rows of `r` (`WITH r (...) AS (VALUES ...`), then binds the time. Each row is fenced by its
/// lease token and by the states its next state may be reached from, per
/// `LetterState::sources_sql`; built once.
fn record_update_tail() -> &'static str {
    static SQL: std::sync::OnceLock<String> = std::sync::OnceLock::new();
    SQL.get_or_init(|| {
        let fences: String = LetterState::ALL
            .into_iter()
            .filter(|to| !LetterState::sources(*to).is_empty())
            .map(|to| {
                format!(
                    " WHEN '{}' THEN letters.state IN ({})",
                    to.as_str(),
                    LetterState::sources_sql(to)
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

/// The columns of a new `signatures` row that every intake path writes, in the order
/// `bind_signature` binds them.
const SIGNATURE_COLUMNS: &str = "public_id, campaign, email, email_normalized, first_name, \
    last_name, city, postal_code, country, language, message, source, created_at, \
    consent_contact, referrer";

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

impl SqliteQueue {
    pub(super) async fn connect(url: &str, max_connections: u32) -> Result<Self, QueueError> {
        let connect_err = |source| QueueError::Connect {
            url: crate::config::redact_url(url),
            source,
        };
        let options = SqliteConnectOptions::from_str(url)
            .map_err(connect_err)?
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
            .pragma("wal_autocheckpoint", "10000");
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

    pub(super) async fn close(&self) {
        self.writer.close().await;
        self.pool.close().await;
    }

    pub(super) async fn record_signatures(
        &self,
        batch: &[NewSignature],
        now: Millis,
    ) -> Result<Vec<Recorded>, QueueError> {
        self.record_batch(batch, &[], now).await
    }

    /// Records signatures with their letters in one transaction; `details[i]` (consent, where
    /// the signer came from) goes with `batch[i]` when given, else the defaults (no consent).
    pub(super) async fn record_batch(
        &self,
        batch: &[NewSignature],
        details: &[crate::queue::IntakeDetails],
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
        let mut created = std::collections::HashSet::with_capacity(batch.len());
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
        let mut out = Vec::with_capacity(batch.len());
        for sig in batch {
            if created.contains(&sig.public_id) {
                out.push(Recorded::Created {
                    public_id: sig.public_id.clone(),
                    letters: sig.letters.len(),
                });
                continue;
            }
            let public_id: String = sqlx::query_scalar(
                "SELECT public_id FROM signatures WHERE campaign = ?1 AND email_normalized = ?2",
            )
            .bind(sig.campaign.as_str())
            .bind(sig.signer.email.normalized())
            .fetch_one(&mut *tx)
            .await?;
            out.push(Recorded::Duplicate { public_id });
        }
        tx.commit().await?;
        Ok(out)
    }

    pub(super) async fn claim(
        &self,
        req: &ClaimRequest<'_>,
    ) -> Result<Vec<ClaimedLetter>, QueueError> {
        let ids: Vec<i64> = sqlx::query_scalar(
            "UPDATE letters
                SET state = 'claimed', lease_owner = ?1, lease_token = ?2, lease_expires_at = ?3,
                    attempts = attempts + 1, updated_at = ?4
              WHERE id IN (
                    SELECT id FROM letters
                     WHERE state IN ('queued', 'deferred') AND next_attempt_at <= ?4
                       AND (?5 IS NULL OR campaign = ?5)
                       AND (?7 IS NULL OR target_id = ?7)
                       AND (?8 IS NULL OR kind = 'confirmation'
                            OR campaign NOT IN (SELECT value FROM json_each(?8)))
                       AND NOT EXISTS (SELECT 1 FROM pauses p WHERE p.campaign = letters.campaign
                                          AND p.target_id IN ('', letters.target_id))
                     ORDER BY priority DESC, next_attempt_at, id
                     LIMIT ?6)
             RETURNING id",
        )
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
        let rows = sqlx::query(
            "SELECT l.id, l.campaign, l.target_id, l.recipient, l.recipient_name, l.from_name,
                    l.from_address, l.reply_to, l.language, l.template_hash, l.message_id,
                    l.attempts, l.queued_at, b.letter_id AS has_text, b.subject, b.body_text,
                    b.body_html
               FROM letters AS l LEFT JOIN letter_bodies AS b ON b.letter_id = l.id
              WHERE l.id IN (SELECT value FROM json_each(?1))
              ORDER BY l.id",
        )
        .bind(serde_json::to_string(&ids).expect("ids serialise"))
        .fetch_all(&self.pool)
        .await?;
        if rows.len() < ids.len() {
            tracing::info!(
                vanished = ids.len() - rows.len(),
                "claimed letters were deleted before they were read; they are not sent"
            );
        }
        let mut out = Vec::with_capacity(rows.len());
        for row in rows {
            let id: i64 = row.try_get("id")?;
            if row.try_get::<Option<i64>, _>("has_text")?.is_none() {
                return Err(QueueError::Database(sqlx::Error::Decode(
                    format!("letter {id} has no text in letter_bodies").into(),
                )));
            }
            let email = |col: &str| -> Result<EmailAddress, QueueError> {
                let s: String = row.try_get(col)?;
                EmailAddress::parse(&s).map_err(|e| {
                    QueueError::Database(sqlx::Error::Decode(format!("{col} {e}").into()))
                })
            };
            let language: String = row.try_get("language")?;
            out.push(ClaimedLetter {
                id,
                campaign: row.try_get("campaign")?,
                message_id: row.try_get("message_id")?,
                attempt: row.try_get::<i64, _>("attempts")? as u32,
                lease_token: req.token,
                queued_at: row.try_get("queued_at")?,
                letter: Letter {
                    target_id: row.try_get("target_id")?,
                    recipient: email("recipient")?,
                    recipient_name: row.try_get("recipient_name")?,
                    from_name: row.try_get("from_name")?,
                    from_address: email("from_address")?,
                    reply_to: email("reply_to")?,
                    language: LanguageTag::parse(&language).map_err(|e| {
                        QueueError::Database(sqlx::Error::Decode(e.to_string().into()))
                    })?,
                    subject: row.try_get("subject")?,
                    body_text: row.try_get("body_text")?,
                    body_html: row.try_get("body_html")?,
                    template_hash: row.try_get("template_hash")?,
                },
            });
        }
        Ok(out)
    }

    /// One write of the sending path: `records` (finished attempts) are recorded and their
    /// letters moved on, and the letters in `marks` (about to be transmitted) move from
    /// `claimed` to `sending`, in one transaction. Returns the marked ids that moved and how
    /// many letters the records moved.
    pub(super) async fn journal(
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
            Self::record_in(&mut tx, records, now).await?
        };
        let marked = if marks.is_empty() {
            Vec::new()
        } else {
            let list = serde_json::to_string(marks).expect("ids serialise");
            sqlx::query_scalar(
                "UPDATE letters SET state = 'sending', updated_at = ?1
                  WHERE lease_token = ?2 AND state = 'claimed'
                    AND id IN (SELECT value FROM json_each(?3))
                 RETURNING id",
            )
            .bind(now)
            .bind(token)
            .bind(list)
            .fetch_all(&mut *tx)
            .await?
        };
        tx.commit().await?;
        Ok((marked, recorded))
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
        // A letter's records apply in batch order, as when they were written one by one: its
        // nth record in the batch goes in round n (there is only one round unless a batch holds
        // two records for one letter).
        let mut rounds: Vec<Vec<&AttemptRecord>> = Vec::new();
        let mut seen: std::collections::HashMap<i64, usize> =
            std::collections::HashMap::with_capacity(records.len());
        for r in records {
            let n = seen.entry(r.letter_id).or_insert(0);
            if rounds.len() <= *n {
                rounds.push(Vec::new());
            }
            rounds[*n].push(r);
            *n += 1;
        }
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
                    let (next_at, sent_at) = match r.next {
                        super::NextState::Deferred { retry_at } => (retry_at, None),
                        super::NextState::Sent => (r.finished_at, Some(r.finished_at)),
                        _ => (r.finished_at, None),
                    };
                    query = query
                        .bind(r.letter_id)
                        .bind(r.lease_token)
                        .bind(r.next.state().as_str())
                        .bind(r.code)
                        .bind(r.enhanced_code.as_deref())
                        .bind(r.reply.as_deref())
                        .bind(next_at)
                        .bind(sent_at);
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

    pub(super) async fn release(&self, ids: &[(i64, i64)], now: Millis) -> Result<u64, QueueError> {
        if ids.is_empty() {
            return Ok(0);
        }
        let mut tx = self.writer.begin().await?;
        let mut n = 0;
        for (id, token) in ids {
            n += sqlx::query(&format!(
                "UPDATE letters {UNCLAIM}
                  WHERE id = ?2 AND lease_token = ?3 AND state IN ('claimed', 'sending')"
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

    pub(super) async fn recover_expired(&self, now: Millis) -> Result<Recovered, QueueError> {
        const LOST: &str = "the worker sending this letter stopped after the data may have been \
                            transmitted, before the server's reply was recorded (lease expired)";
        let mut tx = self.writer.begin().await?;
        // Claimed but DATA never accepted: the server holds no complete message. Queue again,
        // uncounting the attempt that never happened.
        let requeued = sqlx::query(&format!(
            "UPDATE letters {UNCLAIM} WHERE state = 'claimed' AND lease_expires_at < ?1"
        ))
        .bind(now)
        .execute(&mut *tx)
        .await?
        .rows_affected();
        // In the conversation past DATA: it may have been delivered. Never resent on its own.
        sqlx::query(
            "INSERT INTO attempts (letter_id, attempt, worker, started_at, finished_at, duration_ms,
                outcome, stage, reply)
             SELECT id, attempts, COALESCE(lease_owner, ''), updated_at, ?1, ?1 - updated_at,
                'in_doubt', 'end_of_data', ?2
               FROM letters
              WHERE state = 'sending' AND lease_expires_at < ?1",
        )
        .bind(now)
        .bind(LOST)
        .execute(&mut *tx)
        .await?;
        let in_doubt = sqlx::query(
            "UPDATE letters
                SET state = 'in_doubt', updated_at = ?1, last_code = NULL, last_enhanced_code = NULL,
                    last_reply = ?2, lease_owner = NULL, lease_token = NULL, lease_expires_at = NULL
              WHERE state = 'sending' AND lease_expires_at < ?1",
        )
        .bind(now)
        .bind(LOST)
        .execute(&mut *tx)
        .await?
        .rows_affected();
        tx.commit().await?;
        Ok(Recovered { requeued, in_doubt })
    }

    pub(super) async fn extend_leases(&self, token: i64, until: Millis) -> Result<u64, QueueError> {
        Ok(sqlx::query(
            "UPDATE letters SET lease_expires_at = ?1
              WHERE lease_expires_at IS NOT NULL AND lease_token = ?2
                AND state IN ('claimed', 'sending')",
        )
        .bind(until)
        .bind(token)
        .execute(&self.writer)
        .await?
        .rows_affected())
    }

    pub(super) async fn resolve_in_doubt(
        &self,
        scope: &Scope<'_>,
        resend: bool,
        now: Millis,
    ) -> Result<u64, QueueError> {
        let sql = if resend {
            "UPDATE letters SET state = 'queued', next_attempt_at = ?1, queued_at = ?1, updated_at = ?1
              WHERE state = 'in_doubt' AND (?2 IS NULL OR campaign = ?2) AND (?3 IS NULL OR id = ?3)"
        } else {
            "UPDATE letters SET state = 'sent', sent_at = ?1, updated_at = ?1,
                    last_reply = 'marked sent by an organiser after being in doubt'
              WHERE state = 'in_doubt' AND (?2 IS NULL OR campaign = ?2) AND (?3 IS NULL OR id = ?3)"
        };
        Ok(sqlx::query(sql)
            .bind(now)
            .bind(scope.campaign)
            .bind(scope.letter)
            .execute(&self.pool)
            .await?
            .rows_affected())
    }

    pub(super) async fn next_due(
        &self,
        campaign: Option<&str>,
    ) -> Result<Option<Millis>, QueueError> {
        Ok(sqlx::query_scalar(
            "SELECT MIN(next_attempt_at) FROM letters
              WHERE state IN ('queued', 'deferred') AND (?1 IS NULL OR campaign = ?1)",
        )
        .bind(campaign)
        .fetch_one(&self.pool)
        .await?)
    }

    pub(super) async fn status(&self, campaign: Option<&str>) -> Result<StatusReport, QueueError> {
        // One pass over the covering index `letters_report` (campaign, target_id, state, kind,
        // queued_at), which leaves out the letters workers hold: counts and the oldest queued
        // time per group. The held ones (a claim batch or so per worker) are found through
        // `letters_leased`.
        let rows = sqlx::query(
            "SELECT campaign, target_id, state, kind, COUNT(*), MIN(queued_at) FROM letters
              WHERE state NOT IN ('claimed', 'sending') AND (?1 IS NULL OR campaign = ?1)
              GROUP BY campaign, target_id, state, kind
             UNION ALL
             SELECT campaign, target_id, state, kind, COUNT(*), MIN(queued_at) FROM letters
              WHERE lease_expires_at IS NOT NULL AND state IN ('claimed', 'sending')
                AND (?1 IS NULL OR campaign = ?1)
              GROUP BY campaign, target_id, state, kind
             ORDER BY 1, 2, 3, 4",
        )
        .bind(campaign)
        .fetch_all(&self.pool)
        .await?;
        let mut report = StatusReport::default();
        for row in rows {
            let state = state_of(row.try_get(2)?);
            let kind: String = row.try_get(3)?;
            let n: i64 = row.try_get(4)?;
            let queued_at: i64 = row.try_get(5)?;
            if state.is_waiting() {
                report.oldest_waiting_since = Some(
                    report
                        .oldest_waiting_since
                        .map_or(queued_at, |t| t.min(queued_at)),
                );
            }
            if kind == "confirmation" {
                *report.confirmations.entry(state).or_default() += n;
                continue;
            }
            *report.by_state.entry(state).or_default() += n;
            report.by_target.push(TargetCount {
                campaign: row.try_get(0)?,
                target_id: row.try_get(1)?,
                state,
                letters: n,
            });
        }
        report.signatures = sqlx::query_scalar(
            "SELECT COUNT(*) FROM signatures WHERE (?1 IS NULL OR campaign = ?1)",
        )
        .bind(campaign)
        .fetch_one(&self.pool)
        .await?;
        Ok(report)
    }

    pub(super) async fn retry_failed(
        &self,
        campaign: Option<&str>,
        now: Millis,
    ) -> Result<u64, QueueError> {
        Ok(sqlx::query(
            "UPDATE letters SET state = 'queued', next_attempt_at = ?1, queued_at = ?1, updated_at = ?1
              WHERE state IN ('failed', 'expired') AND (?2 IS NULL OR campaign = ?2)",
        )
        .bind(now)
        .bind(campaign)
        .execute(&self.pool)
        .await?
        .rows_affected())
    }

    pub(super) async fn retry_letter(
        &self,
        id: i64,
        now: Millis,
    ) -> Result<RetryOutcome, QueueError> {
        let mut tx = self.pool.begin().await?;
        let n = sqlx::query(
            "UPDATE letters SET state = 'queued', next_attempt_at = ?1, queued_at = ?1, updated_at = ?1
              WHERE id = ?2 AND state IN ('failed', 'expired', 'deferred')",
        )
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
                Some(s) => RetryOutcome::NotRetryable(state_of(&s)),
            }
        };
        tx.commit().await?;
        Ok(outcome)
    }

    fn summary(row: &sqlx::sqlite::SqliteRow) -> Result<LetterSummary, sqlx::Error> {
        Ok(LetterSummary {
            id: row.try_get("id")?,
            campaign: row.try_get("campaign")?,
            target_id: row.try_get("target_id")?,
            state: state_of(row.try_get("state")?),
            attempts: row.try_get("attempts")?,
            last_code: row.try_get("last_code")?,
            last_reply: row.try_get("last_reply")?,
        })
    }

    pub(super) async fn letter(&self, id: i64) -> Result<Option<LetterSummary>, QueueError> {
        let row = sqlx::query(
            "SELECT id, campaign, target_id, state, attempts, last_code, last_reply FROM letters WHERE id = ?1",
        )
        .bind(id)
        .fetch_optional(&self.pool)
        .await?;
        Ok(row.map(|r| Self::summary(&r)).transpose()?)
    }

    pub(super) async fn pause(
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
        .bind(target.unwrap_or(""))
        .bind(now)
        .execute(&mut *tx)
        .await?;
        let held = sqlx::query(&format!(
            "UPDATE letters SET state = 'held', updated_at = ?1
              WHERE state IN ({}) AND campaign = ?2 AND (?3 IS NULL OR target_id = ?3)",
            LetterState::sources_sql(LetterState::Held)
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

    pub(super) async fn resume(
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
        let resumed = sqlx::query(
            "UPDATE letters SET state = 'queued', updated_at = ?1
              WHERE state = 'held' AND campaign = ?2 AND (?3 IS NULL OR target_id = ?3)
                AND NOT EXISTS (SELECT 1 FROM pauses p WHERE p.campaign = letters.campaign
                                   AND p.target_id IN ('', letters.target_id))",
        )
        .bind(now)
        .bind(campaign)
        .bind(target)
        .execute(&mut *tx)
        .await?
        .rows_affected();
        tx.commit().await?;
        Ok(resumed)
    }

    pub(super) async fn cancel(
        &self,
        campaign: &str,
        target: Option<&str>,
        now: Millis,
    ) -> Result<u64, QueueError> {
        Ok(sqlx::query(&format!(
            "UPDATE letters SET state = 'cancelled', updated_at = ?1,
                    last_reply = 'cancelled by an organiser'
              WHERE state IN ({}) AND campaign = ?2 AND (?3 IS NULL OR target_id = ?3)",
            LetterState::sources_sql(LetterState::Cancelled)
        ))
        .bind(now)
        .bind(campaign)
        .bind(target)
        .execute(&self.pool)
        .await?
        .rows_affected())
    }

    pub(super) async fn pauses(&self) -> Result<Vec<(String, Option<String>)>, QueueError> {
        let rows: Vec<(String, String)> =
            sqlx::query_as("SELECT campaign, target_id FROM pauses ORDER BY campaign, target_id")
                .fetch_all(&self.pool)
                .await?;
        Ok(rows
            .into_iter()
            .map(|(c, t)| (c, (!t.is_empty()).then_some(t)))
            .collect())
    }

    pub(super) async fn recent_sends(
        &self,
        since: Millis,
    ) -> Result<Vec<(String, String, Millis)>, QueueError> {
        Ok(sqlx::query_as(
            "SELECT l.recipient, l.recipient_domain, a.started_at
               FROM attempts a JOIN letters l ON l.id = a.letter_id
              WHERE a.started_at >= ?1 AND l.kind = 'letter'
              ORDER BY a.started_at",
        )
        .bind(since)
        .fetch_all(&self.pool)
        .await?)
    }

    pub(super) async fn waiting_per_target(
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

    pub(super) async fn save_relay_health(&self, r: &RelayHealthRecord) -> Result<(), QueueError> {
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

    pub(super) async fn relay_health(&self) -> Result<Vec<RelayHealthRecord>, QueueError> {
        let rows = sqlx::query(
            "SELECT relay, state, since, stage, code, enhanced_code, reply, hint, retry_at,
                    worker, updated_at
               FROM relay_health ORDER BY relay",
        )
        .fetch_all(&self.pool)
        .await?;
        rows.iter()
            .map(|row| {
                let state: String = row.try_get("state")?;
                let usable = match state.as_str() {
                    "usable" => true,
                    "unusable" => false,
                    other => {
                        return Err(QueueError::Database(sqlx::Error::Decode(
                            format!("unknown relay state `{other}`").into(),
                        )))
                    }
                };
                Ok(RelayHealthRecord {
                    relay: row.try_get("relay")?,
                    usable,
                    since: row.try_get("since")?,
                    stage: row.try_get("stage")?,
                    code: row.try_get::<Option<i64>, _>("code")?.map(|c| c as u16),
                    enhanced_code: row.try_get("enhanced_code")?,
                    reply: row.try_get("reply")?,
                    hint: row.try_get("hint")?,
                    retry_at: row.try_get("retry_at")?,
                    worker: row.try_get("worker")?,
                    updated_at: row.try_get("updated_at")?,
                })
            })
            .collect()
    }

    pub(super) async fn ageing(
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

    pub(super) async fn signature_letters(
        &self,
        public_id: &str,
    ) -> Result<Option<Vec<LetterSummary>>, QueueError> {
        let exists: Option<i64> =
            sqlx::query_scalar("SELECT id FROM signatures WHERE public_id = ?1")
                .bind(public_id)
                .fetch_optional(&self.pool)
                .await?;
        let Some(sig) = exists else { return Ok(None) };
        let rows = sqlx::query(
            "SELECT id, campaign, target_id, state, attempts, last_code, last_reply FROM letters
              WHERE signature_id = ?1 ORDER BY id",
        )
        .bind(sig)
        .fetch_all(&self.pool)
        .await?;
        Ok(Some(
            rows.iter().map(Self::summary).collect::<Result<_, _>>()?,
        ))
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
