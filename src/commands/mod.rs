//! One file per subcommand, each `run(args, settings) -> Result<Outcome>`. This file holds what
//! they share: the runtime, settings loading, exit codes, error printing with `hint:` lines,
//! the shutdown signal and progress bars that show only on a terminal.

mod check;
mod import;
mod migrate;
mod organise;
mod plan;
mod preview;
mod resolve;
mod retry;
mod send;
mod serve;
mod sign;
mod status;
mod worker;

use crate::cli::{Cli, Command};
use crate::config::Settings;
use indicatif::{ProgressBar, ProgressStyle};
use std::io::IsTerminal;
use std::process::ExitCode;
use tokio_util::sync::CancellationToken;

/// How a command that ran to its end went.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    /// Exit 0.
    Ok,
    /// Exit 1: it ran and found problems (listed on stdout or stderr).
    Problems,
}

/// Runs the command line and returns the process's exit code.
pub fn main(cli: Cli) -> ExitCode {
    let default_level = if matches!(cli.command, Command::Serve(_) | Command::Worker(_)) {
        "info"
    } else {
        "warn"
    };
    crate::telemetry::init(default_level);
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => return fail(&anyhow::anyhow!("cannot start the async runtime: {e}")),
    };
    let result = runtime.block_on(async {
        let settings = Settings::from_process(cli.config.as_deref())?;
        run(cli.command, settings).await
    });
    match result {
        Ok(Outcome::Ok) => ExitCode::SUCCESS,
        Ok(Outcome::Problems) => ExitCode::from(1),
        Err(e) => fail(&e),
    }
}

/// Runs one command with loaded settings.
pub async fn run(command: Command, settings: Settings) -> anyhow::Result<Outcome> {
    match command {
        Command::Check => check::run(&settings).await,
        Command::Preview(args) => preview::run(args, &settings).await,
        Command::Sign(args) => sign::run(args, settings).await,
        Command::Import(args) => import::run(args, settings).await,
        Command::Send(args) => send::run(args, settings).await,
        Command::Status(args) => status::run(args, settings).await,
        Command::Retry(args) => retry::run(args, settings).await,
        Command::Pause(args) => organise::pause(args, settings).await,
        Command::Resume(args) => organise::resume(args, settings).await,
        Command::Cancel(args) => organise::cancel(args, settings).await,
        Command::Plan(args) => plan::run(args, settings).await,
        Command::Resolve(args) => resolve::run(args, settings).await,
        Command::Serve(args) => serve::run(args, settings).await,
        Command::Worker(args) => worker::run(args, settings).await,
        Command::Migrate => migrate::run(&settings).await,
    }
}

/// Prints `error: ...` (the whole chain, lowercase phrases) with any `(hint: ...)` on its own
/// line, and returns exit code 2.
fn fail(e: &anyhow::Error) -> ExitCode {
    let mut text = String::new();
    for (i, cause) in e.chain().enumerate() {
        let s = cause.to_string();
        if i > 0 && text.contains(&s) {
            continue;
        }
        if i > 0 {
            text.push_str(": ");
        }
        text.push_str(&s);
    }
    let (message, hints) = split_hints(&text);
    eprintln!("error: {message}");
    for h in hints {
        eprintln!("hint: {h}");
    }
    ExitCode::from(2)
}

/// Takes `(hint: ...)` parts out of a message.
fn split_hints(text: &str) -> (String, Vec<String>) {
    let mut message = String::new();
    let mut hints = Vec::new();
    let mut rest = text;
    while let Some(start) = rest.find("(hint: ") {
        let after = &rest[start + 7..];
        let Some(end) = after.find(')') else { break };
        message.push_str(rest[..start].trim_end());
        hints.push(after[..end].to_owned());
        rest = &after[end + 1..];
    }
    message.push_str(rest);
    (message.trim().to_owned(), hints)
}

/// A token cancelled on SIGINT or SIGTERM.
pub fn shutdown_signal() -> CancellationToken {
    let token = CancellationToken::new();
    let t = token.clone();
    tokio::spawn(async move {
        let ctrl_c = tokio::signal::ctrl_c();
        #[cfg(unix)]
        let term = async {
            match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
                Ok(mut s) => {
                    s.recv().await;
                }
                Err(_) => std::future::pending::<()>().await,
            }
        };
        #[cfg(not(unix))]
        let term = std::future::pending::<()>();
        tokio::select! {
            _ = ctrl_c => {}
            _ = term => {}
        }
        tracing::info!("stop requested: finishing letters in flight");
        t.cancel();
    });
    token
}

/// A progress bar on stderr when it is a terminal; hidden otherwise (scripts, CI, pipes).
fn progress_bar(len: Option<u64>, what: &str) -> ProgressBar {
    if !std::io::stderr().is_terminal() {
        return ProgressBar::hidden();
    }
    let bar = match len {
        Some(n) => ProgressBar::new(n),
        None => ProgressBar::new_spinner(),
    };
    let template = if len.is_some() {
        format!(
            "{{spinner}} {what} [{{bar:30}}] {{pos}}/{{len}} ({{per_sec}}, {{eta}} left) {{msg}}"
        )
    } else {
        format!("{{spinner}} {what} {{pos}} ({{per_sec}}) {{msg}}")
    };
    if let Ok(style) = ProgressStyle::with_template(&template) {
        bar.set_style(style.progress_chars("=> "));
    }
    bar
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hints_are_split_onto_their_own_lines() {
        let (m, h) = split_hints("no campaign `x` (hint: `missive check` lists them)");
        assert_eq!(m, "no campaign `x`");
        assert_eq!(h, vec!["`missive check` lists them"]);
    }
}
