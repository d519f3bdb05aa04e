//! `missive serve`: the long-running worker. Sends letters as they come due until SIGINT or
//! SIGTERM, then finishes the letters in flight, hands the rest back and exits 0.

use super::{shutdown_signal, Outcome};
use crate::cli::ServeArgs;
use crate::config::Settings;
use crate::startup::App;
use crate::worker::RunOptions;

pub(super) async fn run(args: ServeArgs, settings: Settings) -> anyhow::Result<Outcome> {
    let app = App::build(settings).await?;
    if let Some(c) = &args.campaign {
        app.registry.get(c)?;
    }
    let dispatcher = app.dispatcher();
    tracing::info!(transport = %dispatcher.transport().describe(), "worker started");
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
