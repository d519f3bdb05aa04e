//! Pacing in the worker: the pacing scheduler (`crate::pacing`), built from the campaigns when
//! a worker takes the lead of pacing (one worker at a time leads, for every process on the
//! queue), restored from the last hour's attempts and the letters leased now, whoever sent
//! them (so a restart or a new leader allows no burst), told of organisers' pauses, and asked
//! before each claim which targets may receive a letter now.
//! Letters of campaigns with `[pacing] enabled = false`, and confirmation emails, are not paced
//! per target; the relay's rate limit applies to everything.

use crate::letters::Registry;
use crate::pacing::{GlobalLimits, Pause, Scheduler, Slot, TargetKey, TargetPlan};
use crate::queue::{Millis, Queue, QueueError};
use chrono::{DateTime, Utc};
use std::collections::HashMap;

/// How long a paced target with no letter due is left alone before the queue is asked again.
const IDLE_MS: Millis = 2_000;

pub(super) struct Pacer {
    scheduler: Scheduler,
    /// Every paced target: its key, campaign and target id.
    paced: Vec<(TargetKey, String, String)>,
    /// Targets found with nothing due, and until when to leave them be.
    idle_until: HashMap<TargetKey, Millis>,
    /// A one-off batch: a target found with nothing due is left alone for the rest of it.
    one_off: bool,
}

fn at(ms: Millis) -> DateTime<Utc> {
    DateTime::from_timestamp_millis(ms).unwrap_or_default()
}

impl Pacer {
    /// A pacer over every campaign that paces its letters, restored from the queue.
    /// `one_off`: for a batch that ends when nothing more can go (`missive send`).
    pub(super) async fn build(
        registry: &Registry,
        limits: GlobalLimits,
        queue: &Queue,
        now: Millis,
        one_off: bool,
    ) -> Result<Pacer, QueueError> {
        let mut scheduler = Scheduler::new(limits);
        let mut paced = Vec::new();
        for campaign in registry.iter().filter(|c| c.pacing.enabled()) {
            for spec in campaign.pacing_specs() {
                let key = scheduler.add_target(spec, at(now));
                paced.push((key, spec.campaign.to_owned(), spec.target.to_owned()));
            }
        }
        let recent = queue.recent_sends(now - 3_600_000).await?;
        scheduler.restore(recent.iter().map(|(a, d, t)| (a.as_str(), d.as_str(), *t)));
        let mut pacer = Pacer {
            scheduler,
            paced,
            idle_until: HashMap::new(),
            one_off,
        };
        pacer.refresh_pauses(queue).await?;
        Ok(pacer)
    }

    /// Re-reads the organisers' pauses.
    pub(super) async fn refresh_pauses(&mut self, queue: &Queue) -> Result<(), QueueError> {
        let pauses = queue.pauses().await?;
        self.scheduler
            .set_paused(pauses.into_iter().map(|(c, t)| match t {
                None => Pause::Campaign(c),
                Some(target) => Pause::Target {
                    campaign: c,
                    target,
                },
            }));
        Ok(())
    }

    /// Campaigns whose letters are paced per target, so not claimed in bulk.
    pub(super) fn campaigns(registry: &Registry) -> Vec<String> {
        registry
            .iter()
            .filter(|c| c.pacing.enabled())
            .map(|c| c.slug.as_str().to_owned())
            .collect()
    }

    /// The paced targets that may receive a letter now (of `campaign`, if given).
    pub(super) fn ready(
        &self,
        now: Millis,
        campaign: Option<&str>,
    ) -> Vec<(TargetKey, String, String)> {
        self.paced
            .iter()
            .filter(|(key, c, _)| {
                campaign.is_none_or(|want| want == c)
                    && self.idle_until.get(key).is_none_or(|until| *until <= now)
                    && self.scheduler.next_slot(*key, at(now)) == Slot::Now
            })
            .cloned()
            .collect()
    }

    /// Whether a letter to `key` may go at `now`, counting every send recorded so far (the
    /// domain and relay limits are shared by targets, so ask again before each claim).
    pub(super) fn may_send(&self, key: TargetKey, now: Millis) -> bool {
        self.scheduler.next_slot(key, at(now)) == Slot::Now
    }

    /// A letter to `key` was claimed at `now`: it counts against every limit.
    pub(super) fn record(&mut self, key: TargetKey, now: Millis) {
        self.idle_until.remove(&key);
        self.scheduler.record_send(key, at(now));
    }

    /// `key` had nothing due at `now`.
    pub(super) fn idle(&mut self, key: TargetKey, now: Millis) {
        let until = if self.one_off {
            Millis::MAX
        } else {
            now + IDLE_MS
        };
        self.idle_until.insert(key, until);
    }

    /// When the next paced letter could go, if any target may ever send again.
    pub(super) fn next_opening(&self, now: Millis, campaign: Option<&str>) -> Option<Millis> {
        self.paced
            .iter()
            .filter(|(_, c, _)| campaign.is_none_or(|want| want == c))
            .filter_map(
                |(key, _, _)| match self.scheduler.next_slot(*key, at(now)) {
                    Slot::Now => Some(self.idle_until.get(key).copied().unwrap_or(now).max(now)),
                    Slot::At(t) => Some(t.timestamp_millis()),
                    Slot::Paused | Slot::Never => None,
                },
            )
            .min()
    }

    /// The projected schedule of the letters waiting, under the limits and windows in force:
    /// the scheduler simulated forward from its present state, up to `until`.
    pub(super) fn plan(
        &mut self,
        waiting: &[(String, String, i64)],
        now: Millis,
        until: Millis,
    ) -> Vec<TargetPlan> {
        for (key, c, t) in &self.paced {
            let n = waiting
                .iter()
                .find(|(wc, wt, _)| wc == c && wt == t)
                .map_or(0, |(_, _, n)| *n);
            self.scheduler.set_backlog(*key, n.max(0) as u64);
        }
        self.scheduler.plan(at(now), at(until))
    }
}
