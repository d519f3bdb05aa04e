//! The `Scheduler`: the state of every pacing limit at once, answering "may a letter to this
//! target go now, and if not, when?" (`next_slot`) and counting each letter sent
//! (`record_send`).
//!
//! Limits are layered and all hold together: the relay (rate and burst, everything sent), each
//! receiving domain (letters per sliding hour, all campaigns together), each target address
//! (its hourly budget at the local hour, all campaigns together, and the minimum spacing), the
//! target's window, and in drip mode the target's share of the time left. The answer is the
//! earliest instant every limit allows: each limit pushes the candidate instant forward until
//! none does. The clock is always a parameter; nothing here reads the time or does I/O.

use super::clock;
use super::drip::DripCurve;
use super::limits::{Relay, SendLog};
use super::policy::{GlobalLimits, PacingRule};
use super::{from_millis, Millis};
use crate::domain::EmailAddress;
use chrono::{DateTime, NaiveDate, Utc};
use chrono_tz::Tz;
use std::collections::{BTreeSet, HashMap};
use std::sync::Arc;

/// Rounds of "every limit pushes the instant forward" before giving a provisional answer.
/// Limits settle in two or three rounds; the bound only guards against a pathological policy.
const MAX_ROUNDS: usize = 64;

/// A target registered with the scheduler: a cheap handle for the hot path.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct TargetKey(usize);

impl TargetKey {
    pub(crate) fn index(self) -> usize {
        self.0
    }
}

/// The answer to "may a letter to this target go now?".
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Slot {
    /// Yes: send it, then `record_send`.
    Now,
    /// Not before this instant (ask again then: other letters may have taken the slot).
    At(DateTime<Utc>),
    /// The organiser paused the target or its campaign.
    Paused,
    /// The window never opens again (e.g. every remaining day is a holiday), or the key is
    /// not from this scheduler.
    Never,
}

/// What the scheduler needs to know about one target of one campaign.
#[derive(Debug, Clone, Copy)]
pub struct TargetSpec<'a> {
    pub campaign: &'a str,
    pub target: &'a str,
    pub address: &'a EmailAddress,
    pub time_zone: Tz,
    pub rule: &'a PacingRule,
    /// Drip mode: the last local date letters should go on.
    pub drip_until: Option<NaiveDate>,
}

/// What an organiser paused (the lead's queue and CLI keep this list; the scheduler skips it).
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub enum Pause {
    Campaign(String),
    Target { campaign: String, target: String },
}

#[derive(Debug, Clone)]
pub(crate) struct TargetState {
    pub(crate) campaign: String,
    pub(crate) target: String,
    address: usize,
    domain: usize,
    pub(crate) tz: Tz,
    rule: Arc<PacingRule>,
    drip: Option<Arc<DripCurve>>,
    pub(crate) backlog: u64,
    pub(crate) paused: bool,
}

/// Strings to dense indices, so the hot path never hashes a string.
#[derive(Debug, Clone, Default)]
struct Interner {
    ids: HashMap<String, usize>,
}

impl Interner {
    fn get_or_insert(&mut self, name: &str, logs: &mut Vec<SendLog>) -> usize {
        if let Some(&i) = self.ids.get(name) {
            return i;
        }
        let i = logs.len();
        logs.push(SendLog::default());
        self.ids.insert(name.to_owned(), i);
        i
    }
}

/// Every pacing limit's state. `Clone` is cheap enough to simulate forward from a copy
/// (`plan`): rules and drip curves are shared.
#[derive(Debug, Clone)]
pub struct Scheduler {
    limits: GlobalLimits,
    relay: Relay,
    pub(crate) targets: Vec<TargetState>,
    keys: HashMap<String, HashMap<String, usize>>,
    address_ids: Interner,
    addresses: Vec<SendLog>,
    domain_ids: Interner,
    domains: Vec<SendLog>,
    paused: BTreeSet<Pause>,
}

