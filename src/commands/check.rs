//! `missive check`: configuration, campaigns and templates, every letter rendered for every
//! target and language against sample signers. Problems go to stdout, one per line with file
//! and line; exit 1 if there are any.

use super::Outcome;
use crate::config::Settings;
use crate::letters::{LettersError, Registry};
use crate::mailer::Transport;

pub(super) async fn run(settings: &Settings) -> anyhow::Result<Outcome> {
    let transport = Transport::from_settings(settings)?;
    let registry = match Registry::load(&settings.letters.dir, settings.smtp.address_policy()) {
        Ok(r) => r,
        Err(LettersError::Problems(problems)) => {
            for p in &problems {
                println!("{p}");
            }
            eprintln!(
                "{} problem(s) found in {}",
                problems.len(),
                settings.letters.dir.display()
            );
            return Ok(Outcome::Problems);
        }
        Err(e) => return Err(e.into()),
    };
    if registry.is_empty() {
        println!(
            "{}: no campaign found (each campaign is a folder holding campaign.toml)",
            settings.letters.dir.display()
        );
        return Ok(Outcome::Problems);
    }
    for c in registry.iter() {
        let langs: Vec<&str> = c.languages.iter().map(|l| l.as_str()).collect();
        println!(
            "ok {}: {} target(s), languages {}, templates render for every target and language",
            c.slug,
            c.targets.len(),
            langs.join(", ")
        );
    }
    eprintln!("letters go to: {}", transport.describe());
    eprintln!("database: {}", settings.database.redacted_url());
    Ok(Outcome::Ok)
}
