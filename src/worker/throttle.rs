//! Limits held for every process sharing the queue: the relay's `[sending] rate_per_second`
//! with its `burst`, each campaign's own `rate_per_second`, and the relay's cool-down after it
//! asked to slow down.
//!
//! Each limit is a GCRA whose theoretical arrival time lives in one `throttles` row, on the
//! database's clock. A process reserves a few tokens at a time in one statement
//! (`Queue::reserve`), which gives each token a time (`Gcra::token_time`); a sender hands its
//! letter over no sooner than its token's time, so the rate holds at the relay's side for the
//! whole fleet. A reservation covers about 50 ms of the rate (one token at 20 letters/s, 256 at
//! most): one short write per reservation, shared by that many letters.
//!
//! Tokens a process holds and does not use in time are dropped, never saved up: after a stall
//! (the process descheduled, the relay slow) a process cannot spend a backlog of old tokens at
//! once while the others spend theirs. Within the process, the exact local limiter
//! (`rate.rs`) also spaces its own letters, as on one machine before.
//!
//! The cool-down is the same row moved forward (`Queue::hold`): every process's next
//! reservation starts after it.

use super::rate::RateLimiter;
use crate::queue::{Queue, QueueError};
use std::time::Duration;
use tokio::sync::Mutex;

/// A reservation covers about this long of the limit's rate.
const CHUNK_US: f64 = 50_000.0;
/// At most this many tokens in one reservation.
const MAX_CHUNK: u32 = 256;
/// A token this long past its time is dropped.
const STALE_US: i64 = 500_000;

/// A GCRA's parameters: one token every `interval_us`, up to `tolerance_us` early (a burst).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Gcra {
    pub interval_us: i64,
    pub tolerance_us: i64,
}

impl Gcra {
    /// `rate` tokens a second (at least one a million seconds), bursts of `burst` (at least 1).
    pub(crate) fn new(rate: f64, burst: u32) -> Gcra {
        let interval_us = (1e6 / rate.max(1e-6)).ceil().clamp(1.0, 1e12) as i64;
        Gcra {
            interval_us,
            tolerance_us: interval_us.saturating_mul(i64::from(burst.max(1) - 1)),
        }
    }

    /// The time of token `i` (from 0) of `n` reserved at `now_us` by a reservation that moved
    /// the theoretical arrival time to `tat_us`: the reservation's first token is at
    /// `tat_us - n * interval` (the old arrival time, or now if that had passed), each next one
    /// an interval later, and each may go up to the tolerance early, but not before now.
    pub(crate) fn token_time(&self, tat_us: i64, n: u32, i: u32, now_us: i64) -> i64 {
        let own = tat_us - i64::from(n - i) * self.interval_us;
        (own - self.tolerance_us).max(now_us)
    }

    /// How many tokens one reservation takes.
    fn chunk(&self) -> u32 {
        ((CHUNK_US / self.interval_us as f64).ceil() as u32).clamp(1, MAX_CHUNK)
    }
}

/// Tokens of one reservation not handed out yet.
#[derive(Debug, Default)]
struct Held {
    tat_us: i64,
    n: u32,
    next: u32,
    reserved_at_us: i64,
}

/// One limit shared by the fleet, as this process takes its turns.
#[derive(Debug)]
pub(super) struct FleetLimit {
    key: String,
    gcra: Gcra,
    held: Mutex<Held>,
    /// This process's own letters, spaced exactly (late wake-ups forgiven, no catching up).
    local: RateLimiter,
}

impl FleetLimit {
    /// The limit named `key` (`relay 127.0.0.1:25`, `campaign mexico`): `rate` letters a second
    /// with bursts of `burst`.
    pub(super) fn new(key: String, rate: f64, burst: u32) -> FleetLimit {
        FleetLimit {
            key,
            gcra: Gcra::new(rate, burst),
            held: Mutex::new(Held::default()),
            local: RateLimiter::new(rate, burst),
        }
    }

    /// The row's name.
    pub(super) fn key(&self) -> &str {
        &self.key
    }