impl Scheduler {
    /// A scheduler with no targets and no sends recorded.
    pub fn new(limits: GlobalLimits) -> Scheduler {
        Scheduler {
            relay: Relay::new(limits.relay_interval_ms(), limits.relay_burst()),
            limits,
            targets: Vec::new(),
            keys: HashMap::new(),
            address_ids: Interner::default(),
            addresses: Vec::new(),
            domain_ids: Interner::default(),
            domains: Vec::new(),
            paused: BTreeSet::new(),
        }
    }

    /// Registers a target (or replaces its policy, keeping its backlog and history: this is
    /// how a changed campaign.toml, e.g. a nearer end date, takes effect). `now` anchors the
    /// drip schedule.
    pub fn add_target(&mut self, spec: TargetSpec<'_>, now: DateTime<Utc>) -> TargetKey {
        let now = now.timestamp_millis();
        let address = self
            .address_ids
            .get_or_insert(&spec.address.normalized(), &mut self.addresses);
        let domain = self
            .domain_ids
            .get_or_insert(spec.address.domain(), &mut self.domains);
        let drip = spec
            .drip_until
            .map(|until| Arc::new(DripCurve::build(spec.rule, spec.time_zone, now, until)));
        let paused = self.is_paused(spec.campaign, spec.target);
        let state = TargetState {
            campaign: spec.campaign.to_owned(),
            target: spec.target.to_owned(),
            address,
            domain,
            tz: spec.time_zone,
            rule: Arc::new(spec.rule.clone()),
            drip,
            backlog: 0,
            paused,
        };
        if let Some(key) = self.key(spec.campaign, spec.target) {
            if let Some(slot) = self.targets.get_mut(key.0) {
                let backlog = slot.backlog;
                *slot = TargetState { backlog, ..state };
            }
            return key;
        }
        let i = self.targets.len();
        self.targets.push(state);
        self.keys
            .entry(spec.campaign.to_owned())
            .or_default()
            .insert(spec.target.to_owned(), i);
        TargetKey(i)
    }

    /// The key of a registered target.
    pub fn key(&self, campaign: &str, target: &str) -> Option<TargetKey> {
        self.keys.get(campaign)?.get(target).copied().map(TargetKey)
    }

    /// Every registered target's key, in registration order.
    pub fn keys(&self) -> impl Iterator<Item = TargetKey> {
        (0..self.targets.len()).map(TargetKey)
    }

    /// The campaign and target id of a key.
    pub fn name(&self, key: TargetKey) -> Option<(&str, &str)> {
        self.targets
            .get(key.0)
            .map(|t| (t.campaign.as_str(), t.target.as_str()))
    }

    /// Sets how many letters wait for a target (from the queue). Drip mode spreads them;
    /// `record_send` counts them down.
    pub fn set_backlog(&mut self, key: TargetKey, queued: u64) {
        if let Some(t) = self.targets.get_mut(key.0) {
            t.backlog = queued;
        }
    }

    /// How many letters wait for a target, as far as the scheduler knows.
    pub fn backlog(&self, key: TargetKey) -> u64 {
        self.targets.get(key.0).map_or(0, |t| t.backlog)
    }

    /// Replaces the set of paused campaigns and targets.
    pub fn set_paused(&mut self, paused: impl IntoIterator<Item = Pause>) {
        self.paused = paused.into_iter().collect();
        let flags: Vec<bool> = self
            .targets
            .iter()
            .map(|t| self.is_paused(&t.campaign, &t.target))
            .collect();
        for (t, p) in self.targets.iter_mut().zip(flags) {
            t.paused = p;
        }
    }

    fn is_paused(&self, campaign: &str, target: &str) -> bool {
        self.paused.contains(&Pause::Campaign(campaign.to_owned()))
            || self.paused.contains(&Pause::Target {
                campaign: campaign.to_owned(),
                target: target.to_owned(),
            })
    }

    /// May a letter to `key` go at `now`, and if not, when at the earliest?
    pub fn next_slot(&self, key: TargetKey, now: DateTime<Utc>) -> Slot {
        match self.next_slot_ms(key, now.timestamp_millis()) {
            MsSlot::Now => Slot::Now,
            MsSlot::At(t) => from_millis(t).map_or(Slot::Never, Slot::At),
            MsSlot::Paused => Slot::Paused,
            MsSlot::Never => Slot::Never,
        }
    }

