//! What a store reads and writes, as rows neither store owns, and the queue's own work on them:
//! a claimed letter decoded from its row, the status report folded from its groups, a batch of
//! attempt records split into rounds, a next state turned into the columns it writes, the
//! signatures a batch created or found already. Each store only moves these rows in and out of
//! its SQL (`sqlx::FromRow` derives work for both).
//!
//! Depends on `domain` only.

use super::{
    AttemptRecord, ClaimedLetter, LetterSummary, Millis, NewSignature, NextState, QueueError,
    Recorded, RelayHealthRecord, StatusReport, TargetCount,
};
use crate::domain::{EmailAddress, LanguageTag, Letter, LetterState};
use std::collections::{HashMap, HashSet};

/// A stored state's name, read back: the CHECK constraint admits only known names, so an
/// unknown one is a damaged database, and an error.
pub(super) fn state_of(name: &str) -> Result<LetterState, QueueError> {
    name.parse()
        .map_err(|e: String| QueueError::Database(sqlx::Error::Decode(e.into())))
}

fn decode_error(what: String) -> QueueError {
    QueueError::Database(sqlx::Error::Decode(what.into()))
}

/// A claimed letter as a store reads it, with its text.
#[derive(Debug, sqlx::FromRow)]
pub(super) struct ClaimedRow {
    pub(super) id: i64,
    pub(super) campaign: String,
    pub(super) target_id: String,
    pub(super) recipient: String,
    pub(super) recipient_name: String,
    pub(super) from_name: String,
    pub(super) from_address: String,
    pub(super) reply_to: String,
    pub(super) language: String,
    pub(super) template_hash: String,
    pub(super) message_id: String,
    pub(super) attempts: i64,
    pub(super) queued_at: i64,
    /// `None` when the letter has no row in `letter_bodies`.
    pub(super) subject: Option<String>,
    pub(super) body_text: Option<String>,
    pub(super) body_html: Option<String>,
}

impl ClaimedRow {
    /// The letter as the worker sends it, leased under `token`. Addresses are parsed again
    /// (an address stored before international domains became A-labels becomes one here).
    pub(super) fn into_claimed(self, token: i64) -> Result<ClaimedLetter, QueueError> {
        let id = self.id;
        let (Some(subject), Some(body_text)) = (self.subject, self.body_text) else {
            return Err(decode_error(format!(
                "letter {id} has no text in letter_bodies"
            )));
        };
        let email = |column: &str, value: &str| {
            EmailAddress::parse(value).map_err(|e| decode_error(format!("{column} {e}")))
        };
        Ok(ClaimedLetter {
            id,
            campaign: self.campaign,
            message_id: self.message_id,
            attempt: self.attempts as u32,
            lease_token: token,
            queued_at: self.queued_at,
            letter: Letter {
                recipient: email("recipient", &self.recipient)?,
                from_address: email("from_address", &self.from_address)?,
                reply_to: email("reply_to", &self.reply_to)?,
                target_id: self.target_id,
                recipient_name: self.recipient_name,
                from_name: self.from_name,
                language: LanguageTag::parse(&self.language)
                    .map_err(|e| decode_error(e.to_string()))?,
                subject,
                body_text,
                body_html: self.body_html,
                template_hash: self.template_hash,
            },
        })
    }
}

/// Letters claimed by one statement, in id order, decoded; letters deleted between the claim
/// and the read (their signature erased) are simply not sent.
pub(super) fn claimed(
    rows: Vec<ClaimedRow>,
    claimed_ids: usize,
    token: i64,
) -> Result<Vec<ClaimedLetter>, QueueError> {
    if rows.len() < claimed_ids {
        tracing::info!(
            vanished = claimed_ids - rows.len(),
            "claimed letters were deleted before they were read; they are not sent"
        );
    }
    rows.into_iter().map(|r| r.into_claimed(token)).collect()
}

