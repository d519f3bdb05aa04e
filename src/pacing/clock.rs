//! Reading a target's local clock from a UTC instant (milliseconds since the epoch): whether its
//! sending window is open, when it next opens, and where the local hours and the open stretches
//! begin and end, across daylight-saving changes.
//!
//! The rule is "what the local wall clock shows": the window is open while the clock shows a
//! time in `[start, end)` on an open day. Times skipped when clocks go forward are never shown,
//! so a window starting at a skipped time opens at the first later time shown; times shown twice
//! when clocks go back are open twice. Offsets are read from `chrono-tz`; the moment an offset
//! changes is found by bisection, so nothing here assumes whole-hour offsets.

use super::policy::Window;
use chrono::{NaiveDate, Offset, TimeZone};
use chrono_tz::Tz;

pub(crate) const MS_PER_HOUR: i64 = 3_600_000;
pub(crate) const MS_PER_DAY: i64 = 86_400_000;
/// Days from 0001-01-01 (day 1 in chrono's count) to 1970-01-01.
const CE_TO_UNIX_DAYS: i64 = 719_163;
/// How far ahead `next_open` looks before answering "never" (about ten years).
const SEARCH_DAYS: usize = 3_700;

/// The offset of `tz` from UTC at `t`, in milliseconds; `None` for instants chrono cannot hold.
pub(crate) fn offset_ms(tz: Tz, t: i64) -> Option<i64> {
    let utc = chrono::DateTime::from_timestamp_millis(t)?.naive_utc();
    Some(i64::from(tz.offset_from_utc_datetime(&utc).fix().local_minus_utc()) * 1000)
}

/// The end of the stretch of constant offset that starts at `t`: the first instant after `t`
/// with another offset, or `t` plus one day if the offset is the same then (zones change their
/// offset at most once in a day).
fn constant_until(tz: Tz, t: i64, offset: i64) -> i64 {
    let probe = t.saturating_add(MS_PER_DAY);
    if offset_ms(tz, probe) == Some(offset) {
        return probe;
    }
    // Bisect for the first instant in (t, probe] with another offset.
    let (mut lo, mut hi) = (t, probe);
    while hi - lo > 1 {
        let mid = lo + (hi - lo) / 2;
        if offset_ms(tz, mid) == Some(offset) {
            lo = mid;
        } else {
            hi = mid;
        }
    }
    hi
}

/// A local date from days since 1970-01-01.
pub(crate) fn date_of_day(day: i64) -> Option<NaiveDate> {
    let ce = i32::try_from(day.checked_add(CE_TO_UNIX_DAYS)?).ok()?;
    NaiveDate::from_num_days_from_ce_opt(ce)
}

/// The local wall-clock reading at `t`: milliseconds since 1970-01-01T00:00 local.
pub(crate) fn local_ms(tz: Tz, t: i64) -> Option<i64> {
    t.checked_add(offset_ms(tz, t)?)
}

/// The local date at `t`.
pub(crate) fn local_date(tz: Tz, t: i64) -> Option<NaiveDate> {
    date_of_day(local_ms(tz, t)?.div_euclid(MS_PER_DAY))
}

/// The local hour (0..=23) at `t`.
pub(crate) fn local_hour(tz: Tz, t: i64) -> Option<usize> {
    Some((local_ms(tz, t)?.rem_euclid(MS_PER_DAY) / MS_PER_HOUR) as usize)
}

/// Whether `w` is open at `t` on the clock of `tz`.
pub(crate) fn is_open(w: &Window, tz: Tz, t: i64) -> bool {
    let Some(l) = local_ms(tz, t) else {
        return false;
    };
    let time = l.rem_euclid(MS_PER_DAY);
    date_of_day(l.div_euclid(MS_PER_DAY)).is_some_and(|d| w.is_open_day(d))
        && w.start_ms() <= time
        && time < w.end_ms()
}

/// The first instant at or after `t` at which `w` is open; `None` if it never opens in the
/// next ten years (or `t` is out of range).
pub(crate) fn next_open(w: &Window, tz: Tz, t: i64) -> Option<i64> {
    let mut cur = t;
    // Each stretch of constant offset is at most a day long, and spans at most two local dates.
    for _ in 0..SEARCH_DAYS {
        let offset = offset_ms(tz, cur)?;
        let until = constant_until(tz, cur, offset);
        let (from_local, until_local) = (cur.checked_add(offset)?, until.checked_add(offset)?);
        let mut day = from_local.div_euclid(MS_PER_DAY);
        while day * MS_PER_DAY < until_local {
            if date_of_day(day).is_some_and(|d| w.is_open_day(d)) {
                let lo = from_local.max(day * MS_PER_DAY + w.start_ms());
                let hi = until_local.min(day * MS_PER_DAY + w.end_ms());
                if lo < hi {
                    return Some(lo - offset);
                }
            }
            day += 1;
        }
        cur = until;
    }
    None
}

