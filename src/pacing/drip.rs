//! Drip mode: spreading a target's backlog evenly over the sending time left before the
//! campaign's end date, in proportion to each hour's budget.
//!
//! `DripCurve` measures "sending capacity" between two instants: open window time weighted by
//! the hourly budget (so a quiet lunch hour counts for less than a busy morning). It is a
//! piecewise-linear, non-decreasing function `F(t)`, stored as runs with cumulative sums, so
//! `F` and its inverse are binary searches. With `B` letters waiting and the last letter sent at
//! `l`, the next may go once `F(t) - F(l) >= (F(end) - F(l)) / (B + 1)`: letters then come at
//! equal capacity steps and the last lands before the end date, never at it.

use super::clock::{self, MS_PER_DAY};
use super::policy::PacingRule;
use chrono::NaiveDate;
use chrono_tz::Tz;

/// A drip schedule is built at most this many days ahead; beyond, the backlog drips as if the
/// end date were then.
pub(crate) const MAX_DRIP_DAYS: i64 = 1_000;

#[derive(Debug, Clone, Copy)]
struct Run {
    start: i64,
    end: i64,
    /// The hourly budget during the run.
    weight: i128,
    /// `F(start)`.
    before: i128,
}

impl Run {
    fn after(&self) -> i128 {
        self.before + i128::from(self.end - self.start) * self.weight
    }
}

/// The sending capacity of one target from a given instant to the end of its drip end date.
#[derive(Debug, Clone)]
pub(crate) struct DripCurve {
    runs: Vec<Run>,
}

impl DripCurve {
    /// The curve for `rule` on the clock of `tz`, from `from` to the end of the local date
    /// `until` (at most `MAX_DRIP_DAYS` ahead).
    pub(crate) fn build(rule: &PacingRule, tz: Tz, from: i64, until: NaiveDate) -> DripCurve {
        let mut runs = Vec::new();
        let mut before: i128 = 0;
        let limit = from.saturating_add(MAX_DRIP_DAYS * MS_PER_DAY);
        let mut t = from;
        while let Some(start) = clock::next_open(rule.window(), tz, t) {
            if start >= limit || clock::local_date(tz, start).is_none_or(|d| d > until) {
                break;
            }
            let Some(end) = clock::run_end(rule.window(), tz, start) else {
                break;
            };
            let weight = clock::local_hour(tz, start).map_or(0, |h| rule.hour_cap(h));
            if weight > 0 && end > start {
                let run = Run {
                    start,
                    end,
                    weight: i128::from(weight),
                    before,
                };
                before = run.after();
                runs.push(run);
            }
            t = end.max(start + 1);
        }
        DripCurve { runs }
    }

    /// `F(t)`: the capacity from the start of the curve to `t`.
    pub(crate) fn at(&self, t: i64) -> i128 {
        let i = self.runs.partition_point(|r| r.start <= t);
        match i.checked_sub(1).and_then(|i| self.runs.get(i)) {
            None => 0,
            Some(r) => r.before + i128::from(t.min(r.end) - r.start) * r.weight,
        }
    }

    /// `F(end)`: the whole capacity.
    pub(crate) fn total(&self) -> i128 {
        self.runs.last().map_or(0, Run::after)
    }

    /// The earliest instant with `F(t) >= x`, if the curve reaches `x`.
    pub(crate) fn reach(&self, x: i128) -> Option<i64> {
        let i = self.runs.partition_point(|r| r.after() < x);
        let r = self.runs.get(i)?;
        if x <= r.before {
            return Some(r.start);
        }
        let offset = (x - r.before + r.weight - 1) / r.weight;
        Some(r.start + i64::try_from(offset).ok()?)
    }

    /// The earliest instant at or after `t` at which the next of `backlog` letters may go,
    /// the previous one having gone at `last`.
    pub(crate) fn earliest(&self, t: i64, last: Option<i64>, backlog: u64) -> i64 {
        let Some(last) = last else { return t };
        let (from, end) = (self.at(last), self.total());
        if end <= from {
            // Past the end date: the backlog goes as fast as the other limits allow.
            return t;
        }
        let steps = i128::from(backlog.max(1)) + 1;
        let need = from + (end - from + steps - 1) / steps;
        if self.at(t) >= need {
            t
        } else {
            self.reach(need).map_or(t, |at| at.max(t))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::pacing::policy::{CampaignPacing, RawPacing, RawWindow};
    use chrono::DateTime;

    fn rule(hours: &str) -> PacingRule {
        let raw = RawPacing {
            curve: Some(vec![1.0; 24]),
            window: Some(RawWindow {
                hours: Some(hours.into()),
                ..RawWindow::default()
            }),
            ..RawPacing::default()
        };
        CampaignPacing::from_raw(Some(&raw), &[])
            .unwrap()
            .default_rule()
            .clone()
    }

    fn ms(s: &str) -> i64 {
        DateTime::parse_from_rfc3339(s).unwrap().timestamp_millis()
    }

    #[test]
    fn capacity_counts_open_weekday_hours_up_to_the_end_date() {
        let tz: Tz = "Europe/Madrid".parse().unwrap();
        let r = rule("09:00-17:00");
        // Monday 2 Mar to Friday 6 Mar 2026: five days of eight hours at 60 an hour.
        let from = ms("2026-03-02T00:00:00+01:00");
        let c = DripCurve::build(&r, tz, from, NaiveDate::from_ymd_opt(2026, 3, 6).unwrap());
        assert_eq!(c.total(), 5 * 8 * 3_600_000 * 60);
        assert_eq!(c.at(from), 0);
        let tue_noon = ms("2026-03-03T12:00:00+01:00");
        assert_eq!(c.at(tue_noon), 11 * 3_600_000 * 60);
        assert_eq!(c.reach(c.at(tue_noon)), Some(tue_noon));
        // Capacity is flat overnight: reaching Tuesday's close lands at Tuesday 17:00, and a
        // hair more lands just after Wednesday 09:00.
        let tue_close = ms("2026-03-03T17:00:00+01:00");
        assert_eq!(c.reach(c.at(tue_close)), Some(tue_close));
        assert_eq!(
            c.reach(c.at(tue_close) + 1),
            Some(ms("2026-03-04T09:00:00+01:00") + 1)
        );
        assert_eq!(c.reach(c.total() + 1), None);
    }

    #[test]
    fn the_drip_spaces_letters_by_the_capacity_left_over_the_backlog() {
        let tz: Tz = "Europe/Madrid".parse().unwrap();
        let r = rule("09:00-17:00");
        let from = ms("2026-03-02T09:00:00+01:00");
        let c = DripCurve::build(&r, tz, from, NaiveDate::from_ymd_opt(2026, 3, 6).unwrap());
        // No letter yet: go now.
        assert_eq!(c.earliest(from, None, 40), from);
        // 39 left after one at 09:00 Monday: 40 hours / 40 = one an hour.
        assert_eq!(c.earliest(from, Some(from), 39), from + 3_600_000);
        // After the end date: no drip delay.
        let late = ms("2026-03-09T10:00:00+01:00");
        assert_eq!(c.earliest(late, Some(late - 1), 5), late);
    }
}
