//! `missive retry`: failed and expired letters (or one letter) back into the queue, due now.

use super::Outcome;
use crate::cli::RetryArgs;
use crate::config::Settings;
use crate::queue::{Queue, RetryOutcome};

pub(super) async fn run(args: RetryArgs, settings: Settings) -> anyhow::Result<Outcome> {
    let queue = Queue::open(&settings.database).await?;
    let outcome = if let Some(id) = args.letter {
        match queue.retry_letter(id, queue.now()).await? {
            RetryOutcome::Requeued => {
                eprintln!("letter {id} queued again");
                Outcome::Ok
            }
            RetryOutcome::NotFound => {
                queue.close().await;
                anyhow::bail!("no letter {id} (hint: `missive status` shows the letters)");
            }
            RetryOutcome::NotRetryable(state) => {
                queue.close().await;
                anyhow::bail!("letter {id} is {state}; only failed, expired or deferred letters can be retried");
            }
        }
    } else {
        let n = queue
            .retry_failed(args.campaign.as_deref(), queue.now())
            .await?;
        println!("{n}");
        eprintln!("{n} failed or expired letter(s) queued again; `missive send` sends them");
        Outcome::Ok
    };
    queue.close().await;
    Ok(outcome)
}
