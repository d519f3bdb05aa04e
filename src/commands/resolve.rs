//! `missive resolve`: an organiser's decision on letters in doubt, either sent again (at least
//! once) or recorded as sent (at most once).

use super::Outcome;
use crate::cli::ResolveArgs;
use crate::config::Settings;
use crate::queue::{Queue, Scope};

pub(super) async fn run(args: ResolveArgs, settings: Settings) -> anyhow::Result<Outcome> {
    let queue = Queue::open(&settings.database).await?;
    let scope = Scope {
        campaign: args.campaign.as_deref(),
        letter: args.letter,
    };
    let n = queue
        .resolve_in_doubt(&scope, args.resend, queue.now())
        .await?;
    queue.close().await;
    println!("{n}");
    if n == 0 {
        eprintln!("no letter in doubt matched (hint: `missive status` shows in_doubt counts)");
        return Ok(Outcome::Problems);
    }
    if args.resend {
        eprintln!("{n} letter(s) in doubt queued again; `missive send` sends them");
    } else {
        eprintln!("{n} letter(s) in doubt recorded as sent");
    }
    Ok(Outcome::Ok)
}
