//! `missive pause`, `resume` and `cancel`: an organiser holding back, releasing or withdrawing
//! a campaign's letters, or one target's.

use super::Outcome;
use crate::cli::TargetScopeArgs;
use crate::config::Settings;
use crate::letters::Registry;
use crate::queue::Queue;

/// Checks the campaign and target exist, then opens the queue.
async fn open(args: &TargetScopeArgs, settings: &Settings) -> anyhow::Result<Queue> {
    let registry = Registry::load(&settings.letters.dir, settings.smtp.address_policy())?;
    let campaign = registry.get(&args.campaign)?;
    if let Some(t) = &args.target {
        campaign.require_target(t)?;
    }
    Ok(Queue::open(&settings.database).await?)
}

fn what(args: &TargetScopeArgs) -> String {
    match &args.target {
        Some(t) => format!("{}/{t}", args.campaign),
        None => args.campaign.clone(),
    }
}

pub(super) async fn pause(args: TargetScopeArgs, settings: Settings) -> anyhow::Result<Outcome> {
    let queue = open(&args, &settings).await?;
    let n = queue
        .pause(&args.campaign, args.target.as_deref(), queue.now())
        .await?;
    queue.close().await;
    println!("{n}");
    eprintln!(
        "paused {}: {n} waiting letter(s) held; new letters wait too until `missive resume`",
        what(&args)
    );
    Ok(Outcome::Ok)
}

pub(super) async fn resume(args: TargetScopeArgs, settings: Settings) -> anyhow::Result<Outcome> {
    let queue = open(&args, &settings).await?;
    let n = queue
        .resume(&args.campaign, args.target.as_deref(), queue.now())
        .await?;
    queue.close().await;
    println!("{n}");
    eprintln!("resumed {}: {n} held letter(s) queued again", what(&args));
    Ok(Outcome::Ok)
}

pub(super) async fn cancel(args: TargetScopeArgs, settings: Settings) -> anyhow::Result<Outcome> {
    let queue = open(&args, &settings).await?;
    let n = queue
        .cancel(&args.campaign, args.target.as_deref(), queue.now())
        .await?;
    queue.close().await;
    println!("{n}");
    eprintln!(
        "cancelled {n} waiting letter(s) of {}; they will never be sent",
        what(&args)
    );
    Ok(Outcome::Ok)
}
