//! Pacing policy as data: the TOML shape of a campaign's `[pacing]` table and of a target's
//! `pacing = { ... }` override (`RawPacing`, `RawTargetPacing`, `RawWindow`), and the checked
//! values built from them (`CampaignPacing`, `PacingRule`, `Window`, `GlobalLimits`).
//!
//! Every value is checked here, once, with a message naming its key, so the scheduler never
//! meets a value it cannot use. Pure: no I/O, no clock.

use crate::domain::TargetId;
use chrono::{Datelike, NaiveDate, Weekday};
use serde::Deserialize;
use std::collections::{BTreeMap, BTreeSet};

/// Letters per hour to one target address when a campaign says nothing.
pub const DEFAULT_PER_HOUR: u32 = 60;
/// Seconds between two letters to the same address when a campaign says nothing.
pub const DEFAULT_MIN_SPACING_SECONDS: u32 = 20;
/// Sending hours when a campaign says nothing (local time of each target).
pub const DEFAULT_HOURS: &str = "09:00-17:00";
/// The largest `per_hour` accepted: one letter a second to a single mailbox is already a flood.
pub const MAX_PER_HOUR: u32 = 3_600;
/// The largest `min_spacing_seconds` accepted (one day).
pub const MAX_SPACING_SECONDS: u32 = 86_400;

/// The default hour-of-day curve: relative weights for local hours 0..23, a working-day shape
/// peaking mid-morning (10-12h) and early afternoon (15h), lighter at lunch and late in the day.
/// Outside the sending window the curve does not matter: nothing is sent there.
pub const DEFAULT_CURVE: [f64; 24] = [
    30.0, 30.0, 30.0, 30.0, 30.0, 30.0, 40.0, 55.0, // 00-07
    70.0, 85.0, 100.0, 100.0, 85.0, 75.0, 90.0, 100.0, // 08-15
    85.0, 70.0, 55.0, 45.0, 40.0, 35.0, 30.0, 30.0, // 16-23
];

const MS_PER_MINUTE: i64 = 60_000;

/// The `[pacing]` table of a `campaign.toml`, as written. Every key is optional.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawPacing {
    /// `false`: this campaign's letters are not paced per target (only the relay's rate and
    /// the domain caps apply). For deliveries to an organisation's own inbox, tests, benchmarks.
    pub enabled: Option<bool>,
    pub per_hour: Option<i64>,
    pub curve: Option<Vec<f64>>,
    pub min_spacing_seconds: Option<i64>,
    pub window: Option<RawWindow>,
    pub drip: Option<bool>,
    pub end_date: Option<String>,
}

/// A target's `pacing = { ... }` override, as written: each key given replaces the campaign's.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawTargetPacing {
    pub per_hour: Option<i64>,
    pub curve: Option<Vec<f64>>,
    pub min_spacing_seconds: Option<i64>,
    pub window: Option<RawWindow>,
}

/// `[pacing.window]`, as written: each key given replaces the default (or the campaign's).
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawWindow {
    pub days: Option<Vec<String>>,
    pub hours: Option<String>,
    pub holidays: Option<Vec<String>>,
}

/// One unusable pacing value, named by its key (and target, for an override).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{scope}{key} {message}")]
pub struct PacingProblem {
    /// `"target `id`: "` for a target's override, empty for the campaign's table.
    pub scope: String,
    /// The full key, e.g. `pacing.window.hours`.
    pub key: &'static str,
    pub message: String,
}

/// When a target may receive letters, read on the target's own clock: on `days`, outside
/// `holidays`, while the local clock shows a time in `[start, end)`.
///
/// Daylight saving follows from "what the local clock shows": a start time that does not exist
/// on the day the clocks go forward opens the window at the first later time that does; on the
/// day they go back, times shown twice are open twice.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Window {
    /// Indexed by days from Monday.
    days: [bool; 7],
    /// Minutes after local midnight, `start < end <= 1440`.
    start_minute: u16,
    end_minute: u16,
    holidays: BTreeSet<NaiveDate>,
}

impl Window {
    /// Whether letters may go on this local date at all (a listed weekday, not a holiday).
    pub fn is_open_day(&self, date: NaiveDate) -> bool {
        self.days[date.weekday().num_days_from_monday() as usize] && !self.holidays.contains(&date)
    }

