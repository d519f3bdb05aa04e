//! `missive send`: one batch. Sends due letters until none are due or `--limit` is reached,
//! then prints a summary. SIGINT/SIGTERM stop it cleanly: letters in flight finish, the others
//! go back to the queue. When the relay is unusable (a refused password, every connection
//! refused...) it stops at once with exit 2, the relay's words and a hint; no letter is failed
//! or charged an attempt for it.

use super::{progress_bar, shutdown_signal, Outcome};
use crate::cli::SendArgs;
use crate::config::Settings;
use crate::startup::App;
use crate::worker::RunOptions;
use std::time::Duration;

pub(super) async fn run(args: SendArgs, settings: Settings) -> anyhow::Result<Outcome> {
    let app = App::build(settings).await?;
    if let Some(c) = &args.campaign {
        app.registry.get(c)?;
    }
    let dispatcher = app.dispatcher();
    let waiting = app.queue.status(args.campaign.as_deref()).await?;
    let due: i64 = waiting
        .by_state
        .iter()
        .filter(|(s, _)| {
            matches!(
                s,
                crate::domain::LetterState::Queued | crate::domain::LetterState::Deferred
            )
        })
        .map(|(_, n)| n)
        .sum();
    let total = args.limit.map_or(due as u64, |l| l.min(due as u64));
    let bar = progress_bar(Some(total), "sending");
    let counters = dispatcher.counters();
    let ticker = {
        let bar = bar.clone();
        tokio::spawn(async move {
            loop {
                bar.set_position(counters.finished());
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
        })
    };
    eprintln!("sending through the {}", dispatcher.transport().describe());
    let summary = dispatcher
        .run(
            &RunOptions {
                campaign: args.campaign.clone(),
                limit: args.limit,
                continuous: false,
            },
            shutdown_signal(),
        )
        .await;
    ticker.abort();
    bar.finish_and_clear();
    let summary = summary?;
    let app_waiting: i64 = app
        .queue
        .waiting_per_target(args.campaign.as_deref())
        .await?
        .iter()
        .map(|(_, _, n)| n)
        .sum();
    app.queue.close().await;
    if args.json {
        println!("{}", serde_json::to_string_pretty(&summary)?);
    } else {
        println!(
            "sent {}, deferred {}, failed {}, in doubt {}, expired {} in {:.1} s ({:.0} letters/s)",
            summary.sent,
            summary.deferred,
            summary.failed,
            summary.in_doubt,
            summary.expired,
            summary.seconds,
            summary.attempted() as f64 / summary.seconds.max(1e-9)
        );
    }
    if let Some(fault) = summary.relay_unusable {
        // Nothing was failed or spent for the relay's fault: say so, then stop with exit 2.
        eprintln!(
            "the relay is unusable, so the batch stopped: {app_waiting} letter(s) stay queued, \
             their attempts unchanged"
        );
        return Err(anyhow::Error::new(fault));
    }
    if summary.released > 0 {
        eprintln!(
            "stopped early: {} claimed letter(s) handed back to the queue",
            summary.released
        );
    }
    if let (Some(leader), true) = (&summary.paced_by, app_waiting > 0) {
        eprintln!(
            "note: letters paced per target were left to {leader}, the worker pacing them for \
             every process on this queue\n\
             hint: `missive status` shows their progress"
        );
    }
    if let Some(at) = summary.next_paced_at {
        let waiting: i64 = app_waiting;
        if waiting > 0 {
            let when = chrono::DateTime::from_timestamp_millis(at)
                .map(|t| t.to_rfc3339())
                .unwrap_or_default();
            eprintln!(
                "note: {waiting} letter(s) wait for their targets' pacing; the next may go at {when}\n\
                 hint: `missive plan` shows the schedule; `missive serve` sends letters as they come due"
            );
        }
    }
    let r = summary.recovered;
    if r.requeued + r.in_doubt > 0 {
        eprintln!(
            "note: a worker that stopped had left letters: {} queued again, {} marked in_doubt \
             (hint: `missive resolve` settles letters in doubt)",
            r.requeued, r.in_doubt
        );
    }
    let problems = summary.failed + summary.in_doubt + summary.expired;
    if problems > 0 {
        eprintln!("hint: `missive status` shows the server replies; `missive retry --failed` queues failed letters again");
        return Ok(Outcome::Problems);
    }
    Ok(Outcome::Ok)
}
