//! `missive serve`: the web intake (action pages, form, API) and, unless `--no-worker`, the
//! worker sending letters as they come due. Runs until SIGINT or SIGTERM, then finishes the
//! requests and letters in flight, hands the rest back and exits 0.

use super::{shutdown_signal, Outcome};
use crate::cli::ServeArgs;
use crate::config::Settings;
use crate::startup::{Application, ServeOptions};

pub(super) async fn run(args: ServeArgs, settings: Settings) -> anyhow::Result<Outcome> {
    let base_url = settings.http.base_url.clone();
    let application = Application::build_with(
        settings,
        ServeOptions {
            worker: !args.no_worker,
            campaign: args.campaign,
        },
    )
    .await?;
    tracing::info!(
        port = application.port(),
        base_url = %base_url,
        worker = !args.no_worker,
        "web intake listening"
    );
    application.run_until_stopped(shutdown_signal()).await?;
    Ok(Outcome::Ok)
}