    /// The local opening time, in milliseconds after midnight.
    pub(crate) fn start_ms(&self) -> i64 {
        i64::from(self.start_minute) * MS_PER_MINUTE
    }

    /// The local closing time, in milliseconds after midnight (exclusive; at most 24:00).
    pub(crate) fn end_ms(&self) -> i64 {
        i64::from(self.end_minute) * MS_PER_MINUTE
    }

    /// The local hours that overlap the window (0..=23).
    fn hours(&self) -> impl Iterator<Item = usize> + '_ {
        (0..24usize).filter(|&h| {
            let (from, to) = (h as u16 * 60, (h as u16 + 1) * 60);
            from < self.end_minute && to > self.start_minute
        })
    }

    /// The listed holidays.
    pub fn holidays(&self) -> &BTreeSet<NaiveDate> {
        &self.holidays
    }
}

/// The checked pacing of one target: its hourly budget shaped by the hour-of-day curve, the
/// minimum spacing between two letters to its address, and its sending window.
#[derive(Debug, Clone, PartialEq)]
pub struct PacingRule {
    per_hour: u32,
    /// The budget for each local hour (`per_hour` scaled by the curve), never above `per_hour`.
    hour_caps: [u32; 24],
    min_spacing_ms: i64,
    window: Window,
}

impl PacingRule {
    /// The peak hourly budget for the target's address.
    pub fn per_hour(&self) -> u32 {
        self.per_hour
    }

    /// The budget in the local hour `hour` (0..=23); 0 for anything else.
    pub fn hour_cap(&self, hour: usize) -> u32 {
        self.hour_caps.get(hour).copied().unwrap_or(0)
    }

    /// Milliseconds that must pass between two letters to the same address.
    pub fn min_spacing_ms(&self) -> i64 {
        self.min_spacing_ms
    }

    /// When letters may go.
    pub fn window(&self) -> &Window {
        &self.window
    }
}

impl Default for PacingRule {
    fn default() -> Self {
        let mut problems = Vec::new();
        Parts::default()
            .finish("", &mut problems)
            .unwrap_or_else(unreachable_default)
    }
}

/// The built-in defaults always pass their own checks (a unit test holds this); this is the
/// value used should they ever not, chosen to be harmless: nothing is ever sent.
fn unreachable_default() -> PacingRule {
    PacingRule {
        per_hour: 1,
        hour_caps: [0; 24],
        min_spacing_ms: 0,
        window: Window {
            days: [false; 7],
            start_minute: 0,
            end_minute: 1,
            holidays: BTreeSet::new(),
        },
    }
}

/// A campaign's pacing: the rule for its targets, overrides per target, and drip mode.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct CampaignPacing {
    enabled: bool,
    default: PacingRule,
    targets: BTreeMap<TargetId, PacingRule>,
    drip_until: Option<NaiveDate>,
}

impl CampaignPacing {
    /// Checks the campaign's `[pacing]` table and each target's override; reports every bad key.
    pub fn from_raw(
        campaign: Option<&RawPacing>,
        targets: &[(TargetId, Option<&RawTargetPacing>)],
    ) -> Result<CampaignPacing, Vec<PacingProblem>> {
        let mut problems = Vec::new();
        let empty = RawPacing::default();
        let raw = campaign.unwrap_or(&empty);
        let base = Parts::default().apply(
            Fields {
                per_hour: raw.per_hour,
                curve: raw.curve.as_deref(),
                min_spacing_seconds: raw.min_spacing_seconds,
                window: raw.window.as_ref(),
            },
            "",
            &mut problems,
        );
        let default = base.clone().finish("", &mut problems);

        let end_date = raw.end_date.as_deref().and_then(|s| {
            parse_date(s)
                .map_err(|m| problems.push(problem("", "pacing.end_date", m)))
                .ok()
        });
        let drip_until = match (raw.drip.unwrap_or(false), end_date) {
            (true, Some(d)) => Some(d),
            (true, None) if raw.end_date.is_none() => {
                problems.push(problem(
                    "",
                    "pacing.drip",
                    "needs pacing.end_date: the date by which every letter should have gone".into(),
                ));
                None
            }
            (false, Some(_)) => {
                problems.push(problem(
                    "",
                    "pacing.end_date",
                    "is only used in drip mode (hint: add `drip = true`, or remove end_date)"
                        .into(),
                ));
                None
            }
            _ => None,
        };

        let mut overrides = BTreeMap::new();
        for (id, raw) in targets {
            let Some(raw) = raw else { continue };
            let scope = format!("target `{id}`: ");
            let parts = base.apply(
                Fields {
                    per_hour: raw.per_hour,
                    curve: raw.curve.as_deref(),
                    min_spacing_seconds: raw.min_spacing_seconds,
                    window: raw.window.as_ref(),
                },
                &scope,
                &mut problems,
            );
            if let Some(rule) = parts.finish(&scope, &mut problems) {
                overrides.insert(id.clone(), rule);
            }
        }

        match default {
            Some(default) if problems.is_empty() => Ok(CampaignPacing {
                enabled: raw.enabled.unwrap_or(true),
                default,
                targets: overrides,
                drip_until,
            }),
            _ => Err(problems),
        }
    }

