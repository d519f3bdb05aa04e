//! The queue on PostgreSQL, for many Missive processes on many machines sharing one database.
//! Batches travel as one array per column (`UNNEST`), so a batch of any size is one statement
//! of one text; a claim is one round trip (the due letters locked with `FOR UPDATE SKIP
//! LOCKED` in a CTE, updated, and read back joined to their text), so workers claiming at the
//! same time never wait for each other or take the same letter; lease recovery locks the
//! expired rows the same way, so two workers never rescue one letter. Every state write's
//! fence comes from `queue::moves`, as on SQLite.
//!
//! The schema (`migrations/postgres/`) mirrors SQLite's under the same file names: every
//! integer a BIGINT, times in milliseconds since the epoch, `consent_contact` a BOOLEAN.
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
use sqlx::postgres::{PgConnectOptions, PgPoolOptions};
use sqlx::PgPool;
use std::collections::{HashMap, HashSet};
use std::str::FromStr;
use std::time::Duration;

mod web_intake;

static MIGRATOR: sqlx::migrate::Migrator = sqlx::migrate!("./migrations/postgres");

/// The store: one pool shared by every task of this process.
#[derive(Debug, Clone)]
pub(super) struct PgQueue {
    pool: PgPool,
}

/// Hands a leased letter back unstarted (`moves::RELEASE`, `moves::RECOVER_CLAIMED`): the
/// attempt it was counted for is uncounted, and it waits as before. `$1` is the time.
fn unclaim_set() -> String {
    format!(
        "SET state = {}, attempts = attempts - 1, updated_at = $1,
            lease_owner = NULL, lease_token = NULL, lease_expires_at = NULL",
        moves::UNCLAIMED_STATE_SQL
    )
}

/// The statement moving a round of letters on after their attempts, one array per column:
/// each row fenced by its lease token and by the leased states its next state may be reached
/// from (`moves::record_fence`). Built once.
fn record_moves_sql() -> &'static str {
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
            "UPDATE letters
                SET state = r.state, next_attempt_at = r.next_at, sent_at = r.sent_at,
                    last_code = r.code, last_enhanced_code = r.enhanced_code,
                    last_reply = r.reply, updated_at = $9,
                    lease_owner = NULL, lease_token = NULL, lease_expires_at = NULL
               FROM UNNEST($1::bigint[], $2::bigint[], $3::text[], $4::bigint[], $5::text[],
                           $6::text[], $7::bigint[], $8::bigint[])
                    AS r (id, token, state, code, enhanced_code, reply, next_at, sent_at)
              WHERE letters.id = r.id AND letters.lease_token = r.token
                AND CASE r.state{fences} ELSE false END"
        )
    })
}

impl PgQueue {
    /// Connects to the database at `url` with a pool of `max_connections`; applies the
    /// migrations not applied yet with `migrate`, else refuses a schema they are pending on.
    pub(super) async fn connect(
        url: &str,
        max_connections: u32,
        migrate: bool,
    ) -> Result<Self, QueueError> {
        let pool = PgQueue::open_pool(url, max_connections).await?;
        if migrate {
            MIGRATOR.run(&pool).await?;
        } else {
            super::migrations::check(&MIGRATOR, &pool).await?;
        }
        Ok(PgQueue { pool })
    }

    /// The pool, for the clock.
    pub(super) fn pool(&self) -> &PgPool {
        &self.pool
    }

    /// Applies the pending migrations; returns them.
    pub(super) async fn migrate(url: &str) -> Result<Vec<String>, QueueError> {
        let pool = PgQueue::open_pool(url, 2).await?;
        let applied = super::migrations::apply(&MIGRATOR, &pool).await;
        pool.close().await;
        applied
    }

