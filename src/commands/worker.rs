//! `missive worker`: the worker alone, sending letters as they come due until SIGINT or
//! SIGTERM, then finishing the letters in flight and handing the rest back (exit 0). Web
//! processes (`missive serve --no-worker`) take the signatures; with PostgreSQL they may run on
//! other machines.

use super::{shutdown_signal, Outcome};
use crate::cli::WorkerArgs;
use crate::config::Settings;
use crate::startup::App;
use crate::worker::RunOptions;

pub(super) async fn run(args: WorkerArgs, settings: Settings) -> anyhow::Result<Outcome> {
    let app = App::build(settings).await?;
    if let Some(c) = &args.campaign {
        app.registry.get(c)?;
    }
    let dispatcher = app.dispatcher();
    tracing::info!(
        transport = %dispatcher.transport().describe(),
        store = app.queue.store_name(),
        "worker started"
    );
    let summary = dispatcher
        .run(
            &RunOptions {
                campaign: args.campaign,
                limit: None,
                continuous: true,
            },
            shutdown_signal(),
        )
        .await;
    app.queue.close().await;
    let summary = summary?;
    tracing::info!(
        sent = summary.sent,
        deferred = summary.deferred,
        failed = summary.failed,
        in_doubt = summary.in_doubt,
        released = summary.released,
        "worker stopped"
    );
    Ok(Outcome::Ok)
}