    /// The next token this process holds, reserving more when it has none left: its time, on
    /// the queue's clock in microseconds.
    async fn next_token(&self, queue: &Queue) -> Result<i64, QueueError> {
        let mut held = self.held.lock().await;
        let now_us = queue.now_us();
        while held.next < held.n {
            let t = self
                .gcra
                .token_time(held.tat_us, held.n, held.next, held.reserved_at_us);
            held.next += 1;
            if t >= now_us - STALE_US {
                return Ok(t);
            }
        }
        let n = self.gcra.chunk();
        let tat_us = queue
            .reserve(&self.key, n, self.gcra.interval_us, now_us)
            .await?;
        *held = Held {
            tat_us,
            n,
            next: 1,
            reserved_at_us: now_us,
        };
        Ok(self.gcra.token_time(tat_us, n, 0, now_us))
    }

    /// Waits for this process's next turn under the limit: its token's time, then its own
    /// spacing.
    pub(super) async fn until_ready(&self, queue: &Queue) -> Result<(), QueueError> {
        let at = self.next_token(queue).await?;
        let wait = at - queue.now_us();
        if wait > 0 {
            tokio::time::sleep(Duration::from_micros(wait as u64)).await;
        }
        self.local.until_ready().await;
        Ok(())
    }

    /// No token of this limit before `until_us`, for any process: the relay asked to slow down.
    pub(super) async fn hold(&self, queue: &Queue, until_us: i64) -> Result<(), QueueError> {
        // The first token after the cool-down may go at its end, not a tolerance earlier.
        queue
            .hold(&self.key, until_us + self.gcra.tolerance_us)
            .await?;
        // Tokens held from before are spent: none of them goes during the cool-down.
        *self.held.lock().await = Held::default();
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn burst_one_gives_one_token_per_interval_from_the_old_arrival_time() {
        let g = Gcra::new(50.0, 1);
        assert_eq!(g.interval_us, 20_000);
        assert_eq!(g.tolerance_us, 0);
        // Idle (arrival time in the past): reserving 3 at t=1000 moves it to 1000 + 60000.
        let tat = 1_000 + 3 * 20_000;
        let times: Vec<i64> = (0..3).map(|i| g.token_time(tat, 3, i, 1_000)).collect();
        assert_eq!(times, [1_000, 21_000, 41_000]);
        // Another process reserves 2 next, at t=2000: its tokens follow on.
        let tat2 = tat + 2 * 20_000;
        let times: Vec<i64> = (0..2).map(|i| g.token_time(tat2, 2, i, 2_000)).collect();
        assert_eq!(times, [61_000, 81_000]);
    }

    #[test]
    fn a_burst_goes_at_once_after_an_idle_spell_then_the_rate_holds() {
        let g = Gcra::new(10.0, 3);
        assert_eq!(g.tolerance_us, 200_000);
        let now = 5_000_000;
        let tat = now + 5 * 100_000;
        let times: Vec<i64> = (0..5).map(|i| g.token_time(tat, 5, i, now)).collect();
        assert_eq!(
            times,
            [now, now, now, now + 100_000, now + 200_000],
            "three at once, then one per interval"
        );
    }

    #[test]
    fn chunks_cover_about_fifty_milliseconds() {
        assert_eq!(Gcra::new(20.0, 20).chunk(), 1);
        assert_eq!(Gcra::new(200.0, 1).chunk(), 10);
        assert_eq!(Gcra::new(1_000_000.0, 20).chunk(), MAX_CHUNK);
        assert_eq!(Gcra::new(0.001, 1).chunk(), 1);
    }

    #[test]
    fn extreme_rates_give_sane_intervals() {
        assert_eq!(Gcra::new(1_000_000.0, 1).interval_us, 1);
        assert_eq!(Gcra::new(1e-9, 1).interval_us, 1_000_000_000_000);
        assert_eq!(Gcra::new(f64::INFINITY, 4).interval_us, 1);
    }
}