    /// A pool over the database, its schema not looked at.
    async fn open_pool(url: &str, max_connections: u32) -> Result<PgPool, QueueError> {
        let connect_err = |source| QueueError::Connect {
            url: crate::config::redact_url(url),
            source,
        };
        let options = PgConnectOptions::from_str(url).map_err(connect_err)?;
        // One connection first, so a server that cannot be reached (or refuses the login)
        // says why at once; the pool alone would retry until its timeout, then say only that.
        sqlx::Connection::close(
            <sqlx::PgConnection as sqlx::Connection>::connect_with(&options)
                .await
                .map_err(connect_err)?,
        )
        .await
        .map_err(connect_err)?;
        PgPoolOptions::new()
            .max_connections(max_connections)
            .acquire_timeout(Duration::from_secs(30))
            .connect_with(options)
            .await
            .map_err(connect_err)
    }
}

/// Records finished attempts and moves their letters on, inside `tx`: every attempt kept, in
/// batch order, then the letters moved round by round (`rows::rounds`).
async fn record_in(
    tx: &mut sqlx::Transaction<'_, sqlx::Postgres>,
    records: &[AttemptRecord],
    now: Millis,
) -> Result<u64, QueueError> {
    let col = |f: fn(&AttemptRecord) -> i64| records.iter().map(f).collect::<Vec<i64>>();
    let outcomes: Vec<&str> = records.iter().map(|r| r.next.state().as_str()).collect();
    sqlx::query(
        "INSERT INTO attempts (letter_id, attempt, worker, started_at, finished_at, duration_ms,
            outcome, stage, code, enhanced_code, reply)
         SELECT letter_id, attempt, worker, started_at, finished_at, duration_ms, outcome,
                stage, code, enhanced_code, reply
           FROM UNNEST($1::bigint[], $2::bigint[], $3::text[], $4::bigint[],
                              $5::bigint[], $6::bigint[], $7::text[], $8::text[], $9::bigint[],
                              $10::text[], $11::text[])
                 WITH ORDINALITY AS a (letter_id, attempt, worker, started_at, finished_at,
                     duration_ms, outcome, stage, code, enhanced_code, reply, n)
          ORDER BY n",
    )
    .bind(col(|r| r.letter_id))
    .bind(col(|r| i64::from(r.attempt)))
    .bind(
        records
            .iter()
            .map(|r| r.worker.as_str())
            .collect::<Vec<_>>(),
    )
    .bind(col(|r| r.started_at))
    .bind(col(|r| r.finished_at))
    .bind(col(|r| r.finished_at - r.started_at))
    .bind(&outcomes)
    .bind(
        records
            .iter()
            .map(|r| r.stage.as_deref())
            .collect::<Vec<_>>(),
    )
    .bind(
        records
            .iter()
            .map(|r| r.code.map(i64::from))
            .collect::<Vec<_>>(),
    )
    .bind(
        records
            .iter()
            .map(|r| r.enhanced_code.as_deref())
            .collect::<Vec<_>>(),
    )
    .bind(
        records
            .iter()
            .map(|r| r.reply.as_deref())
            .collect::<Vec<_>>(),
    )
    .execute(&mut **tx)
    .await
    .map_err(sql_error)?;
    let mut moved = 0;
    for round in rows::rounds(records) {
        let outcomes: Vec<rows::Outcome> = round.iter().map(|r| r.outcome()).collect();
        moved += sqlx::query(record_moves_sql())
            .bind(round.iter().map(|r| r.letter_id).collect::<Vec<_>>())
            .bind(round.iter().map(|r| r.lease_token).collect::<Vec<_>>())
            .bind(
                outcomes
                    .iter()
                    .map(|o| o.state.as_str())
                    .collect::<Vec<_>>(),
            )
            .bind(
                round
                    .iter()
                    .map(|r| r.code.map(i64::from))
                    .collect::<Vec<_>>(),
            )
            .bind(
                round
                    .iter()
                    .map(|r| r.enhanced_code.as_deref())
                    .collect::<Vec<_>>(),
            )
            .bind(round.iter().map(|r| r.reply.as_deref()).collect::<Vec<_>>())
            .bind(
                outcomes
                    .iter()
                    .map(|o| o.next_attempt_at)
                    .collect::<Vec<_>>(),
            )
            .bind(outcomes.iter().map(|o| o.sent_at).collect::<Vec<_>>())
            .bind(now)
            .execute(&mut **tx)
            .await
            .map_err(sql_error)?
            .rows_affected();
    }
    Ok(moved)
}