    /// Whether the target's sending window is open at `now` (on its own clock).
    pub fn window_open(&self, key: TargetKey, now: DateTime<Utc>) -> bool {
        self.targets
            .get(key.0)
            .is_some_and(|t| clock::is_open(t.rule.window(), t.tz, now.timestamp_millis()))
    }

    /// Counts a letter to `key` sent (or attempted: the receiving server saw it) at `at`,
    /// against every limit, and takes one off the target's backlog.
    pub fn record_send(&mut self, key: TargetKey, at: DateTime<Utc>) {
        self.record_send_ms(key, at.timestamp_millis());
    }

    /// Counts sends found in the database at start-up (e.g. every attempt of the last hour:
    /// recipient address, recipient domain, when it started), so a restart allows no burst.
    /// Sends to addresses no target has yet still count for their domain and for the relay.
    /// Call it after registering targets or before: addresses are matched by their
    /// lower-cased form either way.
    pub fn restore<'a>(
        &mut self,
        recent_sends: impl IntoIterator<Item = (&'a str, &'a str, Millis)>,
    ) {
        let mut sends: Vec<(usize, usize, Millis)> = recent_sends
            .into_iter()
            .map(|(address, domain, at)| {
                let a = self
                    .address_ids
                    .get_or_insert(&address.trim().to_lowercase(), &mut self.addresses);
                let d = self
                    .domain_ids
                    .get_or_insert(&domain.trim().to_lowercase(), &mut self.domains);
                (a, d, at)
            })
            .collect();
        sends.sort_by_key(|&(_, _, at)| at);
        for (a, d, at) in sends {
            self.count(a, d, at);
        }
    }

    pub(crate) fn record_send_ms(&mut self, key: TargetKey, at: Millis) {
        let Some(t) = self.targets.get_mut(key.0) else {
            return;
        };
        t.backlog = t.backlog.saturating_sub(1);
        let (a, d) = (t.address, t.domain);
        self.count(a, d, at);
    }

    fn count(&mut self, address: usize, domain: usize, at: Millis) {
        self.relay.record(at);
        if let Some(log) = self.addresses.get_mut(address) {
            log.record(at);
        }
        if let Some(log) = self.domains.get_mut(domain) {
            log.record(at);
        }
    }

    /// `next_slot` in queue milliseconds: the form the worker and `plan` use.
    pub(crate) fn next_slot_ms(&self, key: TargetKey, now: Millis) -> MsSlot {
        let Some(t) = self.targets.get(key.0) else {
            return MsSlot::Never;
        };
        if t.paused {
            return MsSlot::Paused;
        }
        let (Some(address), Some(domain)) =
            (self.addresses.get(t.address), self.domains.get(t.domain))
        else {
            return MsSlot::Never;
        };
        let window = t.rule.window();
        let mut at = now;
        for _ in 0..MAX_ROUNDS {
            let before = at;
            // The window, and within it an hour with a budget.
            let Some(open) = clock::next_open(window, t.tz, at) else {
                return MsSlot::Never;
            };
            at = open;
            let cap = clock::local_hour(t.tz, at).map_or(0, |h| t.rule.hour_cap(h));
            // The budget holds for this local hour only: if the hour is full (or has no
            // budget), look again from the next hour, whose budget may be larger.
            at = match address.earliest_under(at, cap) {
                Some(x) if x == at => x,
                later => match clock::next_hour_change(t.tz, at) {
                    Some(change) => later.map_or(change, |x| x.min(change)),
                    None => return MsSlot::Never,
                },
            };
            at = address.earliest_spaced(at, t.rule.min_spacing_ms());
            at = domain
                .earliest_under(at, self.limits.per_domain_per_hour())
                .unwrap_or(at);
            at = self.relay.earliest(at);
            if let Some(drip) = &t.drip {
                at = drip.earliest(at, address.latest(), t.backlog);
            }
            if at == before {
                return if at <= now {
                    MsSlot::Now
                } else {
                    MsSlot::At(at)
                };
            }
        }
        MsSlot::At(at)
    }
}

/// `Slot` in milliseconds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum MsSlot {
    Now,
    At(Millis),
    Paused,
    Never,
}
