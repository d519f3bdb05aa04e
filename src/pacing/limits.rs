//! The counting parts of pacing, each answering "the earliest instant at or after `t` that my
//! limit allows": `SendLog`, the recent sends to one address or domain for sliding-hour budgets
//! and spacing, and `Relay`, a GCRA token bucket (rate plus burst) for everything sent.
//!
//! Logs keep sends in time order and drop those older than an hour (keeping the latest, for
//! spacing), so memory is bounded by the hourly budget. Lookups are binary searches.

use super::clock::MS_PER_HOUR;
use std::collections::VecDeque;

/// Recent sends to one address or one domain, oldest first.
#[derive(Debug, Clone, Default)]
pub(crate) struct SendLog {
    times: VecDeque<i64>,
}

impl SendLog {
    /// Records a send at `t` and forgets sends that can no longer matter at `t`.
    pub(crate) fn record(&mut self, t: i64) {
        if self.times.back().is_none_or(|&last| last <= t) {
            self.times.push_back(t);
        } else {
            // Out of order (restored or concurrent records): keep the log sorted.
            let at = self.times.partition_point(|&x| x <= t);
            self.times.insert(at, t);
        }
        let horizon = self.latest().unwrap_or(t).saturating_sub(MS_PER_HOUR);
        while self.times.len() > 1 && self.times.front().is_some_and(|&x| x <= horizon) {
            self.times.pop_front();
        }
    }

    /// The latest send, if any.
    pub(crate) fn latest(&self) -> Option<i64> {
        self.times.back().copied()
    }

    /// How many sends are kept (for tests of memory bounds).
    #[cfg(test)]
    pub(crate) fn len(&self) -> usize {
        self.times.len()
    }

    /// The earliest instant at or after `t` at which a send would make no sliding hour hold
    /// more than `cap` sends: fewer than `cap` sends in `(t - 1h, ...)`. Sends recorded after
    /// `t` count too, so an out-of-order question never gets a too-early answer. `None` when
    /// `cap` is 0.
    pub(crate) fn earliest_under(&self, t: i64, cap: u32) -> Option<i64> {
        if cap == 0 {
            return None;
        }
        let first = self
            .times
            .partition_point(|&x| x <= t.saturating_sub(MS_PER_HOUR));
        let n = self.times.len() - first;
        let cap = cap as usize;
        if n < cap {
            return Some(t);
        }
        // The (n - cap)th of those must leave the window: it does an hour after it was sent.
        let leaving = self.times.get(first + (n - cap))?;
        Some(t.max(leaving.saturating_add(MS_PER_HOUR)))
    }

    /// The earliest instant at or after `t` that is `spacing` after the latest send.
    pub(crate) fn earliest_spaced(&self, t: i64, spacing: i64) -> i64 {
        match self.latest() {
            Some(last) if spacing > 0 => t.max(last.saturating_add(spacing)),
            _ => t,
        }
    }
}

/// The relay's rate and burst as a GCRA (the algorithm `governor` uses): letters may go at
/// `interval` apart on average, and up to `burst` at once after an idle spell.
#[derive(Debug, Clone)]
pub(crate) struct Relay {
    interval: i64,
    tolerance: i64,
    /// The theoretical arrival time of the next letter.
    tat: Option<i64>,
}

impl Relay {
    pub(crate) fn new(interval_ms: i64, burst: u32) -> Relay {
        let interval = interval_ms.max(1);
        Relay {
            interval,
            tolerance: interval.saturating_mul(i64::from(burst.max(1)) - 1),
            tat: None,
        }
    }

    /// The earliest instant at or after `t` at which the relay takes another letter.
    pub(crate) fn earliest(&self, t: i64) -> i64 {
        match self.tat {
            Some(tat) => t.max(tat.saturating_sub(self.tolerance)),
            None => t,
        }
    }

    /// Counts a letter sent at `t`.
    pub(crate) fn record(&mut self, t: i64) {
        let base = self.tat.map_or(t, |tat| tat.max(t));
        self.tat = Some(base.saturating_add(self.interval));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_full_hour_opens_when_its_oldest_send_is_an_hour_old() {
        let mut log = SendLog::default();
        for t in [0, 10, 20] {
            log.record(t);
        }
        assert_eq!(log.earliest_under(30, 4), Some(30));
        assert_eq!(log.earliest_under(30, 3), Some(MS_PER_HOUR));
        assert_eq!(log.earliest_under(30, 2), Some(MS_PER_HOUR + 10));
        assert_eq!(log.earliest_under(30, 0), None);
        assert_eq!(log.earliest_spaced(25, 100), 120);
        assert_eq!(log.earliest_spaced(25, 0), 25);
    }

    #[test]
    fn logs_forget_sends_older_than_an_hour_but_keep_the_latest() {
        let mut log = SendLog::default();
        for i in 0..10_000 {
            log.record(i * 1000);
        }
        assert!(log.len() <= 3_601);
        let mut log = SendLog::default();
        log.record(0);
        log.record(10 * MS_PER_HOUR);
        assert_eq!(log.len(), 1);
        assert_eq!(log.latest(), Some(10 * MS_PER_HOUR));
    }

    #[test]
    fn out_of_order_sends_are_kept_sorted() {
        let mut log = SendLog::default();
        for t in [50, 10, 30] {
            log.record(t);
        }
        assert_eq!(log.times, [10, 30, 50]);
        assert_eq!(log.earliest_under(20, 3), Some(MS_PER_HOUR + 10));
    }

    #[test]
    fn the_relay_allows_its_burst_then_its_rate() {
        let mut r = Relay::new(100, 3);
        let mut sent = Vec::new();
        let mut t = 0;
        while sent.len() < 6 {
            t = r.earliest(t);
            r.record(t);
            sent.push(t);
        }
        assert_eq!(sent, [0, 0, 0, 100, 200, 300]);
    }
}
