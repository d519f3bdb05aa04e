//! The projected schedule: when each target's backlog will have gone, day by day. Computed by
//! running a copy of the scheduler forward on a simulated clock (`Scheduler::simulate`), the
//! same decisions the worker makes, so the forecast is what a run would do if nothing changed
//! (no new signatures, no failures, no pauses).

use super::scheduler::{MsSlot, Scheduler, TargetKey};
use super::{from_millis, Millis};
use chrono::{DateTime, NaiveDate, Utc};
use std::cmp::Reverse;
use std::collections::{BTreeMap, BinaryHeap};

/// One target's forecast.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TargetPlan {
    pub key: TargetKey,
    pub campaign: String,
    pub target: String,
    /// Letters waiting when the plan was made.
    pub queued: u64,
    /// Letters sent on each local date (the target's time zone), in date order.
    pub per_day: Vec<(NaiveDate, u32)>,
    /// When the first and last letters would go.
    pub first_at: Option<DateTime<Utc>>,
    pub last_at: Option<DateTime<Utc>>,
    /// Letters that would still be waiting at the plan's horizon (or forever: paused, or
    /// a window that never opens).
    pub left_over: u64,
    pub paused: bool,
}

impl Scheduler {
    /// Forecasts every target's backlog from `now` to `until`, on a copy of this scheduler.
    pub fn plan(&self, now: DateTime<Utc>, until: DateTime<Utc>) -> Vec<TargetPlan> {
        let mut plans: Vec<TargetPlan> = self
            .keys()
            .map(|key| {
                let (campaign, target) = self.name(key).unwrap_or_default();
                TargetPlan {
                    key,
                    campaign: campaign.to_owned(),
                    target: target.to_owned(),
                    queued: self.backlog(key),
                    per_day: Vec::new(),
                    first_at: None,
                    last_at: None,
                    left_over: 0,
                    paused: self.targets.get(key_index(key)).is_some_and(|t| t.paused),
                }
            })
            .collect();
        let mut days: Vec<BTreeMap<NaiveDate, u32>> = vec![BTreeMap::new(); plans.len()];
        let mut copy = self.clone();
        copy.simulate(now, until, |key, at, date| {
            if let Some(p) = plans.get_mut(key_index(key)) {
                p.first_at = p.first_at.or(Some(at));
                p.last_at = Some(at);
            }
            if let Some(d) = days.get_mut(key_index(key)) {
                *d.entry(date).or_default() += 1;
            }
        });
        for (p, d) in plans.iter_mut().zip(days) {
            p.per_day = d.into_iter().collect();
            p.left_over = copy.backlog(p.key);
        }
        plans
    }

    /// Sends every backlog on a simulated clock from `now` until `until`, calling `on_send`
    /// with each letter's target, instant and local date, in the order a worker would send
    /// them: earliest first, ties in key order. Records each send (this scheduler ends in the
    /// state the run would leave).
    pub fn simulate(
        &mut self,
        now: DateTime<Utc>,
        until: DateTime<Utc>,
        mut on_send: impl FnMut(TargetKey, DateTime<Utc>, NaiveDate),
    ) {
        let (now, until) = (now.timestamp_millis(), until.timestamp_millis());
        let mut due: BinaryHeap<Reverse<(Millis, TargetKey)>> = self
            .keys()
            .filter(|&k| self.backlog(k) > 0)
            .map(|k| Reverse((now, k)))
            .collect();
        while let Some(Reverse((at, key))) = due.pop() {
            if at > until {
                break;
            }
            match self.next_slot_ms(key, at) {
                MsSlot::Now => {
                    self.record_send_ms(key, at);
                    let tz = self.targets.get(key_index(key)).map(|t| t.tz);
                    if let (Some(when), Some(date)) = (
                        from_millis(at),
                        tz.and_then(|tz| super::clock::local_date(tz, at)),
                    ) {
                        on_send(key, when, date);
                    }
                    if self.backlog(key) > 0 {
                        due.push(Reverse((at, key)));
                    }
                }
                MsSlot::At(later) => due.push(Reverse((later.max(at + 1), key))),
                MsSlot::Paused | MsSlot::Never => {}
            }
        }
    }
}

fn key_index(key: TargetKey) -> usize {
    key.index()
}