    /// The rule for the target `id` (its override, else the campaign's).
    pub fn rule_for(&self, id: &TargetId) -> &PacingRule {
        self.targets.get(id).unwrap_or(&self.default)
    }

    /// Whether letters are paced per target (`[pacing] enabled`, on unless set to false).
    pub fn enabled(&self) -> bool {
        self.enabled
    }

    /// The rule for targets without an override.
    pub fn default_rule(&self) -> &PacingRule {
        &self.default
    }

    /// In drip mode, the last local date (in each target's zone) on which letters should go.
    pub fn drip_until(&self) -> Option<NaiveDate> {
        self.drip_until
    }
}

/// Limits over everything Missive sends, from the global settings: the relay's rate and burst,
/// and the letters per hour to any one receiving domain.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct GlobalLimits {
    relay_interval_ms: i64,
    relay_burst: u32,
    per_domain_per_hour: u32,
}

impl GlobalLimits {
    /// Checks the limits: a positive finite `relay_per_second` (at most 1,000,000), a burst and
    /// a domain budget of at least 1. The scheduler counts the relay in whole milliseconds, so
    /// above 1,000 letters/s its relay bucket allows 1,000/s plus the burst; the worker's own
    /// rate limiter enforces the exact relay rate.
    pub fn new(
        relay_per_second: f64,
        relay_burst: u32,
        per_domain_per_hour: u32,
    ) -> Result<GlobalLimits, PacingProblem> {
        if !(relay_per_second.is_finite() && relay_per_second > 0.0 && relay_per_second <= 1e6) {
            return Err(problem(
                "",
                "sending.rate_per_second",
                "must be a positive number up to 1000000".into(),
            ));
        }
        if relay_burst == 0 {
            return Err(problem("", "sending.burst", "must be at least 1".into()));
        }
        if per_domain_per_hour == 0 {
            return Err(problem(
                "",
                "pacing.per_domain_per_hour",
                "must be at least 1".into(),
            ));
        }
        // Rounded up: the relay never goes faster than asked.
        let relay_interval_ms = (1000.0 / relay_per_second).ceil().max(1.0) as i64;
        Ok(GlobalLimits {
            relay_interval_ms,
            relay_burst,
            per_domain_per_hour,
        })
    }

    /// The same limits with the relay left out (it never binds): for a worker whose senders
    /// already enforce the relay's exact rate.
    pub fn without_relay(self) -> GlobalLimits {
        GlobalLimits {
            relay_interval_ms: 1,
            relay_burst: u32::MAX / 2,
            ..self
        }
    }

    /// Milliseconds between two letters through the relay once its burst is spent.
    pub fn relay_interval_ms(&self) -> i64 {
        self.relay_interval_ms
    }

    /// Letters the relay may take at once after an idle spell.
    pub fn relay_burst(&self) -> u32 {
        self.relay_burst
    }

    /// Letters per sliding hour to any one receiving domain, across all campaigns.
    pub fn per_domain_per_hour(&self) -> u32 {
        self.per_domain_per_hour
    }
}

fn problem(scope: &str, key: &'static str, message: String) -> PacingProblem {
    PacingProblem {
        scope: scope.to_owned(),
        key,
        message,
    }
}

/// The values a rule is made of, before the curve is turned into hourly budgets.
#[derive(Debug, Clone)]
struct Parts {
    per_hour: u32,
    curve: [f64; 24],
    min_spacing_seconds: u32,
    days: [bool; 7],
    start_minute: u16,
    end_minute: u16,
    holidays: BTreeSet<NaiveDate>,
}

