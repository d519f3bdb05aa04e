//! One signature through the web or the API: where no confirmation is asked, its letters are
//! rendered and recorded at once; where the campaign asks for double opt-in, the signature is
//! held and a confirmation email with a signed, expiring link is queued ahead of letters.
//! Following the link renders and records the letters. The form and the API share all of this.

use super::tokens::{sha256_hex, TokenError};
use super::AppState;
use crate::domain::{AddressPolicy, NewSigner, Signer};
use crate::intake::{new_message_id, prepare};
use crate::letters::Campaign;
use crate::queue::{
    AwaitingRecorded, Confirmed, IntakeDetails, NewAwaitingSignature, NewConfirmation,
    NewSignature, Recorded, Source,
};
use anyhow::Context as _;

/// What happened to a signature.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Accepted {
    /// Recorded with its letters queued.
    Created { public_id: String, letters: usize },
    /// The signer had signed before: nothing new.
    Duplicate { public_id: String },
    /// Held until confirmed; a confirmation email is queued (`resent`: not the first one).
    Awaiting { public_id: String, resent: bool },
}

impl Accepted {
    /// The signature's public id.
    pub(crate) fn public_id(&self) -> &str {
        match self {
            Accepted::Created { public_id, .. }
            | Accepted::Duplicate { public_id }
            | Accepted::Awaiting { public_id, .. } => public_id,
        }
    }
}

fn today() -> chrono::NaiveDate {
    chrono::Local::now().date_naive()
}

/// Records `signer`'s signature on `campaign`, with or without double opt-in as the campaign
/// says.
#[tracing::instrument(skip_all, fields(campaign = %campaign.slug, source = source.as_str()), err(level = "debug"))]
pub(crate) async fn accept(
    state: &AppState,
    campaign: &Campaign,
    signer: Signer,
    details: IntakeDetails,
    source: Source,
) -> anyhow::Result<Accepted> {
    let queue = state.queue();
    let now = queue.now();
    if !campaign.confirm {
        let sig = prepare(campaign, signer, source, today()).context("rendering letters")?;
        return Ok(match state.0.commit.record(sig, details, now).await? {
            Recorded::Created { public_id, letters } => Accepted::Created { public_id, letters },
            Recorded::Duplicate { public_id } => Accepted::Duplicate { public_id },
        });
    }
    let expires_at = now + state.0.confirm_expiry_ms;
    let token = state.0.keys.confirmation_token(expires_at / 1000);
    let url = format!("{}/confirm/{token}", state.0.base_url);
    let draft = campaign
        .render_confirmation(&signer, &url, today())
        .context("rendering the confirmation email")?;
    let org = &campaign.organisation;
    let email = crate::domain::Letter {
        target_id: String::new(),
        recipient: signer.email.clone(),
        recipient_name: signer.full_name(),
        from_name: org.name.clone(),
        from_address: org.sender.clone(),
        reply_to: org.sender.clone(),
        template_hash: campaign.template_hash(&draft.language).to_owned(),
        language: draft.language,
        subject: draft.subject,
        body_text: draft.body_text,
        body_html: None,
    };
    let pending = NewAwaitingSignature {
        signature: NewSignature {
            public_id: uuid::Uuid::new_v4().to_string(),
            campaign: campaign.slug.as_str().to_owned(),
            signer,
            source,
            letters: Vec::new(),
        },
        details,
        token_hash: sha256_hex(&token),
        expires_at,
        confirmation: NewConfirmation {
            email,
            message_id: new_message_id(org.sender.domain()),
        },
    };
    Ok(match queue.record_awaiting(&pending, now).await? {
        AwaitingRecorded::Awaiting { public_id } => Accepted::Awaiting {
            public_id,
            resent: false,
        },
        AwaitingRecorded::Resent { public_id } => Accepted::Awaiting {
            public_id,
            resent: true,
        },
        AwaitingRecorded::ResendLimit { public_id } => {
            tracing::info!("confirmation not resent: this signature had enough emails already");
            Accepted::Awaiting {
                public_id,
                resent: true,
            }
        }
        AwaitingRecorded::Duplicate { public_id } => Accepted::Duplicate { public_id },
    })
}

/// A confirmation link as found: what page to show for it.
#[derive(Debug)]
pub(crate) enum LinkState {
    /// Waiting to be confirmed, for this campaign and signer.
    Awaiting { campaign: String, signer: NewSigner },
    /// Confirmed before.
    Confirmed { campaign: String, signer: NewSigner },
    /// Expired (or replaced by a newer link, or never ours).
    Invalid,
}

/// Looks a confirmation token up without changing anything.
pub(crate) async fn look_up(state: &AppState, token: &str) -> anyhow::Result<LinkState> {
    let now = state.queue().now();
    match state.0.keys.check_confirmation_token(token, now / 1000) {
        Ok(()) => {}
        Err(TokenError::Invalid | TokenError::Expired) => return Ok(LinkState::Invalid),
    }
    Ok(
        match state
            .queue()
            .awaiting_by_token(&sha256_hex(token), now)
            .await?
        {
            None => LinkState::Invalid,
            Some(a) if a.confirmed => LinkState::Confirmed {
                campaign: a.campaign,
                signer: a.signer,
            },
            Some(a) => LinkState::Awaiting {
                campaign: a.campaign,
                signer: a.signer,
            },
        },
    )
}

/// Confirms the signature behind `token`: renders its letters and records them.
#[tracing::instrument(skip_all, err(level = "debug"))]
pub(crate) async fn confirm(
    state: &AppState,
    token: &str,
) -> anyhow::Result<(LinkState, Confirmed)> {
    let found = look_up(state, token).await?;
    let LinkState::Awaiting { campaign, signer } = &found else {
        return Ok((found, Confirmed::NotFound));
    };
    let campaign = state.registry().get(campaign)?;
    // The address was taken when the form was signed (and its confirmation email reached it);
    // if `smtp.smtputf8` was turned off since, the mailer, not this link, refuses what the relay
    // cannot carry.
    let parsed = Signer::parse(signer, AddressPolicy::Smtputf8)
        .context("a recorded signer no longer parses")?;
    let sig = prepare(&campaign, parsed, Source::Web, today()).context("rendering letters")?;
    let confirmed = state
        .queue()
        .confirm_signature(&sha256_hex(token), &sig.letters, state.queue().now())
        .await?;
    Ok((found, confirmed))
}
