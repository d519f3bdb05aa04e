//! The composition root: from `Settings` to the running parts (queue, campaign registry,
//! transport, dispatcher). Commands and tests build the application here, so both get the same
//! wiring.

use crate::config::Settings;
use crate::letters::Registry;
use crate::mailer::Transport;
use crate::queue::Queue;
use crate::worker::Dispatcher;
use anyhow::Context as _;

/// Campaigns and transport: what `check` and `preview` need, without touching the database.
#[derive(Debug, Clone)]
pub struct Campaigns {
    pub registry: Registry,
    pub transport: Transport,
}

impl Campaigns {
    /// Loads every campaign under `letters.dir` and parses the transport settings.
    pub fn load(settings: &Settings) -> anyhow::Result<Campaigns> {
        let registry = Registry::load(&settings.letters.dir, settings.smtp.address_policy())?;
        let transport = Transport::from_settings(settings).context("smtp settings")?;
        Ok(Campaigns {
            registry,
            transport,
        })
    }
}

/// Everything a running Missive holds.
#[derive(Debug, Clone)]
pub struct App {
    pub settings: Settings,
    pub registry: Registry,
    pub queue: Queue,
    pub transport: Transport,
}

impl App {
    /// Loads campaigns, opens (and migrates) the database, builds the transport.
    pub async fn build(settings: Settings) -> anyhow::Result<App> {
        let Campaigns {
            registry,
            transport,
        } = Campaigns::load(&settings)?;
        let queue = Queue::open(&settings.database).await?;
        Ok(App {
            settings,
            registry,
            queue,
            transport,
        })
    }

    /// A dispatcher over this app's queue, transport and campaigns.
    pub fn dispatcher(&self) -> Dispatcher {
        Dispatcher::new(
            self.queue.clone(),
            self.transport.clone(),
            &self.settings,
            &self.registry,
        )
        .expect("settings were checked when they were loaded")
    }
}

/// What `Application` runs beside the web intake.
#[derive(Debug, Clone)]
pub struct ServeOptions {
    /// Run the worker in the same process (the default); false for `--no-worker`.
    pub worker: bool,
    /// The worker sends only this campaign's letters.
    pub campaign: Option<String>,
}

impl Default for ServeOptions {
    fn default() -> Self {
        ServeOptions {
            worker: true,
            campaign: None,
        }
    }
}

/// `missive serve`: the web intake on its socket and, unless told otherwise, the worker,
/// stopped together by one cancellation token.
#[derive(Debug)]
pub struct Application {
    app: App,
    state: crate::intake::web::AppState,
    listener: tokio::net::TcpListener,
    port: u16,
    options: ServeOptions,
}

impl Application {
    /// Builds everything and binds `http.bind` (port 0 picks a free port, as tests do).
    pub async fn build(settings: Settings) -> anyhow::Result<Application> {
        Application::build_with(settings, ServeOptions::default()).await
    }

    /// As `build`, with options.
    pub async fn build_with(
        settings: Settings,
        options: ServeOptions,
    ) -> anyhow::Result<Application> {
        let bind = settings.http.bind.clone();
        let app = App::build(settings).await?;
        if let Some(c) = &options.campaign {
            app.registry.get(c)?;
        }
        let state = crate::intake::web::AppState::new(
            &app.settings,
            app.registry.clone(),
            app.queue.clone(),
        )?;
        let listener = tokio::net::TcpListener::bind(&bind)
            .await
            .with_context(|| {
                format!("cannot listen on {bind} (hint: check http.bind / MISSIVE_HTTP__BIND)")
            })?;
        let port = listener.local_addr()?.port();
        Ok(Application {
            app,
            state,
            listener,
            port,
            options,
        })
    }

    /// The port the web intake listens on.
    pub fn port(&self) -> u16 {
        self.port
    }

    /// The running parts (queue, campaigns, transport), e.g. for tests to look into the queue.
    pub fn app(&self) -> &App {
        &self.app
    }

    /// Serves until `stop` is cancelled (or the server or worker fails, which cancels it for
    /// the other): requests in progress finish, the worker finishes the letters in flight and
    /// hands back the rest.
    pub async fn run_until_stopped(
        self,
        stop: tokio_util::sync::CancellationToken,
    ) -> anyhow::Result<()> {
        let Application {
            app,
            state,
            listener,
            options,
            ..
        } = self;
        let router = crate::intake::web::router(state.clone());
        let server = {
            let stop = stop.clone();
            async move {
                let served = axum::serve(
                    listener,
                    router.into_make_service_with_connect_info::<std::net::SocketAddr>(),
                )
                .with_graceful_shutdown(stop.clone().cancelled_owned())
                .await;
                stop.cancel();
                served.context("the web server stopped")
            }
        };
        let worker = {
            let stop = stop.clone();
            let dispatcher = options.worker.then(|| app.dispatcher());
            let run = crate::worker::RunOptions {
                campaign: options.campaign.clone(),
                limit: None,
                continuous: true,
            };
            async move {
                let Some(d) = dispatcher else {
                    return Ok(None);
                };
                tracing::info!(transport = %d.transport().describe(), "worker started");
                let summary = d.run(&run, stop.clone()).await;
                if summary.is_err() {
                    stop.cancel();
                }
                summary.map(Some)
            }
        };
        let housekeeping = crate::intake::web::housekeeping(state, stop.clone());
        let (served, worked, ()) = tokio::join!(server, worker, housekeeping);
        app.queue.close().await;
        if let Some(summary) = worked? {
            tracing::info!(
                sent = summary.sent,
                deferred = summary.deferred,
                failed = summary.failed,
                in_doubt = summary.in_doubt,
                released = summary.released,
                "worker stopped"
            );
        }
        served
    }
}