/// A letter to insert, with the signature it is written for.
type Pair<'a> = (&'a NewSignature, &'a super::NewLetter);

/// A database error as the queue reports it.
fn sql_error(e: sqlx::Error) -> QueueError {
    QueueError::Database(e)
}

impl Store for PgQueue {
    async fn close(&self) {
        self.pool.close().await;
    }

    async fn ping(&self) -> Result<(), QueueError> {
        sqlx::query("SELECT 1").execute(&self.pool).await?;
        Ok(())
    }

    async fn record_batch(
        &self,
        batch: &[NewSignature],
        details: &[IntakeDetails],
        now: Millis,
    ) -> Result<Vec<Recorded>, QueueError> {
        if batch.is_empty() {
            return Ok(Vec::new());
        }
        let mut tx = self.pool.begin().await?;
        // One statement per table, one array per column. Signatures go in batch order
        // (`ORDER BY n`), so of two rows for one signer in a batch the first is the one kept.
        let strings = |f: fn(&NewSignature) -> &str| batch.iter().map(f).collect::<Vec<_>>();
        let optional = |f: fn(&NewSignature) -> Option<&str>| {
            batch.iter().map(f).collect::<Vec<Option<&str>>>()
        };
        let normalized: Vec<String> = batch.iter().map(|s| s.signer.email.normalized()).collect();
        let consent: Vec<bool> = (0..batch.len())
            .map(|i| details.get(i).is_some_and(|d| d.consent_contact))
            .collect();
        let referrer: Vec<Option<&str>> = (0..batch.len())
            .map(|i| details.get(i).and_then(|d| d.referrer.as_deref()))
            .collect();
        let created: HashSet<String> = sqlx::query_scalar(&format!(
            "INSERT INTO signatures ({})
             SELECT public_id, campaign, email, email_normalized, first_name, last_name, city,
                    postal_code, country, language, message, source, $13, consent_contact,
                    referrer
               FROM UNNEST($1::text[], $2::text[], $3::text[], $4::text[], $5::text[],
                           $6::text[], $7::text[], $8::text[], $9::text[], $10::text[],
                           $11::text[], $12::text[], $14::boolean[], $15::text[])
                    WITH ORDINALITY AS s (public_id, campaign, email, email_normalized,
                        first_name, last_name, city, postal_code, country, language, message,
                        source, consent_contact, referrer, n)
              ORDER BY n
             ON CONFLICT (campaign, email_normalized) DO NOTHING
             RETURNING public_id",
            rows::SIGNATURE_COLUMNS
        ))
        .bind(strings(|s| s.public_id.as_str()))
        .bind(strings(|s| s.campaign.as_str()))
        .bind(strings(|s| s.signer.email.as_str()))
        .bind(&normalized)
        .bind(strings(|s| s.signer.first_name.as_str()))
        .bind(strings(|s| s.signer.last_name.as_str()))
        .bind(optional(|s| s.signer.city.as_deref()))
        .bind(optional(|s| s.signer.postal_code.as_deref()))
        .bind(optional(|s| s.signer.country.as_deref()))
        .bind(optional(|s| s.signer.language.as_ref().map(|l| l.as_str())))
        .bind(optional(|s| s.signer.message.as_deref()))
        .bind(strings(|s| s.source.as_str()))
        .bind(now)
        .bind(&consent)
        .bind(&referrer)
        .fetch_all(&mut *tx)
        .await?
        .into_iter()
        .collect();
        let letters: Vec<Pair<'_>> = batch
            .iter()
            .filter(|sig| created.contains(&sig.public_id))
            .flat_map(|sig| sig.letters.iter().map(move |l| (sig, l)))
            .collect();
        if !letters.is_empty() {
            let col = |f: for<'p> fn(&'p Pair<'_>) -> &'p str| -> Vec<&str> {
                letters.iter().map(f).collect()
            };
            sqlx::query(
                "INSERT INTO letters (signature_id, campaign, target_id, recipient, recipient_name,
                    recipient_domain, from_name, from_address, reply_to, language, template_hash,
                    message_id, state, attempts, next_attempt_at, queued_at, created_at,
                    updated_at)
                 SELECT s.id, u.campaign, u.target_id, u.recipient, u.recipient_name,
                        u.recipient_domain, u.from_name, u.from_address, u.reply_to, u.language,
                        u.template_hash, u.message_id, 'queued', 0, $13, $13, $13, $13
                   FROM UNNEST($1::text[], $2::text[], $3::text[], $4::text[], $5::text[],
                               $6::text[], $7::text[], $8::text[], $9::text[], $10::text[],
                               $11::text[], $12::text[])
                        AS u (public_id, campaign, target_id, recipient, recipient_name,
                              recipient_domain, from_name, from_address, reply_to, language,
                              template_hash, message_id)
                   JOIN signatures s ON s.public_id = u.public_id",
            )
            .bind(col(|(s, _)| s.public_id.as_str()))
            .bind(col(|(s, _)| s.campaign.as_str()))
            .bind(col(|(_, l)| l.letter.target_id.as_str()))
            .bind(col(|(_, l)| l.letter.recipient.as_str()))
            .bind(col(|(_, l)| l.letter.recipient_name.as_str()))
            .bind(col(|(_, l)| l.letter.recipient.domain()))
            .bind(col(|(_, l)| l.letter.from_name.as_str()))
            .bind(col(|(_, l)| l.letter.from_address.as_str()))
            .bind(col(|(_, l)| l.letter.reply_to.as_str()))
            .bind(col(|(_, l)| l.letter.language.as_str()))
            .bind(col(|(_, l)| l.letter.template_hash.as_str()))
            .bind(col(|(_, l)| l.message_id.as_str()))
            .bind(now)
            .execute(&mut *tx)
            .await?;
            sqlx::query(
                "INSERT INTO letter_bodies (letter_id, subject, body_text, body_html)
                 SELECT l.id, u.subject, u.body_text, u.body_html
                   FROM UNNEST($1::text[], $2::text[], $3::text[], $4::text[])
                        AS u (message_id, subject, body_text, body_html)
                   JOIN letters l ON l.message_id = u.message_id",
            )
            .bind(col(|(_, l)| l.message_id.as_str()))
            .bind(col(|(_, l)| l.letter.subject.as_str()))
            .bind(col(|(_, l)| l.letter.body_text.as_str()))
            .bind(
                letters
                    .iter()
                    .map(|(_, l)| l.letter.body_html.as_deref())
                    .collect::<Vec<_>>(),
            )
            .execute(&mut *tx)
            .await?;
        }
        // The signatures already there for the signers the batch did not create.
        let mut existing = HashMap::new();
        let others: Vec<&NewSignature> = batch
            .iter()
            .filter(|s| !created.contains(&s.public_id))
            .collect();
        if !others.is_empty() {
            let found: Vec<(String, String, String)> = sqlx::query_as(
                "SELECT s.campaign, s.email_normalized, s.public_id
                   FROM signatures s
                   JOIN UNNEST($1::text[], $2::text[]) AS k (campaign, email_normalized)
                     ON s.campaign = k.campaign AND s.email_normalized = k.email_normalized",
            )
            .bind(
                others
                    .iter()
                    .map(|s| s.campaign.as_str())
                    .collect::<Vec<_>>(),
            )
            .bind(
                others
                    .iter()
                    .map(|s| s.signer.email.normalized())
                    .collect::<Vec<_>>(),
            )
            .fetch_all(&mut *tx)
            .await?;
            for (campaign, email, public_id) in found {
                existing.insert((campaign, email), public_id);
            }
        }
        let out = rows::recorded(batch, &created, &existing)?;
        tx.commit().await?;
        Ok(out)
    }

    async fn claim(&self, req: &ClaimRequest<'_>) -> Result<Vec<ClaimedLetter>, QueueError> {
        static SQL: std::sync::OnceLock<String> = std::sync::OnceLock::new();
        let sql = SQL.get_or_init(|| {
            format!(
                "WITH due AS (
                    SELECT id FROM letters
                     WHERE state IN ({}) AND next_attempt_at <= $4
                       AND ($5::text IS NULL OR campaign = $5)
                       AND ($7::text IS NULL OR target_id = $7)
                       AND ($8::text[] IS NULL OR kind = 'confirmation' OR campaign <> ALL($8))
                       AND NOT EXISTS (SELECT 1 FROM pauses p WHERE p.campaign = letters.campaign
                                          AND p.target_id IN ('{}', letters.target_id))
                     ORDER BY priority DESC, next_attempt_at, id
                     LIMIT $6
                     FOR UPDATE SKIP LOCKED
                 ), claimed AS (
                    UPDATE letters
                       SET state = 'claimed', lease_owner = $1, lease_token = $2,
                           lease_expires_at = $3, attempts = attempts + 1, updated_at = $4
                      FROM due WHERE letters.id = due.id
                    RETURNING letters.*
                 )
                 SELECT c.id, c.campaign, c.target_id, c.recipient, c.recipient_name,
                        c.from_name, c.from_address, c.reply_to, c.language, c.template_hash,
                        c.message_id, c.attempts, c.queued_at, b.subject, b.body_text,
                        b.body_html
                   FROM claimed c LEFT JOIN letter_bodies b ON b.letter_id = c.id
                  ORDER BY c.id",
                moves::CLAIM.fence_sql(),
                rows::WHOLE_CAMPAIGN
            )
        });
        let letters: Vec<ClaimedRow> = sqlx::query_as(sql)
            .bind(req.owner)
            .bind(req.token)
            .bind(req.now + req.lease_ms)
            .bind(req.now)
            .bind(req.campaign)
            .bind(i64::from(req.limit))
            .bind(req.target)
            .bind(req.exclude_campaigns)
            .fetch_all(&self.pool)
            .await?;
        let n = letters.len();
        rows::claimed(letters, n, req.token)
    }

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
        let mut tx = self.pool.begin().await?;
        let recorded = if records.is_empty() {
            0
        } else {
            record_in(&mut tx, records, now).await?
        };
        let marked = if marks.is_empty() {
            Vec::new()
        } else {
            sqlx::query_scalar(&format!(
                "UPDATE letters SET state = 'sending', updated_at = $1
                  WHERE lease_token = $2 AND state IN ({}) AND id = ANY($3)
                 RETURNING id",
                moves::MARK_SENDING.fence_sql()
            ))
            .bind(now)
            .bind(token)
            .bind(marks)
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
        Ok(sqlx::query(&format!(
            "UPDATE letters {}
               FROM UNNEST($2::bigint[], $3::bigint[]) AS h (id, token)
              WHERE letters.id = h.id AND letters.lease_token = h.token
                AND letters.state IN ({})",
            unclaim_set(),
            moves::RELEASE.fence_sql()
        ))
        .bind(now)
        .bind(ids.iter().map(|(id, _)| *id).collect::<Vec<_>>())
        .bind(ids.iter().map(|(_, token)| *token).collect::<Vec<_>>())
        .execute(&self.pool)
        .await?
        .rows_affected())
    }

    async fn recover_expired(&self, now: Millis) -> Result<Recovered, QueueError> {
        const LOST: &str = "the worker sending this letter stopped after the data may have been \
                            transmitted, before the server's reply was recorded (lease expired)";
        let mut tx = self.pool.begin().await?;
        // Claimed but DATA never accepted: the server holds no complete message. Queue again,
        // uncounting the attempt that never happened. Rows another worker is rescuing now are
        // skipped, not waited for.
        let requeued = sqlx::query(&format!(
            "WITH lost AS (
                SELECT id FROM letters WHERE state IN ({}) AND lease_expires_at < $1
                   FOR UPDATE SKIP LOCKED
             )
             UPDATE letters {} FROM lost WHERE letters.id = lost.id",
            moves::RECOVER_CLAIMED.fence_sql(),
            unclaim_set()
        ))
        .bind(now)
        .execute(&mut *tx)
        .await?
        .rows_affected();
        // In the conversation past DATA: it may have been delivered. Never resent on its own;
        // the attempt is recorded with what the lease knew.
        let in_doubt = sqlx::query(&format!(
            "WITH lost AS (
                SELECT id, attempts, COALESCE(lease_owner, '') AS owner, updated_at
                  FROM letters WHERE state IN ({}) AND lease_expires_at < $1
                   FOR UPDATE SKIP LOCKED
             ), moved AS (
                UPDATE letters
                   SET state = 'in_doubt', updated_at = $1, last_code = NULL,
                       last_enhanced_code = NULL, last_reply = $2, lease_owner = NULL,
                       lease_token = NULL, lease_expires_at = NULL
                  FROM lost WHERE letters.id = lost.id
                RETURNING letters.id
             )
             INSERT INTO attempts (letter_id, attempt, worker, started_at, finished_at,
                 duration_ms, outcome, stage, reply)
             SELECT lost.id, lost.attempts, lost.owner, lost.updated_at, $1,
                    $1 - lost.updated_at, 'in_doubt', 'end_of_data', $2
               FROM lost JOIN moved ON moved.id = lost.id",
            moves::RECOVER_SENDING.fence_sql()
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
            "SELECT id FROM letters WHERE lease_token = $1 AND state = 'sending' AND id = ANY($2)",
        )
        .bind(token)
        .bind(ids)
        .fetch_all(&self.pool)
        .await?)
    }

    async fn extend_leases(&self, token: i64, until: Millis) -> Result<u64, QueueError> {
        Ok(sqlx::query(&format!(
            "UPDATE letters SET lease_expires_at = $1
              WHERE lease_expires_at IS NOT NULL AND lease_token = $2 AND state IN ({})",
            moves::LEASED.fence_sql()
        ))
        .bind(until)
        .bind(token)
        .execute(&self.pool)
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
                "UPDATE letters SET state = 'queued', next_attempt_at = $1, queued_at = $1,
                        updated_at = $1
                  WHERE state IN ({}) AND ($2::text IS NULL OR campaign = $2)
                    AND ($3::bigint IS NULL OR id = $3)",
                moves::RESOLVE_RESEND.fence_sql()
            )
        } else {
            format!(
                "UPDATE letters SET state = 'sent', sent_at = $1, updated_at = $1,
                        last_reply = 'marked sent by an organiser after being in doubt'
                  WHERE state IN ({}) AND ($2::text IS NULL OR campaign = $2)
                    AND ($3::bigint IS NULL OR id = $3)",
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
                  WHERE state IN ({}) AND ($1::text IS NULL OR campaign = $1)
                    AND ($2::text[] IS NULL OR kind = 'confirmation' OR campaign <> ALL($2))
                    AND NOT EXISTS (SELECT 1 FROM pauses p WHERE p.campaign = letters.campaign
                                       AND p.target_id IN ('{}', letters.target_id))",
                moves::CLAIM.fence_sql(),
                rows::WHOLE_CAMPAIGN
            )
        });
        Ok(sqlx::query_scalar(sql)
            .bind(campaign)
            .bind(exclude)
            .fetch_one(&self.pool)
            .await?)
    }

    async fn status(&self, campaign: Option<&str>) -> Result<StatusReport, QueueError> {
        // As on SQLite: the covering index `letters_report` leaves out the letters workers
        // hold, which `letters_leased` finds.
        let leased = moves::LEASED.fence_sql();
        let groups: Vec<StatusRow> = sqlx::query_as(&format!(
            "SELECT campaign, target_id, state, kind, COUNT(*) AS letters,
                    MIN(queued_at) AS oldest_queued_at
               FROM letters
              WHERE state NOT IN ({leased}) AND ($1::text IS NULL OR campaign = $1)
              GROUP BY campaign, target_id, state, kind
             UNION ALL
             SELECT campaign, target_id, state, kind, COUNT(*), MIN(queued_at) FROM letters
              WHERE lease_expires_at IS NOT NULL AND state IN ({leased})
                AND ($1::text IS NULL OR campaign = $1)
              GROUP BY campaign, target_id, state, kind
             ORDER BY 1, 2, 3, 4"
        ))
        .bind(campaign)
        .fetch_all(&self.pool)
        .await?;
        let signatures = sqlx::query_scalar(
            "SELECT COUNT(*) FROM signatures WHERE ($1::text IS NULL OR campaign = $1)",
        )
        .bind(campaign)
        .fetch_one(&self.pool)
        .await?;
        rows::fold_status(groups, signatures)
    }

    async fn retry_failed(&self, campaign: Option<&str>, now: Millis) -> Result<u64, QueueError> {
        Ok(sqlx::query(&format!(
            "UPDATE letters SET state = 'queued', next_attempt_at = $1, queued_at = $1,
                    updated_at = $1
              WHERE state IN ({}) AND ($2::text IS NULL OR campaign = $2)",
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
            "UPDATE letters SET state = 'queued', next_attempt_at = $1, queued_at = $1,
                    updated_at = $1
              WHERE id = $2 AND state IN ({})",
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
                sqlx::query_scalar("SELECT state FROM letters WHERE id = $1")
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
               FROM letters WHERE id = $1",
        )
        .bind(id)
        .fetch_optional(&self.pool)
        .await?;
        row.map(SummaryRow::into_summary).transpose()
    }

    async fn signature_letters(
        &self,
        public_id: &str,
    ) -> Result<Option<Vec<LetterSummary>>, QueueError> {
        let exists: Option<i64> =
            sqlx::query_scalar("SELECT id FROM signatures WHERE public_id = $1")
                .bind(public_id)
                .fetch_optional(&self.pool)
                .await?;
        let Some(sig) = exists else { return Ok(None) };
        let letters: Vec<SummaryRow> = sqlx::query_as(
            "SELECT id, campaign, target_id, state, attempts, last_code, last_reply FROM letters
              WHERE signature_id = $1 ORDER BY id",
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

    async fn pause(
        &self,
        campaign: &str,
        target: Option<&str>,
        now: Millis,
    ) -> Result<u64, QueueError> {
        let mut tx = self.pool.begin().await?;
        sqlx::query(
            "INSERT INTO pauses (campaign, target_id, created_at) VALUES ($1, $2, $3)
             ON CONFLICT (campaign, target_id) DO NOTHING",
        )
        .bind(campaign)
        .bind(target.unwrap_or(rows::WHOLE_CAMPAIGN))
        .bind(now)
        .execute(&mut *tx)
        .await?;
        let held = sqlx::query(&format!(
            "UPDATE letters SET state = 'held', updated_at = $1
              WHERE state IN ({}) AND campaign = $2 AND ($3::text IS NULL OR target_id = $3)",
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
        sqlx::query(
            "DELETE FROM pauses WHERE campaign = $1 AND ($2::text IS NULL OR target_id = $2)",
        )
        .bind(campaign)
        .bind(target)
        .execute(&mut *tx)
        .await?;
        let resumed = sqlx::query(&format!(
            "UPDATE letters SET state = 'queued', updated_at = $1
              WHERE state IN ({}) AND campaign = $2 AND ($3::text IS NULL OR target_id = $3)
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
            "UPDATE letters SET state = 'cancelled', updated_at = $1,
                    last_reply = 'cancelled by an organiser'
              WHERE state IN ({}) AND campaign = $2 AND ($3::text IS NULL OR target_id = $3)",
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
                  WHERE a.started_at >= $1 AND l.kind = 'letter'
                 UNION ALL
                 SELECT recipient, recipient_domain, updated_at FROM letters
                  WHERE state IN ({}) AND kind = 'letter' AND updated_at >= $1
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
                AND ($1::text IS NULL OR campaign = $1)
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
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11)
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
        .bind(r.code.map(i64::from))
        .bind(r.enhanced_code.as_deref())
        .bind(r.reply.as_deref())
        .bind(r.hint.as_deref())
        .bind(r.retry_at)
        .bind(&r.worker)
        .bind(r.updated_at)
        .execute(&self.pool)
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

    async fn reserve(
        &self,
        key: &str,
        n: u32,
        interval_us: i64,
        now_us: i64,
    ) -> Result<i64, QueueError> {
        // One row per limit, updated in one statement: every process's reservations line up
        // on it, whatever their number.
        Ok(sqlx::query_scalar(
            "INSERT INTO throttles (key, tat_us) VALUES ($1, $3 + $2 * $4)
             ON CONFLICT (key) DO UPDATE SET tat_us = GREATEST(throttles.tat_us, $3) + $2 * $4
             RETURNING tat_us",
        )
        .bind(key)
        .bind(i64::from(n))
        .bind(now_us)
        .bind(interval_us)
        .fetch_one(&self.pool)
        .await?)
    }

    async fn hold(&self, key: &str, until_us: i64) -> Result<i64, QueueError> {
        Ok(sqlx::query_scalar(
            "INSERT INTO throttles (key, tat_us) VALUES ($1, $2)
             ON CONFLICT (key) DO UPDATE SET tat_us = GREATEST(throttles.tat_us, $2)
             RETURNING tat_us",
        )
        .bind(key)
        .bind(until_us)
        .fetch_one(&self.pool)
        .await?)
    }

    async fn throttle(&self, key: &str) -> Result<Option<i64>, QueueError> {
        Ok(
            sqlx::query_scalar("SELECT tat_us FROM throttles WHERE key = $1")
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
            "INSERT INTO leadership (role, holder, expires_at) VALUES ($1, $2, $3 + $4)
             ON CONFLICT (role) DO UPDATE
                SET holder = excluded.holder, expires_at = excluded.expires_at
              WHERE leadership.holder = excluded.holder OR leadership.expires_at < $3
                 OR leadership.holder = $5
             RETURNING holder",
        )
        .bind(role)
        .bind(holder)
        .bind(now)
        .bind(lease_ms)
        .bind(replacing)
        .fetch_optional(&self.pool)
        .await?;
        if let Some(held) = took {
            return Ok(held);
        }
        // Held by someone else: who.
        Ok(
            sqlx::query_scalar("SELECT holder FROM leadership WHERE role = $1")
                .bind(role)
                .fetch_optional(&self.pool)
                .await?
                .unwrap_or_default(),
        )
    }

    async fn resign(&self, role: &str, holder: &str) -> Result<(), QueueError> {
        sqlx::query("DELETE FROM leadership WHERE role = $1 AND holder = $2")
            .bind(role)
            .bind(holder)
            .execute(&self.pool)
            .await?;
        Ok(())
    }

    async fn ageing(
        &self,
        campaign: Option<&str>,
        queued_before: Millis,
    ) -> Result<Ageing, QueueError> {
        let (letters, oldest_queued_at): (i64, Option<i64>) = sqlx::query_as(
            "SELECT COUNT(*), MIN(queued_at) FROM letters
              WHERE state = 'deferred' AND queued_at <= $1 AND ($2::text IS NULL OR campaign = $2)",
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
}