impl Default for Parts {
    fn default() -> Self {
        Parts {
            per_hour: DEFAULT_PER_HOUR,
            curve: DEFAULT_CURVE,
            min_spacing_seconds: DEFAULT_MIN_SPACING_SECONDS,
            days: [true, true, true, true, true, false, false],
            start_minute: 9 * 60,
            end_minute: 17 * 60,
            holidays: BTreeSet::new(),
        }
    }
}

/// The keys a campaign and a target override have in common.
struct Fields<'a> {
    per_hour: Option<i64>,
    curve: Option<&'a [f64]>,
    min_spacing_seconds: Option<i64>,
    window: Option<&'a RawWindow>,
}

impl Parts {
    /// These parts with every key given in `f` replaced; bad values are reported and skipped.
    fn apply(&self, f: Fields<'_>, scope: &str, problems: &mut Vec<PacingProblem>) -> Parts {
        let mut out = self.clone();
        let mut bad = |key, message: String| problems.push(problem(scope, key, message));
        if let Some(n) = f.per_hour {
            match u32::try_from(n) {
                Ok(n) if (1..=MAX_PER_HOUR).contains(&n) => out.per_hour = n,
                _ => bad(
                    "pacing.per_hour",
                    format!(
                        "must be a whole number from 1 to {MAX_PER_HOUR}, not {n} \
                         (hint: to stop a target, pause it)"
                    ),
                ),
            }
        }
        if let Some(curve) = f.curve {
            if curve.len() != 24 {
                bad(
                    "pacing.curve",
                    format!(
                        "must list 24 weights, one per local hour from 00h to 23h (it has {})",
                        curve.len()
                    ),
                );
            } else if curve.iter().any(|w| !(w.is_finite() && *w >= 0.0)) {
                bad(
                    "pacing.curve",
                    "weights must be numbers of at least 0".into(),
                );
            } else {
                out.curve.copy_from_slice(curve);
            }
        }
        if let Some(s) = f.min_spacing_seconds {
            match u32::try_from(s) {
                Ok(s) if s <= MAX_SPACING_SECONDS => out.min_spacing_seconds = s,
                _ => bad(
                    "pacing.min_spacing_seconds",
                    format!("must be a whole number from 0 to {MAX_SPACING_SECONDS}, not {s}"),
                ),
            }
        }
        if let Some(w) = f.window {
            if let Some(days) = &w.days {
                let mut set = [false; 7];
                let mut ok = !days.is_empty();
                for d in days {
                    match parse_weekday(d) {
                        Some(wd) => set[wd.num_days_from_monday() as usize] = true,
                        None => ok = false,
                    }
                }
                if ok {
                    out.days = set;
                } else {
                    bad(
                        "pacing.window.days",
                        format!(
                            "must list at least one of \"mon\", \"tue\", \"wed\", \"thu\", \
                             \"fri\", \"sat\", \"sun\" (got {days:?})"
                        ),
                    );
                }
            }
            if let Some(hours) = &w.hours {
                match parse_hours(hours) {
                    Some((s, e)) => (out.start_minute, out.end_minute) = (s, e),
                    None => bad(
                        "pacing.window.hours",
                        format!(
                            "`{}` must be two local times such as \"09:00-17:00\", the first \
                             before the second (at most \"24:00\")",
                            hours.escape_debug()
                        ),
                    ),
                }
            }
            if let Some(holidays) = &w.holidays {
                let mut set = BTreeSet::new();
                for h in holidays {
                    match parse_date(h) {
                        Ok(d) => {
                            set.insert(d);
                        }
                        Err(m) => bad("pacing.window.holidays", m),
                    }
                }
                out.holidays = set;
            }
        }
        out
    }