/// One group of the status report: letters of one campaign, target, state and kind.
#[derive(Debug, sqlx::FromRow)]
pub(super) struct StatusRow {
    pub(super) campaign: String,
    pub(super) target_id: String,
    pub(super) state: String,
    pub(super) kind: String,
    pub(super) letters: i64,
    pub(super) oldest_queued_at: i64,
}

/// The report from its groups and the signature count.
pub(super) fn fold_status(
    rows: Vec<StatusRow>,
    signatures: i64,
) -> Result<StatusReport, QueueError> {
    let mut report = StatusReport {
        signatures,
        ..StatusReport::default()
    };
    for row in rows {
        let state = state_of(&row.state)?;
        if state.is_waiting() {
            report.oldest_waiting_since = Some(
                report
                    .oldest_waiting_since
                    .map_or(row.oldest_queued_at, |t| t.min(row.oldest_queued_at)),
            );
        }
        if row.kind == "confirmation" {
            *report.confirmations.entry(state).or_default() += row.letters;
            continue;
        }
        *report.by_state.entry(state).or_default() += row.letters;
        report.by_target.push(TargetCount {
            campaign: row.campaign,
            target_id: row.target_id,
            state,
            letters: row.letters,
        });
    }
    Ok(report)
}

/// A letter as reports show it, as a store reads it.
#[derive(Debug, sqlx::FromRow)]
pub(super) struct SummaryRow {
    pub(super) id: i64,
    pub(super) campaign: String,
    pub(super) target_id: String,
    pub(super) state: String,
    pub(super) attempts: i64,
    pub(super) last_code: Option<i64>,
    pub(super) last_reply: Option<String>,
}

impl SummaryRow {
    pub(super) fn into_summary(self) -> Result<LetterSummary, QueueError> {
        Ok(LetterSummary {
            id: self.id,
            campaign: self.campaign,
            target_id: self.target_id,
            state: state_of(&self.state)?,
            attempts: self.attempts,
            last_code: self.last_code,
            last_reply: self.last_reply,
        })
    }
}

/// What a finished attempt writes on its letter.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) struct Outcome {
    /// The next state.
    pub(super) state: LetterState,
    /// When the letter is next due (the retry time, else the attempt's end).
    pub(super) next_attempt_at: Millis,
    /// When it was sent, for `sent`.
    pub(super) sent_at: Option<Millis>,
}

impl AttemptRecord {
    /// The columns this record writes on its letter.
    pub(super) fn outcome(&self) -> Outcome {
        let (next_attempt_at, sent_at) = match self.next {
            NextState::Deferred { retry_at } => (retry_at, None),
            NextState::Sent => (self.finished_at, Some(self.finished_at)),
            _ => (self.finished_at, None),
        };
        Outcome {
            state: self.next.state(),
            next_attempt_at,
            sent_at,
        }
    }
}

/// A batch of records in rounds: a letter's records apply in batch order, as when they were
/// written one by one, so its nth record in the batch goes in round n (there is only one
/// round unless a batch holds two records for one letter).
pub(super) fn rounds(records: &[AttemptRecord]) -> Vec<Vec<&AttemptRecord>> {
    let mut rounds: Vec<Vec<&AttemptRecord>> = Vec::new();
    let mut seen: HashMap<i64, usize> = HashMap::with_capacity(records.len());
    for r in records {
        let n = seen.entry(r.letter_id).or_insert(0);
        if rounds.len() <= *n {
            rounds.push(Vec::new());
        }
        rounds[*n].push(r);
        *n += 1;
    }
    rounds
}

/// What a batch of signatures did, in batch order: the ones the store created (by public id),
/// and for the others the public id of the signature already there for that signer.
pub(super) fn recorded(
    batch: &[NewSignature],
    created: &HashSet<String>,
    existing: &HashMap<(String, String), String>,
) -> Result<Vec<Recorded>, QueueError> {
    batch
        .iter()
        .map(|sig| {
            if created.contains(&sig.public_id) {
                return Ok(Recorded::Created {
                    public_id: sig.public_id.clone(),
                    letters: sig.letters.len(),
                });
            }
            let key = (sig.campaign.clone(), sig.signer.email.normalized());
            existing
                .get(&key)
                .map(|public_id| Recorded::Duplicate {
                    public_id: public_id.clone(),
                })
                .ok_or_else(|| {
                    decode_error(format!(
                        "signature {} was neither created nor found",
                        sig.public_id
                    ))
                })
        })
        .collect()
}

