//! Logging: `tracing` to stderr, filtered by `MISSIVE_LOG` (or `RUST_LOG`), quiet by default for
//! one-shot commands. Letter bodies, signer addresses and secrets are never logged.

use std::io::IsTerminal;
use tracing_subscriber::EnvFilter;

/// Installs the global subscriber once; later calls do nothing (tests call it freely).
pub fn init(default_level: &str) {
    let filter = std::env::var("MISSIVE_LOG")
        .or_else(|_| std::env::var("RUST_LOG"))
        .map(EnvFilter::new)
        .unwrap_or_else(|_| EnvFilter::new(format!("missive={default_level},warn")));
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(std::io::stderr().is_terminal() && std::env::var_os("NO_COLOR").is_none())
        .with_target(false)
        .try_init();
}
