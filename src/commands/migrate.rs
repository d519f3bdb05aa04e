//! `missive migrate`: applies the database's pending migrations and lists them. With
//! PostgreSQL, processes do not migrate on start (unless `database.migrate_on_start`): a deploy
//! runs this once, then starts the new version's processes.

use super::Outcome;
use crate::config::Settings;
use crate::queue::Queue;

pub(super) async fn run(settings: &Settings) -> anyhow::Result<Outcome> {
    let shown = settings.database.redacted_url();
    let applied = Queue::migrate(&settings.database.url).await?;
    if applied.is_empty() {
        eprintln!("{shown}: the schema is up to date; nothing to apply");
    } else {
        eprintln!("{shown}: applied {} migration(s):", applied.len());
        for m in &applied {
            println!("{m}");
        }
    }
    Ok(Outcome::Ok)
}
