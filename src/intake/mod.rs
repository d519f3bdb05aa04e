//! Intake: where signatures enter, whatever the door (CLI `sign`, CSV `import`, and the web form
//! and API that build on it). A signature is checked, its letters rendered and pinned, and the
//! whole written in one transaction; signing twice is a counted duplicate, never an error. Every
//! door checks the signer's address against the same `AddressPolicy` (`smtp.smtputf8`).
//!
//! Depends on `domain`, `letters` and `queue` (and `config` for the web server's settings).

mod csv_import;
pub mod web;

pub use csv_import::{import_csv, ImportError, ImportOptions, ImportReport, RowProblem};

use crate::domain::{AddressPolicy, NewSigner, Signer, SignerError};
use crate::letters::{Campaign, LettersError, RenderInput};
use crate::queue::{NewLetter, NewSignature, Queue, QueueError, Recorded, Source};
use chrono::NaiveDate;

/// Errors of intake.
#[derive(Debug, thiserror::Error)]
pub enum IntakeError {
    #[error("invalid signature: {0}")]
    Invalid(#[from] SignerError),
    #[error(transparent)]
    Letters(#[from] LettersError),
    #[error(transparent)]
    Queue(#[from] QueueError),
}

/// A fresh Message-ID on the organisation's domain; the letter keeps it on every attempt.
pub fn new_message_id(sender_domain: &str) -> String {
    format!("<{}@{}>", uuid::Uuid::now_v7().simple(), sender_domain)
}

/// Renders `signer`'s letters to every target of `campaign`, ready to record.
pub fn prepare(
    campaign: &Campaign,
    signer: Signer,
    source: Source,
    today: NaiveDate,
) -> Result<NewSignature, LettersError> {
    let domain = campaign.organisation.sender.domain().to_owned();
    let mut letters = Vec::with_capacity(campaign.targets.len());
    for target in &campaign.targets {
        let letter = campaign.render(&RenderInput {
            signer: &signer,
            target,
            today,
        })?;
        letters.push(NewLetter {
            letter,
            message_id: new_message_id(&domain),
        });
    }
    Ok(NewSignature {
        public_id: uuid::Uuid::new_v4().to_string(),
        campaign: campaign.slug.as_str().to_owned(),
        signer,
        source,
        letters,
    })
}

/// Checks (the address against `addresses`), renders and records one signature.
#[tracing::instrument(skip_all, fields(campaign = %campaign.slug, source = source.as_str()), err(level = "debug"))]
pub async fn sign(
    queue: &Queue,
    campaign: &Campaign,
    input: &NewSigner,
    addresses: AddressPolicy,
    source: Source,
) -> Result<Recorded, IntakeError> {
    let signer = Signer::parse(input, addresses)?;
    let sig = prepare(campaign, signer, source, chrono::Local::now().date_naive())?;
    let mut recorded = queue.record_signatures(&[sig], queue.now()).await?;
    Ok(recorded.pop().expect("one signature in, one result out"))
}