    /// The rule, with hourly budgets; `None` (and a problem) if no hour of the window has any.
    fn finish(self, scope: &str, problems: &mut Vec<PacingProblem>) -> Option<PacingRule> {
        let window = Window {
            days: self.days,
            start_minute: self.start_minute,
            end_minute: self.end_minute,
            holidays: self.holidays,
        };
        // The peak of the curve within the window gets the full budget.
        let peak = window
            .hours()
            .map(|h| self.curve[h])
            .fold(0.0_f64, f64::max);
        if peak <= 0.0 {
            problems.push(problem(
                scope,
                "pacing.curve",
                "is zero in every hour of pacing.window.hours, so nothing could ever be sent \
                 (hint: to stop a target, pause it)"
                    .into(),
            ));
            return None;
        }
        let mut hour_caps = [0u32; 24];
        for (h, cap) in hour_caps.iter_mut().enumerate() {
            let w = self.curve[h];
            if w > 0.0 {
                // Rounded up, so a small but non-zero weight still allows a letter.
                let scaled = (f64::from(self.per_hour) * w / peak).ceil();
                *cap = (scaled.min(f64::from(self.per_hour))) as u32;
            }
        }
        Some(PacingRule {
            per_hour: self.per_hour,
            hour_caps,
            min_spacing_ms: i64::from(self.min_spacing_seconds) * 1000,
            window,
        })
    }
}

fn parse_weekday(s: &str) -> Option<Weekday> {
    Some(match s {
        "mon" => Weekday::Mon,
        "tue" => Weekday::Tue,
        "wed" => Weekday::Wed,
        "thu" => Weekday::Thu,
        "fri" => Weekday::Fri,
        "sat" => Weekday::Sat,
        "sun" => Weekday::Sun,
        _ => return None,
    })
}

/// `"HH:MM-HH:MM"` to minutes after midnight, start before end, end at most 24:00.
fn parse_hours(s: &str) -> Option<(u16, u16)> {
    let (a, b) = s.trim().split_once('-')?;
    let minutes = |t: &str| -> Option<u16> {
        let (h, m) = t.trim().split_once(':')?;
        if h.len() != 2 || m.len() != 2 {
            return None;
        }
        let (h, m): (u16, u16) = (h.parse().ok()?, m.parse().ok()?);
        (h < 24 && m < 60 || h == 24 && m == 0).then_some(h * 60 + m)
    };
    let (start, end) = (minutes(a)?, minutes(b)?);
    (start < end).then_some((start, end))
}

