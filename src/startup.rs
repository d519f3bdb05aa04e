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
        let registry = Registry::load(&settings.letters.dir)?;
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
        let queue =
            Queue::connect(&settings.database.url, settings.database.max_connections).await?;
        Ok(App {
            settings,
            registry,
            queue,
            transport,
        })
    }

    /// A dispatcher over this app's queue and transport, with each campaign's own rate cap.
    pub fn dispatcher(&self) -> Dispatcher {
        let rates: Vec<(String, f64)> = self
            .registry
            .iter()
            .filter_map(|c| c.rate_per_second.map(|r| (c.slug.as_str().to_owned(), r)))
            .collect();
        Dispatcher::new(
            self.queue.clone(),
            self.transport.clone(),
            &self.settings,
            &rates,
        )
    }
}
