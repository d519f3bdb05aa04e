//! `missive plan`: for each paced target, the letters waiting, how many go each day, and when
//! the last one goes, under the current pacing limits, sending windows and pauses. The forecast
//! is the scheduler itself run forward, so it is what the worker will do if nothing changes.

use super::Outcome;
use crate::cli::PlanArgs;
use crate::config::Settings;
use crate::startup::App;

/// How far ahead the plan looks.
const HORIZON_DAYS: i64 = 366;

#[derive(serde::Serialize)]
struct PlanRow {
    campaign: String,
    target: String,
    waiting: u64,
    paused: bool,
    first_at: Option<String>,
    last_at: Option<String>,
    /// Letters still waiting at the horizon (a year): paused, or a window that never opens.
    left_over: u64,
    per_day: Vec<(String, u32)>,
}

pub(super) async fn run(args: PlanArgs, settings: Settings) -> anyhow::Result<Outcome> {
    let app = App::build(settings).await?;
    if let Some(c) = &args.campaign {
        app.registry.get(c)?;
    }
    let dispatcher = app.dispatcher();
    let now = app.queue.now();
    let plans = dispatcher
        .plan(
            args.campaign.as_deref(),
            now,
            now + HORIZON_DAYS * 86_400_000,
        )
        .await?;
    app.queue.close().await;
    let rows: Vec<PlanRow> = plans
        .into_iter()
        .map(|p| PlanRow {
            campaign: p.campaign,
            target: p.target,
            waiting: p.queued,
            paused: p.paused,
            first_at: p.first_at.map(|t| t.to_rfc3339()),
            last_at: p.last_at.map(|t| t.to_rfc3339()),
            left_over: p.left_over,
            per_day: p
                .per_day
                .into_iter()
                .map(|(d, n)| (d.to_string(), n))
                .collect(),
        })
        .collect();
    if args.json {
        println!("{}", serde_json::to_string_pretty(&rows)?);
        return Ok(Outcome::Ok);
    }
    for r in &rows {
        let days = r.per_day.len();
        let busiest = r.per_day.iter().map(|(_, n)| *n).max().unwrap_or(0);
        let status = if r.paused {
            "paused".to_owned()
        } else if r.waiting == 0 {
            "nothing waiting".to_owned()
        } else {
            match &r.last_at {
                Some(last) => {
                    format!("last letter {last}, over {days} day(s), at most {busiest} a day")
                }
                None => "no sending window opens within a year".to_owned(),
            }
        };
        println!(
            "{}/{}: {} waiting; {status}",
            r.campaign, r.target, r.waiting
        );
        for (day, n) in r.per_day.iter().take(7) {
            println!("  {day}  {n}");
        }
        if days > 7 {
            println!("  ... {} more day(s)", days - 7);
        }
        if r.left_over > 0 && !r.paused {
            println!("  {} letter(s) would still wait after a year", r.left_over);
        }
    }
    for c in dispatcher.unpaced_campaigns() {
        if args.campaign.as_ref().is_none_or(|want| *want == c) {
            println!("{c}: not paced per target ([pacing] enabled = false): letters go as fast as sending.rate_per_second allows");
        }
    }
    Ok(Outcome::Ok)
}