/// The columns of a new `signatures` row that every intake path writes, in this order.
pub(super) const SIGNATURE_COLUMNS: &str = "public_id, campaign, email, email_normalized, \
    first_name, last_name, city, postal_code, country, language, message, source, created_at, \
    consent_contact, referrer";

/// The relay's health record as a store reads it.
#[derive(Debug, sqlx::FromRow)]
pub(super) struct RelayHealthRow {
    pub(super) relay: String,
    pub(super) state: String,
    pub(super) since: i64,
    pub(super) stage: Option<String>,
    pub(super) code: Option<i64>,
    pub(super) enhanced_code: Option<String>,
    pub(super) reply: Option<String>,
    pub(super) hint: Option<String>,
    pub(super) retry_at: Option<i64>,
    pub(super) worker: String,
    pub(super) updated_at: i64,
}

impl RelayHealthRow {
    pub(super) fn into_record(self) -> Result<RelayHealthRecord, QueueError> {
        let usable = match self.state.as_str() {
            "usable" => true,
            "unusable" => false,
            other => return Err(decode_error(format!("unknown relay state `{other}`"))),
        };
        Ok(RelayHealthRecord {
            relay: self.relay,
            usable,
            since: self.since,
            stage: self.stage,
            code: self.code.map(|c| c as u16),
            enhanced_code: self.enhanced_code,
            reply: self.reply,
            hint: self.hint,
            retry_at: self.retry_at,
            worker: self.worker,
            updated_at: self.updated_at,
        })
    }
}

/// A campaign's pause is stored with this target id: it covers every target.
pub(super) const WHOLE_CAMPAIGN: &str = "";

/// A pause as organisers see it: the campaign, and the target if only one is paused.
pub(super) fn pause_of(campaign: String, target_id: String) -> (String, Option<String>) {
    let target = (target_id != WHOLE_CAMPAIGN).then_some(target_id);
    (campaign, target)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn record(letter_id: i64, next: NextState) -> AttemptRecord {
        AttemptRecord {
            letter_id,
            lease_token: 1,
            attempt: 1,
            worker: "w".into(),
            started_at: 10,
            finished_at: 20,
            next,
            stage: None,
            code: None,
            enhanced_code: None,
            reply: None,
        }
    }

    #[test]
    fn a_letters_second_record_in_a_batch_goes_in_the_next_round() {
        let batch = [
            record(1, NextState::Sent),
            record(2, NextState::Failed),
            record(1, NextState::Failed),
        ];
        let r = rounds(&batch);
        assert_eq!(r.len(), 2);
        assert_eq!(r[0].iter().map(|r| r.letter_id).collect::<Vec<_>>(), [1, 2]);
        assert_eq!(r[1][0].letter_id, 1);
    }

    #[test]
    fn outcomes_write_the_retry_time_or_the_sending_time() {
        let deferred = record(1, NextState::Deferred { retry_at: 99 }).outcome();
        assert_eq!(
            (deferred.state, deferred.next_attempt_at, deferred.sent_at),
            (LetterState::Deferred, 99, None)
        );
        let sent = record(1, NextState::Sent).outcome();
        assert_eq!((sent.next_attempt_at, sent.sent_at), (20, Some(20)));
    }

    #[test]
    fn an_unknown_stored_state_is_an_error_not_a_default() {
        assert!(state_of("bogus").is_err());
        assert_eq!(state_of("in_doubt").unwrap(), LetterState::InDoubt);
    }

    #[test]
    fn a_whole_campaign_pause_has_no_target() {
        assert_eq!(pause_of("c".into(), "".into()), ("c".into(), None));
        assert_eq!(
            pause_of("c".into(), "t".into()),
            ("c".into(), Some("t".into()))
        );
    }
}
