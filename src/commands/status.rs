//! `missive status`: letters per state, per campaign and target, and how long the oldest
//! waiting letter has waited. `--json` for scripts.

use super::Outcome;
use crate::cli::StatusArgs;
use crate::config::Settings;
use crate::domain::LetterState;
use crate::queue::{now_millis, Queue};
use std::collections::BTreeMap;

pub(super) async fn run(args: StatusArgs, settings: Settings) -> anyhow::Result<Outcome> {
    let queue = Queue::connect(&settings.database.url, settings.database.max_connections).await?;
    let report = queue.status(args.campaign.as_deref()).await?;
    queue.close().await;
    if args.json {
        println!("{}", serde_json::to_string_pretty(&report)?);
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
        let secs = ((now_millis() - since) / 1000).max(0);
        println!("oldest waiting letter queued {} ago", human_duration(secs));
    }
    Ok(Outcome::Ok)
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
