//! The retry policy: where a letter goes after an attempt, from the verdict, the attempt number
//! and the letter's age. Transient failures back off exponentially with jitter, never sooner
//! than the base delay (greylisting needs minutes), until the letter is too old and expires.

use crate::mailer::{Delivery, Verdict};
use crate::queue::{Millis, NextState};
use rand::Rng;

/// Backoff and give-up settings.
#[derive(Debug, Clone, Copy)]
pub struct RetryPolicy {
    pub base_ms: Millis,
    pub max_ms: Millis,
    pub max_age_ms: Millis,
    /// At-least-once: letters in doubt are retried like transient failures (a duplicate is
    /// possible, and recognisable by its Message-ID) instead of waiting for an organiser.
    pub resend_in_doubt: bool,
}

impl RetryPolicy {
    /// The delay before attempt `attempt + 1`, jitter included: between the exponential delay
    /// and a quarter more, capped at `max_ms` (and never below `base_ms`).
    pub fn backoff(&self, attempt: u32, rng: &mut impl Rng) -> Millis {
        let exp = attempt.saturating_sub(1).min(30);
        let delay = self.base_ms.saturating_mul(1 << exp).min(self.max_ms);
        let jitter = rng.random_range(0..=delay / 4);
        (delay + jitter).min(self.max_ms).max(self.base_ms)
    }

    /// Where the letter goes after `delivery`.
    pub fn next(
        &self,
        delivery: &Delivery,
        attempt: u32,
        queued_at: Millis,
        now: Millis,
        rng: &mut impl Rng,
    ) -> NextState {
        match delivery.verdict {
            Verdict::Accepted => NextState::Sent,
            Verdict::Permanent => NextState::Failed,
            Verdict::InDoubt if !self.resend_in_doubt => NextState::InDoubt,
            Verdict::InDoubt => NextState::Deferred {
                retry_at: now + self.backoff(attempt, rng),
            },
            Verdict::Transient if now - queued_at >= self.max_age_ms => NextState::Expired,
            Verdict::Transient => NextState::Deferred {
                retry_at: now + self.backoff(attempt, rng),
            },
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::mailer::Stage;
    use proptest::prelude::*;

    const MIN: Millis = 60_000;

    fn policy() -> RetryPolicy {
        RetryPolicy {
            base_ms: 5 * MIN,
            max_ms: 240 * MIN,
            max_age_ms: 5 * 24 * 60 * MIN,
            resend_in_doubt: false,
        }
    }

    #[test]
    fn replies_decide_the_next_state() {
        let p = policy();
        let mut rng = rand::rng();
        let at = |code| Delivery::from_reply(Stage::Rcpt, code, "x");
        assert_eq!(p.next(&at(250), 1, 0, 0, &mut rng), NextState::Sent);
        assert_eq!(p.next(&at(550), 1, 0, 0, &mut rng), NextState::Failed);
        assert!(
            matches!(p.next(&at(451), 1, 0, 0, &mut rng), NextState::Deferred { retry_at } if retry_at >= 5 * MIN)
        );
        assert_eq!(
            p.next(&at(451), 9, 0, p.max_age_ms, &mut rng),
            NextState::Expired
        );
        let lost = Delivery::no_reply(Stage::EndOfData, "connection reset");
        assert_eq!(p.next(&lost, 1, 0, 0, &mut rng), NextState::InDoubt);
    }

    proptest! {
        #[test]
        fn backoff_grows_and_stays_within_bounds(attempt in 1u32..100, seed in any::<u64>()) {
            use rand::SeedableRng;
            let p = policy();
            let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
            let d = p.backoff(attempt, &mut rng);
            prop_assert!(d >= p.base_ms && d <= p.max_ms);
            let expected = (p.base_ms << (attempt - 1).min(30)).min(p.max_ms);
            prop_assert!(d >= expected.min(p.max_ms));
        }
    }
}