/// For an instant `t` at which `w` is open: the end of the run of instants from `t` that are
/// open and share `t`'s local hour and offset. Within a run, the hourly budget is constant.
pub(crate) fn run_end(w: &Window, tz: Tz, t: i64) -> Option<i64> {
    let offset = offset_ms(tz, t)?;
    let l = t.checked_add(offset)?;
    let next_hour = (l.div_euclid(MS_PER_HOUR) + 1) * MS_PER_HOUR;
    let close = l.div_euclid(MS_PER_DAY) * MS_PER_DAY + w.end_ms();
    let end_local = next_hour.min(close);
    Some((end_local - offset).min(constant_until(tz, t, offset)))
}

/// The next instant after `t` at which the local hour may change (a local hour boundary or an
/// offset change).
pub(crate) fn next_hour_change(tz: Tz, t: i64) -> Option<i64> {
    let offset = offset_ms(tz, t)?;
    let l = t.checked_add(offset)?;
    let next_hour = (l.div_euclid(MS_PER_HOUR) + 1) * MS_PER_HOUR - offset;
    Some(next_hour.min(constant_until(tz, t, offset)))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::pacing::policy::{CampaignPacing, RawPacing, RawWindow};
    use chrono::{DateTime, Utc};

    fn window(days: &[&str], hours: &str, holidays: &[&str]) -> Window {
        let raw = RawPacing {
            window: Some(RawWindow {
                days: Some(days.iter().map(|s| s.to_string()).collect()),
                hours: Some(hours.into()),
                holidays: Some(holidays.iter().map(|s| s.to_string()).collect()),
            }),
            curve: Some(vec![1.0; 24]),
            ..RawPacing::default()
        };
        CampaignPacing::from_raw(Some(&raw), &[])
            .unwrap()
            .default_rule()
            .window()
            .clone()
    }

    fn ms(s: &str) -> i64 {
        DateTime::parse_from_rfc3339(s).unwrap().timestamp_millis()
    }

    fn show(t: i64, tz: Tz) -> String {
        DateTime::<Utc>::from_timestamp_millis(t)
            .unwrap()
            .with_timezone(&tz)
            .to_rfc3339()
    }

    const ALL: [&str; 7] = ["mon", "tue", "wed", "thu", "fri", "sat", "sun"];

    #[test]
    fn the_window_opens_on_the_next_working_morning_and_skips_holidays() {
        let tz: Tz = "America/Mexico_City".parse().unwrap();
        let w = window(&ALL[..5], "09:00-18:00", &["2026-12-25"]);
        // Thursday 24 Dec 2026, 18:00 local: closed; Friday is a holiday; next is Monday 28th.
        let t = ms("2026-12-24T18:00:00-06:00");
        assert!(!is_open(&w, tz, t));
        assert!(is_open(&w, tz, t - 1));
        let next = next_open(&w, tz, t).unwrap();
        assert_eq!(show(next, tz), "2026-12-28T09:00:00-06:00");
        // Already open: now.
        let mid = ms("2026-12-28T11:22:33-06:00");
        assert_eq!(next_open(&w, tz, mid), Some(mid));
    }

    #[test]
    fn in_madrid_a_window_starting_at_a_skipped_time_opens_when_the_clock_jumps() {
        // 29 Mar 2026: Madrid goes from 02:00 CET straight to 03:00 CEST (01:00 UTC).
        let tz: Tz = "Europe/Madrid".parse().unwrap();
        let w = window(&ALL, "02:30-04:00", &[]);
        let next = next_open(&w, tz, ms("2026-03-28T23:00:00Z")).unwrap();
        assert_eq!(show(next, tz), "2026-03-29T03:00:00+02:00");
        assert_eq!(next, ms("2026-03-29T01:00:00Z"));
        // It is open for one real hour that day, 03:00-04:00 CEST.
        assert!(is_open(&w, tz, next));
        assert!(!is_open(&w, tz, ms("2026-03-29T02:00:00Z")));
        // A window wholly inside the skipped hour does not open that day.
        let gap = window(&ALL, "02:10-02:50", &[]);
        let next = next_open(&gap, tz, ms("2026-03-28T23:00:00Z")).unwrap();
        assert_eq!(show(next, tz), "2026-03-30T02:10:00+02:00");
    }

    #[test]
    fn in_toronto_times_shown_twice_when_clocks_go_back_are_open_twice() {
        // 1 Nov 2026: Toronto shows 01:00-02:00 twice (EDT, then EST): a 25-hour day.
        let tz: Tz = "America/Toronto".parse().unwrap();
        let w = window(&ALL, "01:15-01:45", &[]);
        let first = next_open(&w, tz, ms("2026-11-01T00:00:00-04:00")).unwrap();
        assert_eq!(show(first, tz), "2026-11-01T01:15:00-04:00");
        let close = ms("2026-11-01T01:45:00-04:00");
        assert!(!is_open(&w, tz, close));
        let second = next_open(&w, tz, close).unwrap();
        assert_eq!(show(second, tz), "2026-11-01T01:15:00-05:00");
        assert_eq!(second - first, MS_PER_HOUR);
    }

    #[test]
    fn open_time_on_days_of_23_and_25_hours_follows_the_wall_clock() {
        // Count the open minutes of a whole-day window on DST days in Toronto.
        let tz: Tz = "America/Toronto".parse().unwrap();
        let w = window(&ALL, "00:00-24:00", &[]);
        let open_minutes = |from: &str, to: &str| {
            let (mut t, end) = (ms(from), ms(to));
            let mut n = 0;
            while t < end {
                n += i64::from(is_open(&w, tz, t));
                t += 60_000;
            }
            n
        };
        // 8 Mar 2026 (spring forward) is 23 hours long; 1 Nov 2026 is 25.
        assert_eq!(
            open_minutes("2026-03-08T00:00:00-05:00", "2026-03-09T00:00:00-04:00"),
            23 * 60
        );
        assert_eq!(
            open_minutes("2026-11-01T00:00:00-04:00", "2026-11-02T00:00:00-05:00"),
            25 * 60
        );
    }

    #[test]
    fn runs_split_at_local_hours_window_ends_and_offset_changes() {
        let tz: Tz = "America/Toronto".parse().unwrap();
        let w = window(&ALL, "09:00-17:30", &[]);
        let t = ms("2026-06-01T16:10:00-04:00");
        assert_eq!(
            show(run_end(&w, tz, t).unwrap(), tz),
            "2026-06-01T17:00:00-04:00"
        );
        let t = ms("2026-06-01T17:10:00-04:00");
        assert_eq!(
            show(run_end(&w, tz, t).unwrap(), tz),
            "2026-06-01T17:30:00-04:00"
        );
        // Kolkata is UTC+5:30: local hours start at half past UTC hours.
        let k: Tz = "Asia/Kolkata".parse().unwrap();
        let t = ms("2026-06-01T10:10:00+05:30");
        assert_eq!(
            next_hour_change(k, t),
            Some(ms("2026-06-01T11:00:00+05:30"))
        );
        // Spring forward in Toronto: 01:30 EST, next change is the jump at 02:00 (to 03:00 EDT).
        let t = ms("2026-03-08T01:30:00-05:00");
        let c = next_hour_change(tz, t).unwrap();
        assert_eq!(show(c, tz), "2026-03-08T03:00:00-04:00");
        assert_eq!(local_hour(tz, c), Some(3));
    }

    #[test]
    fn a_window_that_never_opens_is_never_and_extreme_instants_do_not_panic() {
        let tz: Tz = "Europe/Madrid".parse().unwrap();
        let holidays: Vec<String> = (0..7)
            .map(|i| {
                (NaiveDate::from_ymd_opt(2026, 1, 5).unwrap() + chrono::Days::new(i)).to_string()
            })
            .collect();
        let h: Vec<&str> = holidays.iter().map(String::as_str).collect();
        let w = window(&["mon"], "09:00-10:00", &h);
        // Monday 5 Jan is a holiday, the next Monday is open.
        let next = next_open(&w, tz, ms("2026-01-05T00:00:00+01:00")).unwrap();
        assert_eq!(show(next, tz), "2026-01-12T09:00:00+01:00");
        assert_eq!(next_open(&w, tz, i64::MAX), None);
        assert_eq!(next_open(&w, tz, i64::MIN), None);
        assert!(!is_open(&w, tz, i64::MAX));
        assert_eq!(local_hour(tz, i64::MIN), None);
    }
}
