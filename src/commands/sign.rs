//! `missive sign`: one signature from the command line, its letters queued at once. The address
//! is checked as at every other door (`smtp.smtputf8`).

use super::Outcome;
use crate::cli::SignArgs;
use crate::config::Settings;
use crate::domain::{InvalidKind, NewSigner};
use crate::intake::{sign, IntakeError};
use crate::queue::{Recorded, Source};
use crate::startup::App;

pub(super) async fn run(args: SignArgs, settings: Settings) -> anyhow::Result<Outcome> {
    let app = App::build(settings).await?;
    let campaign = app.registry.get(&args.campaign)?;
    let input = NewSigner {
        first_name: args.first_name,
        last_name: args.last_name,
        email: args.email,
        city: args.city,
        postal_code: args.postal_code,
        country: args.country,
        language: args.lang,
        message: args.message,
    };
    let addresses = app.settings.smtp.address_policy();
    let result = sign(&app.queue, &campaign, &input, addresses, Source::Cli).await;
    app.queue.close().await;
    match result {
        Ok(Recorded::Created { public_id, letters }) => {
            println!("{public_id}");
            eprintln!("signed {}: {letters} letter(s) queued", campaign.slug);
            Ok(Outcome::Ok)
        }
        Ok(Recorded::Duplicate { public_id }) => {
            println!("{public_id}");
            eprintln!("already signed {}: nothing new queued", campaign.slug);
            Ok(Outcome::Ok)
        }
        Err(IntakeError::Invalid(e)) => {
            let lines: Vec<String> = e
                .fields
                .iter()
                .map(|(field, why)| {
                    let flag = match field.name() {
                        "language" => "lang".to_owned(),
                        other => other.replace('_', "-"),
                    };
                    format!("  --{flag} {why}")
                })
                .collect();
            let needs_smtputf8 = e
                .fields
                .iter()
                .any(|(_, why)| why.kind() == InvalidKind::NeedsSmtputf8);
            let hint = if needs_smtputf8 {
                "\n(hint: set smtp.smtputf8 = true only if your relay accepts SMTPUTF8)"
            } else {
                ""
            };
            anyhow::bail!(
                "invalid signature, nothing was recorded:\n{}{hint}",
                lines.join("\n")
            )
        }
        Err(e) => Err(e.into()),
    }
}