fn parse_date(s: &str) -> Result<NaiveDate, String> {
    NaiveDate::parse_from_str(s.trim(), "%Y-%m-%d").map_err(|_| {
        format!(
            "`{}` is not a date written as \"YYYY-MM-DD\"",
            s.escape_debug()
        )
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn id(s: &str) -> TargetId {
        TargetId::parse(s).unwrap()
    }

    fn raw(toml_text: &str) -> RawPacing {
        toml::from_str(toml_text).unwrap()
    }

    #[test]
    fn pacing_defaults_are_a_weekday_working_day_at_sixty_an_hour() {
        let p = CampaignPacing::from_raw(None, &[]).unwrap();
        let r = p.default_rule();
        assert_eq!(r.per_hour(), 60);
        assert_eq!(r.min_spacing_ms(), 20_000);
        assert_eq!(r.hour_cap(10), 60);
        assert!(r.hour_cap(9) < 60 && r.hour_cap(9) > 0);
        assert!(r
            .window()
            .is_open_day(NaiveDate::from_ymd_opt(2026, 3, 2).unwrap())); // Monday
        assert!(!r
            .window()
            .is_open_day(NaiveDate::from_ymd_opt(2026, 3, 1).unwrap())); // Sunday
        assert_eq!(PacingRule::default(), *r);
        assert_eq!(p.drip_until(), None);
    }

    #[test]
    fn pacing_keys_are_read_and_targets_override_them_key_by_key() {
        let c = raw(r#"
            per_hour = 30
            min_spacing_seconds = 60
            drip = true
            end_date = "2026-06-30"
            [window]
            days = ["mon", "wed"]
            hours = "10:00-16:30"
            holidays = ["2026-05-01"]
        "#);
        let t: RawTargetPacing = toml::from_str(
            r#"per_hour = 10
window = { hours = "08:00-12:00" }"#,
        )
        .unwrap();
        let p =
            CampaignPacing::from_raw(Some(&c), &[(id("a"), Some(&t)), (id("b"), None)]).unwrap();
        assert_eq!(p.drip_until(), NaiveDate::from_ymd_opt(2026, 6, 30));
        let b = p.rule_for(&id("b"));
        assert_eq!((b.per_hour(), b.min_spacing_ms()), (30, 60_000));
        assert_eq!(b.window().end_ms(), (16 * 60 + 30) * 60_000);
        let a = p.rule_for(&id("a"));
        assert_eq!((a.per_hour(), a.min_spacing_ms()), (10, 60_000));
        assert_eq!(a.window().start_ms(), 8 * 3_600_000);
        // Days and holidays were not overridden: the campaign's hold.
        assert_eq!(a.window().days, b.window().days);
        assert_eq!(a.window().holidays().len(), 1);
        // The curve peaks within 08-12 at 10-11h.
        assert_eq!(a.hour_cap(10), 10);
    }

    #[test]
    fn bad_pacing_values_are_reported_by_key_and_target() {
        let c = raw(r#"
            per_hour = 0
            min_spacing_seconds = -1
            curve = [1, 2]
            end_date = "2026-02-30"
            [window]
            days = ["monday"]
            hours = "17:00-09:00"
            holidays = ["25/12/2026"]
        "#);
        let t = RawTargetPacing {
            per_hour: Some(1_000_000),
            ..RawTargetPacing::default()
        };
        let errs = CampaignPacing::from_raw(Some(&c), &[(id("x"), Some(&t))]).unwrap_err();
        let text: Vec<String> = errs.iter().map(ToString::to_string).collect();
        for key in [
            "pacing.per_hour",
            "pacing.min_spacing_seconds",
            "pacing.curve",
            "pacing.end_date",
            "pacing.window.days",
            "pacing.window.hours",
            "pacing.window.holidays",
            "target `x`: pacing.per_hour",
        ] {
            assert!(
                text.iter().any(|t| t.starts_with(key)),
                "{key} missing from {text:#?}"
            );
        }
    }

    #[test]
    fn drip_needs_an_end_date_and_an_end_date_needs_drip() {
        let e = CampaignPacing::from_raw(Some(&raw("drip = true")), &[]).unwrap_err();
        assert_eq!(e[0].key, "pacing.drip");
        let e = CampaignPacing::from_raw(Some(&raw("end_date = \"2026-01-01\"")), &[]).unwrap_err();
        assert_eq!(e[0].key, "pacing.end_date");
    }

    #[test]
    fn a_curve_that_is_zero_throughout_the_window_is_refused() {
        let mut curve = vec![0.0; 24];
        curve[20] = 1.0;
        let c = RawPacing {
            curve: Some(curve),
            ..RawPacing::default()
        };
        let e = CampaignPacing::from_raw(Some(&c), &[]).unwrap_err();
        assert_eq!(e[0].key, "pacing.curve");
    }

    #[test]
    fn a_small_non_zero_weight_still_allows_one_letter_an_hour() {
        let mut curve = vec![100.0; 24];
        curve[9] = 0.1;
        curve[10] = 0.0;
        let c = RawPacing {
            per_hour: Some(5),
            curve: Some(curve),
            ..RawPacing::default()
        };
        let r = CampaignPacing::from_raw(Some(&c), &[]).unwrap();
        assert_eq!(r.default_rule().hour_cap(9), 1);
        assert_eq!(r.default_rule().hour_cap(10), 0);
        assert_eq!(r.default_rule().hour_cap(11), 5);
        assert_eq!(r.default_rule().hour_cap(99), 0);
    }

    #[test]
    fn hours_parse_strictly() {
        assert_eq!(parse_hours("09:00-17:00"), Some((540, 1020)));
        assert_eq!(parse_hours("00:00-24:00"), Some((0, 1440)));
        for bad in [
            "9-17",
            "09:00",
            "17:00-09:00",
            "09:00-09:00",
            "24:30-25:00",
            "aa:bb-cc:dd",
            "",
        ] {
            assert_eq!(parse_hours(bad), None, "{bad}");
        }
    }

    #[test]
    fn global_limits_refuse_unusable_values_by_key() {
        assert_eq!(
            GlobalLimits::new(0.0, 1, 1).unwrap_err().key,
            "sending.rate_per_second"
        );
        assert_eq!(
            GlobalLimits::new(f64::NAN, 1, 1).unwrap_err().key,
            "sending.rate_per_second"
        );
        assert_eq!(
            GlobalLimits::new(1.0, 0, 1).unwrap_err().key,
            "sending.burst"
        );
        assert_eq!(
            GlobalLimits::new(1.0, 1, 0).unwrap_err().key,
            "pacing.per_domain_per_hour"
        );
        assert_eq!(
            GlobalLimits::new(3.0, 1, 1).unwrap().relay_interval_ms(),
            334
        );
    }
}
