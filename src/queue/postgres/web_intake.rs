//! PostgreSQL for web and API intake (see `queue/web_intake.rs` for the contract and the
//! policies): double opt-in and idempotency keys, each write one transaction.

use super::PgQueue;
use crate::domain::NewSigner;
use crate::queue::rows::SIGNATURE_COLUMNS;
use crate::queue::store::IntakeStore;
use crate::queue::web_intake::{again_step, confirmation_target, AgainStep, CONFIRMATION_PRIORITY};
use crate::queue::{
    AwaitingRecorded, AwaitingSignature, Confirmed, IntakeDetails, Millis, NewAwaitingSignature,
    NewLetter, NewSignature, QueueError, StoredResponse,
};
use sqlx::{Postgres, Row, Transaction};

/// Inserts the signature row; `None` when the signer already signed this campaign.
async fn insert_signature(
    tx: &mut Transaction<'_, Postgres>,
    sig: &NewSignature,
    details: &IntakeDetails,
    awaiting: Option<(&str, Millis)>,
    now: Millis,
) -> Result<Option<i64>, QueueError> {
    let s = &sig.signer;
    Ok(sqlx::query_scalar(&format!(
        "INSERT INTO signatures ({SIGNATURE_COLUMNS}, confirm_token_hash, confirm_expires_at)
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15, $16, $17)
         ON CONFLICT (campaign, email_normalized) DO NOTHING
         RETURNING id"
    ))
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
    .bind(details.consent_contact)
    .bind(details.referrer.as_deref())
    .bind(awaiting.map(|(hash, _)| hash))
    .bind(awaiting.map(|(_, expires)| expires))
    .fetch_optional(&mut **tx)
    .await?)
}

/// Queues one row of `letters`: a letter (`kind = 'letter'`) or a confirmation email.
async fn insert_letter(
    tx: &mut Transaction<'_, Postgres>,
    signature_id: i64,
    campaign: &str,
    l: &NewLetter,
    kind: &str,
    priority: i64,
    now: Millis,
) -> Result<(), QueueError> {
    let letter = &l.letter;
    let id: i64 = sqlx::query_scalar(
        "INSERT INTO letters (signature_id, campaign, target_id, recipient, recipient_name,
            recipient_domain, from_name, from_address, reply_to, language,
            template_hash, message_id, state, attempts,
            next_attempt_at, queued_at, created_at, updated_at, kind, priority)
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12,
            'queued', 0, $13, $13, $13, $13, $14, $15)
         RETURNING id",
    )
    .bind(signature_id)
    .bind(campaign)
    .bind(&letter.target_id)
    .bind(letter.recipient.as_str())
    .bind(&letter.recipient_name)
    .bind(letter.recipient.domain())
    .bind(&letter.from_name)
    .bind(letter.from_address.as_str())
    .bind(letter.reply_to.as_str())
    .bind(letter.language.as_str())
    .bind(&letter.template_hash)
    .bind(&l.message_id)
    .bind(now)
    .bind(kind)
    .bind(priority)
    .fetch_one(&mut **tx)
    .await?;
    sqlx::query(
        "INSERT INTO letter_bodies (letter_id, subject, body_text, body_html)
         VALUES ($1, $2, $3, $4)",
    )
    .bind(id)
    .bind(&letter.subject)
    .bind(&letter.body_text)
    .bind(letter.body_html.as_deref())
    .execute(&mut **tx)
    .await?;
    Ok(())
}

/// Queues the `n`th confirmation email of a signature.
async fn insert_confirmation(
    tx: &mut Transaction<'_, Postgres>,
    signature_id: i64,
    p: &NewAwaitingSignature,
    n: i64,
    now: Millis,
) -> Result<(), QueueError> {
    let mut email = p.confirmation.email.clone();
    email.target_id = confirmation_target(n);
    let row = NewLetter {
        letter: email,
        message_id: p.confirmation.message_id.clone(),
    };
    insert_letter(
        tx,
        signature_id,
        &p.signature.campaign,
        &row,
        "confirmation",
        CONFIRMATION_PRIORITY,
        now,
    )
    .await
}

