//! `missive preview`: the exact message (headers, MIME parts) a letter would be, rendered for a
//! sample signer, without queueing or sending anything.

use super::Outcome;
use crate::cli::PreviewArgs;
use crate::config::Settings;
use crate::domain::{AddressPolicy, NewSigner, Signer};
use crate::letters::{Registry, RenderInput};
use crate::mailer::build_message;
use anyhow::Context as _;

pub(super) async fn run(args: PreviewArgs, settings: &Settings) -> anyhow::Result<Outcome> {
    let registry = Registry::load(&settings.letters.dir, settings.smtp.address_policy())?;
    let campaign = registry.get(&args.campaign)?;
    let lang = match &args.lang {
        Some(l) => {
            let tag =
                crate::domain::LanguageTag::parse(l).map_err(|e| anyhow::anyhow!("--lang {e}"))?;
            if !campaign.languages.contains(&tag) {
                let offered: Vec<&str> = campaign.languages.iter().map(|l| l.as_str()).collect();
                anyhow::bail!(
                    "campaign `{}` has no `{tag}` letters (hint: it offers {})",
                    campaign.slug,
                    offered.join(", ")
                );
            }
            tag
        }
        None => campaign.default_language.clone(),
    };
    let signer = Signer::parse(
        &NewSigner {
            first_name: "Ana".into(),
            last_name: "Example".into(),
            email: "ana.example@example.net".into(),
            city: Some("Toronto".into()),
            postal_code: None,
            country: Some("Canada".into()),
            language: Some(lang.as_str().into()),
            message: Some("This is where a signer's own words appear.".into()),
        },
        AddressPolicy::AsciiOnly,
    )
    .context("sample signer")?;
    let targets: Vec<_> = match &args.target {
        Some(id) => vec![campaign.require_target(id)?],
        None => campaign.targets.iter().collect(),
    };
    let today = chrono::Local::now().date_naive();
    let domain = campaign.organisation.sender.domain().to_owned();
    for (i, target) in targets.iter().enumerate() {
        let letter = campaign.render(&RenderInput {
            signer: &signer,
            target,
            today,
        })?;
        let message = build_message(&letter, &crate::intake::new_message_id(&domain))?;
        if i > 0 {
            println!("\n{}\n", "=".repeat(72));
        }
        print!("{}", String::from_utf8_lossy(&message));
    }
    Ok(Outcome::Ok)
}
