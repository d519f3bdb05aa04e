//! The command line, declared with clap's derive: the doc comments here are the help text.

use clap::{Args, Parser, Subcommand};
use std::path::PathBuf;

/// Missive turns signatures on urgent actions into personalised letters to the authorities a
/// campaign targets, and sends them at a pace their mail servers accept.
#[derive(Debug, Parser)]
#[command(name = "missive", version, propagate_version = true)]
pub struct Cli {
    /// A TOML file overriding config/default.toml (only the keys you change).
    #[arg(long, global = true, env = "MISSIVE_CONFIG", value_name = "FILE")]
    pub config: Option<PathBuf>,

    #[command(subcommand)]
    pub command: Command,
}

/// Subcommands.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Check the configuration, every campaign and every template (renders each letter for each
    /// target and language against a sample signer).
    Check,
    /// Print the exact email a signer's letter would be, headers and all.
    Preview(PreviewArgs),
    /// Add one signature and queue its letters.
    Sign(SignArgs),
    /// Import signers from a CSV file and queue their letters.
    Import(ImportArgs),
    /// Send one batch: due letters until none are due or --limit is reached.
    Send(SendArgs),
    /// Show letters per state and per target.
    Status(StatusArgs),
    /// Queue failed letters (or one letter) again.
    Retry(RetryArgs),
    /// Stop sending a campaign's (or one target's) letters until `resume`.
    Pause(TargetScopeArgs),
    /// Send a paused campaign's (or target's) letters again.
    Resume(TargetScopeArgs),
    /// Cancel a campaign's (or one target's) waiting letters: they will never be sent.
    Cancel(TargetScopeArgs),
    /// Show, for each target, the letters waiting and when they will go under the current
    /// pacing limits and sending windows.
    Plan(PlanArgs),
    /// Settle letters in doubt (the connection dropped after their data was sent): send them
    /// again, or record them as sent.
    Resolve(ResolveArgs),
    /// Run the web intake (action pages, form, API) and the worker until stopped (SIGINT or
    /// SIGTERM), sending letters as they come due.
    Serve(ServeArgs),
    /// Run the worker alone until stopped (SIGINT or SIGTERM), sending letters as they come
    /// due: `serve --no-worker` processes take the signatures.
    Worker(WorkerArgs),
    /// Apply the database's pending migrations (for a deploy on PostgreSQL, before starting
    /// the new version's processes) and say which.
    Migrate,
}

/// `missive preview`
#[derive(Debug, Args)]
pub struct PreviewArgs {
    /// The campaign's slug (its folder under letters/).
    pub campaign: String,
    /// Only this target (default: every target).
    #[arg(long)]
    pub target: Option<String>,
    /// The signer's language (default: the campaign's default language).
    #[arg(long, value_name = "xx")]
    pub lang: Option<String>,
}

/// `missive sign`
#[derive(Debug, Args)]
pub struct SignArgs {
    /// The campaign's slug.
    pub campaign: String,
    #[arg(long)]
    pub first_name: String,
    #[arg(long)]
    pub last_name: String,
    #[arg(long)]
    pub email: String,
    #[arg(long)]
    pub city: Option<String>,
    #[arg(long)]
    pub postal_code: Option<String>,
    #[arg(long)]
    pub country: Option<String>,
    /// The signer's language (xx).
    #[arg(long, value_name = "xx")]
    pub lang: Option<String>,
    /// A personal message added to each letter (at most 2,000 characters).
    #[arg(long)]
    pub message: Option<String>,
}

/// `missive import`
#[derive(Debug, Args)]
pub struct ImportArgs {
    /// The campaign's slug.
    pub campaign: String,
    /// A UTF-8 CSV file with a header row: first_name,last_name,email,city,postal_code,country,
    /// language,message (or a single `name` column instead of the first two).
    pub file: PathBuf,
    /// Import the valid rows even if some are invalid (those are still listed).
    #[arg(long)]
    pub skip_invalid: bool,
    /// Print the report as JSON on stdout.
    #[arg(long)]
    pub json: bool,
}

/// `missive send`
#[derive(Debug, Args)]
pub struct SendArgs {
    /// Only this campaign's letters.
    #[arg(long)]
    pub campaign: Option<String>,
    /// Send at most this many letters.
    #[arg(long)]
    pub limit: Option<u64>,
    /// Print the summary as JSON on stdout.
    #[arg(long)]
    pub json: bool,
}

/// `missive status`
#[derive(Debug, Args)]
pub struct StatusArgs {
    /// Only this campaign.
    #[arg(long)]
    pub campaign: Option<String>,
    /// Print as JSON.
    #[arg(long)]
    pub json: bool,
}

/// `missive retry`
#[derive(Debug, Args)]
#[command(group(clap::ArgGroup::new("which").required(true).args(["failed", "letter"])))]
pub struct RetryArgs {
    /// Only this campaign (with --failed).
    #[arg(long)]
    pub campaign: Option<String>,
    /// Every failed or expired letter.
    #[arg(long)]
    pub failed: bool,
    /// One letter, by id (as `status` and reports show it).
    #[arg(long, value_name = "ID")]
    pub letter: Option<i64>,
}

/// `missive resolve`
#[derive(Debug, Args)]
#[command(group(clap::ArgGroup::new("how").required(true).args(["resend", "mark_sent"])))]
pub struct ResolveArgs {
    /// Queue them again (the official may receive a letter twice, with the same Message-ID).
    #[arg(long)]
    pub resend: bool,
    /// Record them as sent (if the relay's logs show they were delivered).
    #[arg(long)]
    pub mark_sent: bool,
    /// Only this letter.
    #[arg(long, value_name = "ID", conflicts_with = "campaign")]
    pub letter: Option<i64>,
    /// Only this campaign's letters.
    #[arg(long)]
    pub campaign: Option<String>,
}

/// `missive pause`, `resume` and `cancel`
#[derive(Debug, Args)]
pub struct TargetScopeArgs {
    /// The campaign's slug.
    #[arg(long)]
    pub campaign: String,
    /// Only this target (its id in campaign.toml).
    #[arg(long)]
    pub target: Option<String>,
}

/// `missive plan`
#[derive(Debug, Args)]
pub struct PlanArgs {
    /// Only this campaign.
    #[arg(long)]
    pub campaign: Option<String>,
    /// Print as JSON.
    #[arg(long)]
    pub json: bool,
}

/// `missive serve`
#[derive(Debug, Args)]
pub struct ServeArgs {
    /// Only this campaign's letters.
    #[arg(long)]
    pub campaign: Option<String>,
    /// Serve only the web intake; letters wait for a worker run elsewhere (`missive worker`,
    /// `missive serve` or `missive send`).
    #[arg(long)]
    pub no_worker: bool,
}

/// `missive worker`
#[derive(Debug, Args)]
pub struct WorkerArgs {
    /// Only this campaign's letters.
    #[arg(long)]
    pub campaign: Option<String>,
}