impl IntakeStore for PgQueue {
    async fn record_awaiting(
        &self,
        p: &NewAwaitingSignature,
        now: Millis,
    ) -> Result<AwaitingRecorded, QueueError> {
        let sig = &p.signature;
        let mut tx = self.pool.begin().await?;
        let awaiting = Some((p.token_hash.as_str(), p.expires_at));
        if let Some(id) = insert_signature(&mut tx, sig, &p.details, awaiting, now).await? {
            insert_confirmation(&mut tx, id, p, 1, now).await?;
            tx.commit().await?;
            return Ok(AwaitingRecorded::Awaiting {
                public_id: sig.public_id.clone(),
            });
        }
        let row = sqlx::query(
            "SELECT id, public_id, confirm_expires_at FROM signatures
              WHERE campaign = $1 AND email_normalized = $2",
        )
        .bind(&sig.campaign)
        .bind(sig.signer.email.normalized())
        .fetch_one(&mut *tx)
        .await?;
        let id: i64 = row.try_get("id")?;
        let public_id: String = row.try_get("public_id")?;
        let expires: Option<Millis> = row.try_get("confirm_expires_at")?;
        let sent: i64 = sqlx::query_scalar(
            "SELECT COUNT(*) FROM letters WHERE signature_id = $1 AND kind = 'confirmation'",
        )
        .bind(id)
        .fetch_one(&mut *tx)
        .await?;
        let n = match again_step(expires, sent) {
            AgainStep::Duplicate => {
                tx.commit().await?;
                return Ok(AwaitingRecorded::Duplicate { public_id });
            }
            AgainStep::ResendLimit => {
                tx.commit().await?;
                return Ok(AwaitingRecorded::ResendLimit { public_id });
            }
            AgainStep::Resend { n } => n,
        };
        // The latest details win: the signer may have corrected a typo in their name.
        let s = &sig.signer;
        sqlx::query(
            "UPDATE signatures
                SET confirm_token_hash = $1, confirm_expires_at = $2, first_name = $3,
                    last_name = $4, email = $5, city = $6, postal_code = $7, country = $8,
                    language = $9, message = $10, consent_contact = $11, referrer = $12
              WHERE id = $13",
        )
        .bind(&p.token_hash)
        .bind(p.expires_at)
        .bind(s.first_name.as_str())
        .bind(s.last_name.as_str())
        .bind(s.email.as_str())
        .bind(s.city.as_deref())
        .bind(s.postal_code.as_deref())
        .bind(s.country.as_deref())
        .bind(s.language.as_ref().map(|l| l.as_str()))
        .bind(s.message.as_deref())
        .bind(p.details.consent_contact)
        .bind(p.details.referrer.as_deref())
        .bind(id)
        .execute(&mut *tx)
        .await?;
        insert_confirmation(&mut tx, id, p, n, now).await?;
        tx.commit().await?;
        Ok(AwaitingRecorded::Resent { public_id })
    }

    async fn awaiting_by_token(
        &self,
        token_hash: &str,
        now: Millis,
    ) -> Result<Option<AwaitingSignature>, QueueError> {
        let row = sqlx::query(
            "SELECT public_id, campaign, first_name, last_name, email, city, postal_code, country,
                    language, message, confirmed_at
               FROM signatures
              WHERE confirm_token_hash = $1
                AND (confirmed_at IS NOT NULL OR confirm_expires_at > $2)",
        )
        .bind(token_hash)
        .bind(now)
        .fetch_optional(&self.pool)
        .await?;
        let Some(row) = row else { return Ok(None) };
        Ok(Some(AwaitingSignature {
            public_id: row.try_get("public_id")?,
            campaign: row.try_get("campaign")?,
            signer: NewSigner {
                first_name: row.try_get("first_name")?,
                last_name: row.try_get("last_name")?,
                email: row.try_get("email")?,
                city: row.try_get("city")?,
                postal_code: row.try_get("postal_code")?,
                country: row.try_get("country")?,
                language: row.try_get("language")?,
                message: row.try_get("message")?,
            },
            confirmed: row.try_get::<Option<Millis>, _>("confirmed_at")?.is_some(),
        }))
    }

