//! `missive status`: letters per state, per campaign and target, how long the oldest waiting
//! letter has waited, the relay's health (unusable since when, why, the fix, the next try), and
//! a warning when deferred letters near `sending.max_age_hours`. `--json` for scripts.

use super::Outcome;
use crate::cli::StatusArgs;
use crate::config::Settings;
use crate::domain::LetterState;
use crate::queue::{Ageing, Millis, Queue, RelayHealthRecord, StatusReport};
use std::collections::BTreeMap;

/// Deferred letters this close to their maximum age are warned about.
const AGEING_WARNING_MS: Millis = 24 * 3_600_000;

/// Everything `status --json` prints: the report's keys, then the relay and the ageing letters.
#[derive(serde::Serialize)]
struct StatusOutput {
    #[serde(flatten)]
    report: StatusReport,
    relays: Vec<RelayHealthRecord>,
    /// Deferred letters within a day of `sending.max_age_hours` (or past it).
    near_expiry: Ageing,
}

pub(super) async fn run(args: StatusArgs, settings: Settings) -> anyhow::Result<Outcome> {
    let queue = Queue::open(&settings.database).await?;
    let campaign = args.campaign.as_deref();
    let report = queue.status(campaign).await?;
    let relays = queue.relay_health().await?;
    let max_age_ms = settings.sending.max_age_hours as Millis * 3_600_000;
    let now = queue.now();
    let near_expiry = queue
        .ageing(campaign, now - max_age_ms + AGEING_WARNING_MS)
        .await?;
    queue.close().await;
    if args.json {
        let output = StatusOutput {
            report,
            relays,
            near_expiry,
        };
        println!("{}", serde_json::to_string_pretty(&output)?);
        return Ok(Outcome::Ok);
    }
    let states: Vec<LetterState> = LetterState::ALL
        .into_iter()
        .filter(|s| report.by_state.contains_key(s))
        .collect();
    println!("signatures: {}", report.signatures);
    let total: i64 = report.by_state.values().sum();
    println!("letters: {total}");
    if !states.is_empty() {
        print_table(&report, &states);
    }
    if !report.confirmations.is_empty() {
        let parts: Vec<String> = LetterState::ALL
            .into_iter()
            .filter_map(|s| {
                report
                    .confirmations
                    .get(&s)
                    .map(|n| format!("{n} {}", s.as_str()))
            })
            .collect();
        println!("confirmation emails: {}", parts.join(", "));
    }
    if let Some(since) = report.oldest_waiting_since {
        let secs = ((now - since) / 1000).max(0);
        println!("oldest waiting letter queued {} ago", human_duration(secs));
    }
    for relay in &relays {
        print_relay(relay, now);
    }
    if near_expiry.letters > 0 {
        let oldest = near_expiry
            .oldest_queued_at
            .map(|t| human_duration(((now - t) / 1000).max(0)))
            .unwrap_or_default();
        eprintln!(
            "warning: {} deferred letter(s) are within a day of sending.max_age_hours ({} h): \
             they expire at their next transient failure after that (the oldest was queued {oldest} \
             ago; time the relay was unusable counts too)",
            near_expiry.letters, settings.sending.max_age_hours
        );
    }
    Ok(Outcome::Ok)
}

/// `relay host:port: usable` or `unusable since ...: why`, with the hint and the next try.
fn print_relay(relay: &RelayHealthRecord, now: Millis) {
    let since = chrono::DateTime::from_timestamp_millis(relay.since)
        .map(|t| t.format("%Y-%m-%d %H:%M:%S UTC").to_string())
        .unwrap_or_default();
    let ago = human_duration(((now - relay.since) / 1000).max(0));
    if relay.usable {
        println!("relay {}: usable since {since} ({ago} ago)", relay.relay);
        return;
    }
    println!(
        "relay {}: unusable since {since} ({ago} ago): {}",
        relay.relay,
        relay.reply.as_deref().unwrap_or("no reason recorded")
    );
    if let Some(hint) = &relay.hint {
        println!("  hint: {hint}");
    }
    match relay.retry_at {
        Some(at) => println!(
            "  next try in {} (by the worker {}); letters stay queued, their attempts unchanged",
            human_duration(((at - now) / 1000).max(0)),
            relay.worker
        ),
        None => println!(
            "  the next `missive send`, or `missive serve`, tries again; letters stay queued, \
             their attempts unchanged"
        ),
    }
}

/// Letters per target (rows) and state (columns), then the totals.
fn print_table(report: &crate::queue::StatusReport, states: &[LetterState]) {
    let mut rows: BTreeMap<(String, String), BTreeMap<LetterState, i64>> = BTreeMap::new();
    for r in &report.by_target {
        *rows
            .entry((r.campaign.clone(), r.target_id.clone()))
            .or_default()
            .entry(r.state)
            .or_default() += r.letters;
    }
    let width = rows
        .keys()
        .map(|(c, t)| c.len() + t.len() + 1)
        .max()
        .unwrap_or(6)
        .max(6);
    let mut header = format!("{:<width$}", "target");
    for s in states {
        header.push_str(&format!(" {:>9}", s.as_str()));
    }
    println!("{header}");
    for ((c, t), counts) in &rows {
        let mut line = format!("{:<width$}", format!("{c}/{t}"));
        for s in states {
            line.push_str(&format!(" {:>9}", counts.get(s).copied().unwrap_or(0)));
        }
        println!("{line}");
    }
    let mut line = format!("{:<width$}", "total");
    for s in states {
        line.push_str(&format!(
            " {:>9}",
            report.by_state.get(s).copied().unwrap_or(0)
        ));
    }
    println!("{line}");
}

fn human_duration(secs: i64) -> String {
    match secs {
        s if s < 120 => format!("{s} s"),
        s if s < 7200 => format!("{} min", s / 60),
        s if s < 172_800 => format!("{} h", s / 3600),
        s => format!("{} days", s / 86_400),
    }
}
