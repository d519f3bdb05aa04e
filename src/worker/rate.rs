//! This process's own spacing under a rate limit: senders wait on it before each letter, after
//! the fleet's token (`throttle.rs`), for the relay's `[sending] rate_per_second` with its
//! `burst` and each campaign's own `rate_per_second`.
//!
//! A GCRA, the algorithm `governor` uses, with one difference. A sender that waited for its
//! turn wakes late: tokio's timer fires on a millisecond tick, after the instant asked for.
//! `governor` counts the letter at the instant the sender woke, so with `burst = 1` every
//! wake-up's lateness was lost for good: 1.2-1.4% of the rate at 50 letters/s
//! (`bench/pacing.sh`). Here a sender that waited is counted at the instant its turn came, up
//! to half an interval late; so the rate holds on average, and after a longer stall (the
//! process descheduled, say) the next letter may follow the late one after half an interval,
//! never sooner. A sender that did not wait is counted when it asks, as in any GCRA.

use std::sync::Mutex;
use std::time::Duration;
use tokio::time::Instant;

/// Letters at most `rate` a second on average, up to `burst` at once after an idle spell.
#[derive(Debug)]
pub(super) struct RateLimiter {
    interval: Duration,
    /// How far ahead of its theoretical arrival time a letter may go: `(burst - 1)` intervals.
    tolerance: Duration,
    /// The most lateness of a waiting sender that is forgiven.
    forgiven: Duration,
    /// The theoretical arrival time of the next letter; `None` before the first.
    tat: Mutex<Option<Instant>>,
}

impl RateLimiter {
    /// A limiter allowing `rate` letters a second (at least one a million seconds) with bursts
    /// of `burst` (at least 1).
    pub(super) fn new(rate: f64, burst: u32) -> RateLimiter {
        let interval = Duration::try_from_secs_f64(1.0 / rate.max(1e-6))
            .unwrap_or(Duration::from_secs(1_000_000))
            .max(Duration::from_nanos(1));
        RateLimiter {
            interval,
            tolerance: interval.saturating_mul(burst.max(1) - 1),
            forgiven: interval / 2,
            tat: Mutex::new(None),
        }
    }

    /// Takes a turn at `now`, or says when to ask again. `due`: the instant a waiting sender
    /// was told, if it waited.
    fn try_take(&self, now: Instant, due: Option<Instant>) -> Result<(), Instant> {
        let mut tat = self
            .tat
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        let Some(current) = *tat else {
            *tat = Some(now + self.interval);
            return Ok(());
        };
        let earliest = current.checked_sub(self.tolerance).unwrap_or(current);
        if now < earliest {
            return Err(earliest);
        }
        // The instant this letter counts at: when it asked, or, for a sender that waited, when
        // its turn came (at most `forgiven` earlier than now).
        let late = due.map_or(Duration::ZERO, |due| now.saturating_duration_since(due));
        let counted = now - late.min(self.forgiven);
        *tat = Some(current.max(counted) + self.interval);
        Ok(())
    }

    /// Waits for a turn and takes it.
    pub(super) async fn until_ready(&self) {
        let mut due = None;
        loop {
            match self.try_take(Instant::now(), due) {
                Ok(()) => return,
                Err(at) => {
                    due = Some(at);
                    tokio::time::sleep_until(at).await;
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ms(n: u64) -> Duration {
        Duration::from_millis(n)
    }

    #[test]
    fn burst_one_spaces_letters_one_interval_apart() {
        let limiter = RateLimiter::new(50.0, 1);
        let t0 = Instant::now();
        assert_eq!(limiter.try_take(t0, None), Ok(()));
        assert_eq!(limiter.try_take(t0, None), Err(t0 + ms(20)));
        assert_eq!(limiter.try_take(t0 + ms(19), None), Err(t0 + ms(20)));
        assert_eq!(limiter.try_take(t0 + ms(20), None), Ok(()));
    }

    #[test]
    fn a_sender_woken_late_is_counted_when_its_turn_came() {
        let limiter = RateLimiter::new(50.0, 1);
        let t0 = Instant::now();
        limiter.try_take(t0, None).unwrap();
        // Told to come back at 20 ms, woken at 21.3 ms: the next turn is still at 40 ms.
        let due = limiter.try_take(t0, None).unwrap_err();
        assert_eq!(
            limiter.try_take(t0 + Duration::from_micros(21_300), Some(due)),
            Ok(())
        );
        assert_eq!(limiter.try_take(t0 + ms(25), None), Err(t0 + ms(40)));
    }

    #[test]
    fn a_sender_that_did_not_wait_counts_from_when_it_asked() {
        let limiter = RateLimiter::new(50.0, 1);
        let t0 = Instant::now();
        limiter.try_take(t0, None).unwrap();
        // Idle until 100 ms: that letter goes at once, the next one an interval later.
        assert_eq!(limiter.try_take(t0 + ms(100), None), Ok(()));
        assert_eq!(limiter.try_take(t0 + ms(100), None), Err(t0 + ms(120)));
    }

    #[test]
    fn after_a_long_stall_the_next_letter_waits_at_least_half_an_interval() {
        let limiter = RateLimiter::new(50.0, 1);
        let t0 = Instant::now();
        limiter.try_take(t0, None).unwrap();
        let due = limiter.try_take(t0, None).unwrap_err();
        // Woken 200 ms late: no catching up with a burst, only half an interval forgiven.
        assert_eq!(limiter.try_take(t0 + ms(220), Some(due)), Ok(()));
        assert_eq!(limiter.try_take(t0 + ms(220), None), Err(t0 + ms(230)));
        assert_eq!(limiter.try_take(t0 + ms(230), None), Ok(()));
        assert_eq!(limiter.try_take(t0 + ms(230), None), Err(t0 + ms(250)));
    }

    #[test]
    fn a_burst_goes_at_once_after_an_idle_spell_then_the_rate_holds() {
        let limiter = RateLimiter::new(10.0, 3);
        let t0 = Instant::now();
        for _ in 0..3 {
            assert_eq!(limiter.try_take(t0, None), Ok(()));
        }
        assert_eq!(limiter.try_take(t0, None), Err(t0 + ms(100)));
    }

    #[tokio::test(start_paused = true)]
    async fn many_senders_keep_the_exact_rate_over_time() {
        let limiter = std::sync::Arc::new(RateLimiter::new(50.0, 1));
        let start = Instant::now();
        let mut senders = Vec::new();
        for _ in 0..8 {
            let limiter = limiter.clone();
            senders.push(tokio::spawn(async move {
                let mut sent = 0u32;
                while Instant::now() < start + Duration::from_secs(10) {
                    limiter.until_ready().await;
                    sent += 1;
                }
                sent
            }));
        }
        let mut total = 0;
        for s in senders {
            total += s.await.unwrap();
        }
        // 10 s at 50 a second: 500, plus the one taken at the start, plus at most one per
        // sender that took its turn as the 10 s ran out.
        assert!((500..=509).contains(&total), "{total} letters in 10 s");
    }
}