    async fn confirm_signature(
        &self,
        token_hash: &str,
        letters: &[NewLetter],
        now: Millis,
    ) -> Result<Confirmed, QueueError> {
        let mut tx = self.pool.begin().await?;
        let confirmed = sqlx::query(
            "UPDATE signatures SET confirmed_at = $1, confirm_expires_at = NULL
              WHERE confirm_token_hash = $2 AND confirmed_at IS NULL AND confirm_expires_at > $1
              RETURNING id, public_id, campaign",
        )
        .bind(now)
        .bind(token_hash)
        .fetch_optional(&mut *tx)
        .await?;
        let Some(row) = confirmed else {
            let earlier: Option<String> = sqlx::query_scalar(
                "SELECT public_id FROM signatures
                  WHERE confirm_token_hash = $1 AND confirmed_at IS NOT NULL",
            )
            .bind(token_hash)
            .fetch_optional(&mut *tx)
            .await?;
            tx.commit().await?;
            return Ok(match earlier {
                Some(public_id) => Confirmed::Already { public_id },
                None => Confirmed::NotFound,
            });
        };
        let id: i64 = row.try_get("id")?;
        let campaign: String = row.try_get("campaign")?;
        for l in letters {
            insert_letter(&mut tx, id, &campaign, l, "letter", 0, now).await?;
        }
        tx.commit().await?;
        Ok(Confirmed::Now {
            public_id: row.try_get("public_id")?,
            letters: letters.len(),
        })
    }

    async fn delete_expired_awaiting(&self, now: Millis) -> Result<u64, QueueError> {
        // Letters and attempts go with them (ON DELETE CASCADE). An awaiting signature has only
        // confirmation emails: its letters are created when it is confirmed.
        Ok(sqlx::query(
            "DELETE FROM signatures
              WHERE confirm_expires_at IS NOT NULL AND confirm_expires_at <= $1
                AND confirmed_at IS NULL",
        )
        .bind(now)
        .execute(&self.pool)
        .await?
        .rows_affected())
    }

    async fn idempotent_response(
        &self,
        api_key_hash: &str,
        key: &str,
    ) -> Result<Option<StoredResponse>, QueueError> {
        let row = sqlx::query(
            "SELECT request_hash, status, body FROM idempotency_keys
              WHERE api_key_hash = $1 AND idempotency_key = $2",
        )
        .bind(api_key_hash)
        .bind(key)
        .fetch_optional(&self.pool)
        .await?;
        row.map(|r| stored(&r)).transpose()
    }

    async fn store_idempotent_response(
        &self,
        api_key_hash: &str,
        key: &str,
        response: &StoredResponse,
        now: Millis,
    ) -> Result<StoredResponse, QueueError> {
        let mut tx = self.pool.begin().await?;
        sqlx::query(
            "INSERT INTO idempotency_keys (api_key_hash, idempotency_key, request_hash, status,
                body, created_at)
             VALUES ($1, $2, $3, $4, $5, $6)
             ON CONFLICT (api_key_hash, idempotency_key) DO NOTHING",
        )
        .bind(api_key_hash)
        .bind(key)
        .bind(&response.request_hash)
        .bind(i64::from(response.status))
        .bind(&response.body)
        .bind(now)
        .execute(&mut *tx)
        .await?;
        let row = sqlx::query(
            "SELECT request_hash, status, body FROM idempotency_keys
              WHERE api_key_hash = $1 AND idempotency_key = $2",
        )
        .bind(api_key_hash)
        .bind(key)
        .fetch_one(&mut *tx)
        .await?;
        tx.commit().await?;
        stored(&row)
    }

    async fn prune_idempotency_keys(&self, before: Millis) -> Result<u64, QueueError> {
        Ok(
            sqlx::query("DELETE FROM idempotency_keys WHERE created_at < $1")
                .bind(before)
                .execute(&self.pool)
                .await?
                .rows_affected(),
        )
    }
}

fn stored(row: &sqlx::postgres::PgRow) -> Result<StoredResponse, QueueError> {
    Ok(StoredResponse {
        request_hash: row.try_get("request_hash")?,
        status: row.try_get::<i64, _>("status")? as u16,
        body: row.try_get("body")?,
    })
}
