//! Scenario and property tests of the scheduler: weeks of sending simulated in milliseconds,
//! every send checked against each limit by code independent of the scheduler's own (sliding
//! hours counted from the list of sends, windows read with chrono's own time-zone conversion).

use super::*;
use crate::domain::{EmailAddress, TargetId};
use chrono::{Datelike, NaiveDate, NaiveTime, TimeZone, Utc};
use chrono_tz::Tz;
use proptest::prelude::*;
use std::collections::BTreeSet;

const HOUR: i64 = 3_600_000;

/// A target as a test describes it, kept as text so the checks below read the window anew.
#[derive(Debug, Clone)]
struct T {
    campaign: String,
    id: String,
    address: String,
    tz: Tz,
    per_hour: u32,
    spacing_s: u32,
    days: Vec<&'static str>,
    hours: (u32, u32),
    holidays: Vec<NaiveDate>,
    drip_until: Option<NaiveDate>,
    backlog: u64,
    /// Every hour the same budget, instead of the default working-day curve.
    flat: bool,
}

impl T {
    fn new(id: &str, address: &str, tz: &str) -> T {
        T {
            campaign: "c".into(),
            id: id.into(),
            address: address.into(),
            tz: tz.parse().unwrap(),
            per_hour: 60,
            spacing_s: 20,
            days: vec!["mon", "tue", "wed", "thu", "fri"],
            hours: (9 * 60, 18 * 60),
            holidays: Vec::new(),
            drip_until: None,
            backlog: 0,
            flat: false,
        }
    }

    fn rule(&self) -> PacingRule {
        let hm = |m: u32| format!("{:02}:{:02}", m / 60, m % 60);
        let raw = RawPacing {
            per_hour: Some(self.per_hour.into()),
            min_spacing_seconds: Some(self.spacing_s.into()),
            curve: self.flat.then(|| vec![1.0; 24]),
            window: Some(RawWindow {
                days: Some(self.days.iter().map(|d| d.to_string()).collect()),
                hours: Some(format!("{}-{}", hm(self.hours.0), hm(self.hours.1))),
                holidays: Some(self.holidays.iter().map(|d| d.to_string()).collect()),
            }),
            ..RawPacing::default()
        };
        CampaignPacing::from_raw(Some(&raw), &[])
            .unwrap()
            .default_rule()
            .clone()
    }

    /// Independent of `clock`: chrono converts the instant, and the rule is read from text.
    fn allows(&self, t: i64) -> bool {
        let local = Utc.timestamp_millis_opt(t).unwrap().with_timezone(&self.tz);
        let day = ["mon", "tue", "wed", "thu", "fri", "sat", "sun"]
            [local.weekday().num_days_from_monday() as usize];
        let minute = local
            .time()
            .signed_duration_since(NaiveTime::MIN)
            .num_minutes() as u32;
        self.days.contains(&day)
            && !self.holidays.contains(&local.date_naive())
            && self.hours.0 <= minute
            && minute < self.hours.1
    }
}

struct Setup {
    targets: Vec<T>,
    rate: f64,
    burst: u32,
    per_domain: u32,
}

impl Setup {
    fn scheduler(&self, now: i64) -> (Scheduler, Vec<TargetKey>) {
        let limits = GlobalLimits::new(self.rate, self.burst, self.per_domain).unwrap();
        let mut s = Scheduler::new(limits);
        let keys = self
            .targets
            .iter()
            .map(|t| {
                let address = EmailAddress::parse(&t.address).unwrap();
                let rule = t.rule();
                let k = s.add_target(
                    TargetSpec {
                        campaign: &t.campaign,
                        target: &t.id,
                        address: &address,
                        time_zone: t.tz,
                        rule: &rule,
                        drip_until: t.drip_until,
                    },
                    dt(now),
                );
                s.set_backlog(k, t.backlog);
                k
            })
            .collect();
        (s, keys)
    }
}

fn dt(t: i64) -> DateTime<Utc> {
    DateTime::from_timestamp_millis(t).unwrap()
}

fn ms(s: &str) -> i64 {
    chrono::DateTime::parse_from_rfc3339(s)
        .unwrap()
        .timestamp_millis()
}

fn simulate(s: &mut Scheduler, from: i64, until: i64) -> Vec<(TargetKey, i64)> {
    let mut sends = Vec::new();
    s.simulate(dt(from), dt(until), |k, at, _| {
        sends.push((k, at.timestamp_millis()))
    });
    sends
}

/// Largest number of instants from `times` (sorted) in any half-open window `(x - len, x]`.
fn max_in_window(times: &[i64], len: i64) -> usize {
    let mut best = 0;
    let mut lo = 0;
    for hi in 0..times.len() {
        while times[lo] <= times[hi] - len {
            lo += 1;
        }
        best = best.max(hi - lo + 1);
    }
    best
}

/// Checks every send against every limit; returns a description of the first breach.
fn breaches(setup: &Setup, keys: &[TargetKey], sends: &[(TargetKey, i64)]) -> Option<String> {
    let target = |k: TargetKey| &setup.targets[keys.iter().position(|x| *x == k).unwrap()];
    let mut all: Vec<i64> = sends.iter().map(|s| s.1).collect();
    all.sort();
    // Relay: a GCRA allows at most burst + len/interval in any closed window of length len.
    let interval = (1000.0 / setup.rate).ceil() as i64;
    for len in [1_000, 60_000, HOUR] {
        let allowed = setup.burst as usize + (len / interval) as usize;
        if max_in_window(&all, len + 1) > allowed {
            return Some(format!("relay exceeded {allowed} in {len} ms"));
        }
    }
    let addresses: BTreeSet<String> = setup
        .targets
        .iter()
        .map(|t| t.address.to_lowercase())
        .collect();
    for a in &addresses {
        let mut times: Vec<(i64, TargetKey)> = sends
            .iter()
            .filter(|(k, _)| target(*k).address.to_lowercase() == *a)
            .map(|(k, t)| (*t, *k))
            .collect();
        times.sort();
        let only: Vec<i64> = times.iter().map(|x| x.0).collect();
        // Each send: the hour ending with it holds no more than the sender's budget then.
        for (i, (t, k)) in times.iter().enumerate() {
            let tg = target(*k);
            let rule = tg.rule();
            let local_hour = Utc.timestamp_millis_opt(*t).unwrap().with_timezone(&tg.tz);
            let cap = rule.hour_cap(chrono::Timelike::hour(&local_hour) as usize) as usize;
            let in_hour = only[..=i].iter().filter(|x| **x > t - HOUR).count();
            if in_hour > cap {
                return Some(format!("{a}: {in_hour} in the hour to {} > {cap}", dt(*t)));
            }
            if i > 0 && t - only[i - 1] < i64::from(tg.spacing_s) * 1000 {
                return Some(format!("{a}: spacing broken at {}", dt(*t)));
            }
            if !tg.allows(*t) {
                return Some(format!(
                    "{} sent outside its window at {}",
                    tg.id,
                    dt(*t).with_timezone(&tg.tz)
                ));
            }
        }
        let peak = setup
            .targets
            .iter()
            .filter(|t| t.address.to_lowercase() == *a)
            .map(|t| t.per_hour)
            .max()
            .unwrap_or(0) as usize;
        if max_in_window(&only, HOUR) > peak {
            return Some(format!("{a}: over {peak} in a sliding hour"));
        }
    }
    let domains: BTreeSet<&str> = setup
        .targets
        .iter()
        .map(|t| t.address.rsplit_once('@').unwrap().1)
        .collect();
    for d in domains {
        let mut times: Vec<i64> = sends
            .iter()
            .filter(|(k, _)| target(*k).address.ends_with(&format!("@{d}")))
            .map(|s| s.1)
            .collect();
        times.sort();
        if max_in_window(&times, HOUR) > setup.per_domain as usize {
            return Some(format!(
                "domain {d}: over {} in a sliding hour",
                setup.per_domain
            ));
        }
    }
    None
}

fn mexico_holidays() -> Vec<NaiveDate> {
    [
        "2026-01-01",
        "2026-02-02",
        "2026-03-16",
        "2026-05-01",
        "2026-09-16",
        "2026-11-16",
        "2026-12-25",
        "2027-01-01",
        "2027-02-01",
        "2027-03-15",
        "2027-05-01",
        "2027-09-16",
        "2027-11-15",
        "2027-12-25",
    ]
    .iter()
    .map(|d| d.parse().unwrap())
    .collect()
}

#[test]
fn a_crowd_of_signers_never_floods_a_target_a_domain_or_the_relay() {
    let mut a = T::new(
        "presidency",
        "presidency@gob.example",
        "America/Mexico_City",
    );
    let mut b = T::new("interior", "interior@gob.example", "America/Mexico_City");
    let mut c = T::new(
        "commission",
        "commission@cndh.example",
        "America/Mexico_City",
    );
    for t in [&mut a, &mut b, &mut c] {
        t.backlog = 3_000;
        t.holidays = mexico_holidays();
    }
    c.per_hour = 20;
    let setup = Setup {
        targets: vec![a, b, c],
        rate: 2.0,
        burst: 5,
        per_domain: 90,
    };
    let from = ms("2026-09-11T16:00:00-06:00"); // a Friday afternoon; the 16th is a holiday
    let (mut s, keys) = setup.scheduler(from);
    let sends = simulate(&mut s, from, from + 28 * 24 * HOUR);
    assert_eq!(breaches(&setup, &keys, &sends), None);
    // The shared domain binds: the two gob.example targets share 90 an hour.
    let plan_sent: usize = sends.len();
    assert!(plan_sent > 5_000, "only {plan_sent} sent");
    assert!(sends.iter().all(|(_, t)| {
        let d = dt(*t).with_timezone(&setup.targets[0].tz).date_naive();
        d != NaiveDate::from_ymd_opt(2026, 9, 16).unwrap()
    }));
}

#[test]
fn nothing_goes_outside_a_targets_hours_across_daylight_saving_changes() {
    // Windows around the changes: Toronto 8 Mar and 1 Nov 2026, Madrid 29 Mar and 25 Oct.
    let mut targets = Vec::new();
    for (i, (tz, hours)) in [
        ("America/Toronto", (60, 180)),
        ("America/Toronto", (90, 150)),
        ("Europe/Madrid", (120, 240)),
        ("Europe/Madrid", (150, 210)),
    ]
    .into_iter()
    .enumerate()
    {
        let mut t = T::new(&format!("t{i}"), &format!("t{i}@d{i}.example"), tz);
        t.days = vec!["mon", "tue", "wed", "thu", "fri", "sat", "sun"];
        t.hours = hours;
        t.spacing_s = 0;
        t.backlog = 100_000;
        targets.push(t);
    }
    let setup = Setup {
        targets,
        rate: 50.0,
        burst: 50,
        per_domain: 1_000,
    };
    for (from, days) in [("2026-03-07T00:00:00Z", 25), ("2026-10-24T00:00:00Z", 10)] {
        let from = ms(from);
        let (mut s, keys) = setup.scheduler(from);
        let sends = simulate(&mut s, from, from + days * 24 * HOUR);
        assert_eq!(breaches(&setup, &keys, &sends), None);
        // On the day clocks go back, 01:00-03:00 in Toronto is three real hours long.
        let toronto = setup.targets[0].tz;
        let fall_back = NaiveDate::from_ymd_opt(2026, 11, 1).unwrap();
        let on_day = |k: TargetKey, d: NaiveDate| {
            sends
                .iter()
                .filter(|(x, t)| *x == k && dt(*t).with_timezone(&toronto).date_naive() == d)
                .count()
        };
        if days == 10 {
            assert_eq!(on_day(keys[0], fall_back), 3 * 60);
            assert_eq!(on_day(keys[0], fall_back.pred_opt().unwrap()), 2 * 60);
        } else {
            // Spring forward: 02:00-03:00 does not exist, so only 01:00-02:00 and nothing else.
            let d = NaiveDate::from_ymd_opt(2026, 3, 8).unwrap();
            assert_eq!(on_day(keys[0], d), 60);
        }
    }
}

#[test]
fn holidays_and_weekends_get_no_letters_and_the_plan_shows_it() {
    let mut t = T::new("interior", "interior@gob.example", "America/Mexico_City");
    t.holidays = mexico_holidays();
    t.backlog = 5_000;
    let setup = Setup {
        targets: vec![t],
        rate: 20.0,
        burst: 20,
        per_domain: 600,
    };
    let from = ms("2026-12-21T00:00:00-06:00");
    let (s, _) = setup.scheduler(from);
    let plan = s.plan(dt(from), dt(from + 30 * 24 * HOUR));
    let days: Vec<NaiveDate> = plan[0].per_day.iter().map(|d| d.0).collect();
    for skipped in ["2026-12-25", "2026-12-26", "2026-12-27", "2027-01-01"] {
        assert!(!days.contains(&skipped.parse().unwrap()), "{skipped}");
    }
    assert!(days.contains(&"2026-12-24".parse().unwrap()));
    // 60 an hour at the peak, shaped by the curve: at most 9 x 60 a day.
    let (last, full) = plan[0].per_day.split_last().unwrap();
    assert!(full.iter().all(|d| d.1 <= 9 * 60 && d.1 > 300), "{full:?}");
    assert!(last.1 > 0 && plan[0].left_over == 0);
}

#[test]
fn drip_mode_spreads_the_backlog_evenly_and_finishes_by_the_end_date() {
    let mut t = T::new("interior", "interior@gob.example", "Europe/Madrid");
    t.backlog = 450;
    t.drip_until = NaiveDate::from_ymd_opt(2026, 3, 13);
    let setup = Setup {
        targets: vec![t],
        rate: 20.0,
        burst: 20,
        per_domain: 600,
    };
    // Monday 2 Mar to Friday 13 Mar 2026, crossing no DST change: ten working days.
    let from = ms("2026-03-02T00:00:00+01:00");
    let (s, keys) = setup.scheduler(from);
    let plan = s.plan(dt(from), dt(from + 30 * 24 * HOUR));
    let p = &plan[0];
    assert_eq!(p.left_over, 0);
    assert_eq!(p.per_day.len(), 10, "{:?}", p.per_day);
    let last = p.last_at.unwrap().with_timezone(&setup.targets[0].tz);
    assert!(last.date_naive() <= NaiveDate::from_ymd_opt(2026, 3, 13).unwrap());
    // Even: every day within a couple of letters of 45.
    assert!(
        p.per_day.iter().all(|d| (43..=47).contains(&d.1)),
        "{:?}",
        p.per_day
    );
    let mut copy = s.clone();
    let sends = simulate(&mut copy, from, from + 30 * 24 * HOUR);
    assert_eq!(breaches(&setup, &keys, &sends), None);
}

#[test]
fn drip_mode_never_breaks_the_caps_when_the_end_date_is_too_near() {
    let mut t = T::new("interior", "interior@gob.example", "Europe/Madrid");
    t.backlog = 2_000;
    t.drip_until = NaiveDate::from_ymd_opt(2026, 3, 31);
    let setup = Setup {
        targets: vec![t.clone()],
        rate: 20.0,
        burst: 20,
        per_domain: 600,
    };
    let from = ms("2026-03-02T00:00:00+01:00");
    let (mut s, keys) = setup.scheduler(from);
    // Two days in, the organiser moves the end date to the next day.
    let mid = from + 2 * 24 * HOUR;
    let mut sends = simulate(&mut s, from, mid);
    let before = sends.len();
    assert!(before < 200, "drip sent {before} in two days of a month");
    let address = EmailAddress::parse(&t.address).unwrap();
    let rule = t.rule();
    s.add_target(
        TargetSpec {
            campaign: &t.campaign,
            target: &t.id,
            address: &address,
            time_zone: t.tz,
            rule: &rule,
            drip_until: NaiveDate::from_ymd_opt(2026, 3, 5),
        },
        dt(mid),
    );
    sends.extend(simulate(&mut s, mid, from + 20 * 24 * HOUR));
    assert_eq!(breaches(&setup, &keys, &sends), None);
    // The last two days ran at the caps (not a flood), and the rest drained after the date.
    let per_day = |d: u32| {
        sends
            .iter()
            .filter(|(_, x)| dt(*x).with_timezone(&t.tz).day() == d)
            .count()
    };
    assert!(per_day(4) > 400 && per_day(4) <= 480, "{}", per_day(4));
    assert_eq!(sends.len(), 2_000);
}

/// A worker's loop over the public API: at each instant, every target in key order sends
/// while it may; then the clock jumps to the earliest slot any target is given.
fn run_by_hand(s: &mut Scheduler, from: i64, until: i64) -> Vec<(TargetKey, i64)> {
    let keys: Vec<TargetKey> = s.keys().collect();
    let mut now = dt(from);
    let mut sends = Vec::new();
    loop {
        let mut next: Option<DateTime<Utc>> = None;
        for &k in &keys {
            while s.backlog(k) > 0 {
                match s.next_slot(k, now) {
                    Slot::Now => {
                        s.record_send(k, now);
                        sends.push((k, now.timestamp_millis()));
                    }
                    Slot::At(at) => {
                        next = Some(next.map_or(at, |n| n.min(at)));
                        break;
                    }
                    Slot::Paused | Slot::Never => break,
                }
            }
        }
        match next {
            Some(at) if at.timestamp_millis() <= until => now = at,
            _ => return sends,
        }
    }
}

#[test]
fn the_plan_forecasts_exactly_what_a_run_sends() {
    let mut a = T::new("a", "a@one.example", "America/Mexico_City");
    let mut b = T::new("b", "b@one.example", "Europe/Madrid");
    let mut c = T::new("c", "c@two.example", "America/Toronto");
    a.backlog = 700;
    b.backlog = 900;
    c.backlog = 300;
    c.drip_until = NaiveDate::from_ymd_opt(2026, 3, 20);
    b.spacing_s = 0;
    let setup = Setup {
        targets: vec![a, b, c],
        rate: 0.5,
        burst: 3,
        per_domain: 70,
    };
    let from = ms("2026-03-04T12:00:00Z");
    let until = from + 20 * 24 * HOUR;
    let (s, keys) = setup.scheduler(from);
    let plan = s.plan(dt(from), dt(until));
    let mut run = s.clone();
    let sends = run_by_hand(&mut run, from, until);
    assert_eq!(breaches(&setup, &keys, &sends), None);
    for p in &plan {
        let mine: Vec<i64> = sends.iter().filter(|s| s.0 == p.key).map(|s| s.1).collect();
        assert_eq!(p.queued - p.left_over, mine.len() as u64, "{}", p.target);
        assert_eq!(
            p.first_at.map(|t| t.timestamp_millis()),
            mine.first().copied()
        );
        assert_eq!(
            p.last_at.map(|t| t.timestamp_millis()),
            mine.last().copied()
        );
        let tz = setup.targets[p.key.index()].tz;
        let mut per_day: Vec<(NaiveDate, u32)> = Vec::new();
        for t in &mine {
            let d = dt(*t).with_timezone(&tz).date_naive();
            match per_day.last_mut() {
                Some((last, n)) if *last == d => *n += 1,
                _ => per_day.push((d, 1)),
            }
        }
        assert_eq!(p.per_day, per_day, "{}", p.target);
    }
    let mut simulated = Vec::new();
    s.clone().simulate(dt(from), dt(until), |k, t, _| {
        simulated.push((k, t.timestamp_millis()))
    });
    assert_eq!(simulated, sends);
}

#[test]
fn restored_sends_allow_no_burst_after_a_restart() {
    let mut t = T::new("interior", "Interior@Gob.example", "America/Mexico_City");
    t.days = vec!["mon", "tue", "wed", "thu", "fri", "sat", "sun"];
    t.hours = (0, 24 * 60);
    t.per_hour = 10;
    t.flat = true;
    t.spacing_s = 0;
    t.backlog = 100;
    let setup = Setup {
        targets: vec![t],
        rate: 20.0,
        burst: 20,
        per_domain: 15,
    };
    let now = ms("2026-06-10T12:00:00-06:00");
    let (mut s, keys) = setup.scheduler(now);
    assert_eq!(s.next_slot(keys[0], dt(now)), Slot::Now);
    // Ten letters to the address and five more to its domain in the last 40 minutes.
    let first = now - 40 * 60_000;
    let mut recent: Vec<(&str, &str, Millis)> = (0..10)
        .map(|i| ("interior@gob.example", "gob.example", first + i * 60_000))
        .collect();
    recent.extend((0..5).map(|i| ("other@GOB.example", "GOB.example", now - i * 1000)));
    s.restore(recent);
    // The address's hour is full until the first restored send is an hour old.
    assert_eq!(s.next_slot(keys[0], dt(now)), Slot::At(dt(first + HOUR)));
    // A new target at another address of the same domain meets the domain's full hour.
    let other = EmailAddress::parse("press@gob.example").unwrap();
    let rule = setup.targets[0].rule();
    let k = s.add_target(
        TargetSpec {
            campaign: "c",
            target: "press",
            address: &other,
            time_zone: setup.targets[0].tz,
            rule: &rule,
            drip_until: None,
        },
        dt(now),
    );
    assert_eq!(s.next_slot(k, dt(now)), Slot::At(dt(first + HOUR)));
}

#[test]
fn paused_targets_and_campaigns_are_skipped() {
    let mut a = T::new("a", "a@one.example", "America/Mexico_City");
    let mut b = T::new("b", "b@two.example", "America/Mexico_City");
    a.backlog = 10;
    b.backlog = 10;
    b.campaign = "other".into();
    let setup = Setup {
        targets: vec![a, b],
        rate: 20.0,
        burst: 20,
        per_domain: 600,
    };
    let now = ms("2026-06-10T12:00:00-05:00");
    let (mut s, keys) = setup.scheduler(now);
    s.set_paused([
        Pause::Target {
            campaign: "c".into(),
            target: "a".into(),
        },
        Pause::Campaign("other".into()),
    ]);
    assert_eq!(s.next_slot(keys[0], dt(now)), Slot::Paused);
    assert_eq!(s.next_slot(keys[1], dt(now)), Slot::Paused);
    let plan = s.plan(dt(now), dt(now + 24 * HOUR));
    assert!(plan
        .iter()
        .all(|p| p.paused && p.left_over == 10 && p.per_day.is_empty()));
    s.set_paused([]);
    assert_eq!(s.next_slot(keys[0], dt(now)), Slot::Now);
}

#[test]
fn a_key_from_elsewhere_is_never_and_bad_instants_do_not_panic() {
    let setup = Setup {
        targets: vec![T::new("a", "a@one.example", "America/Mexico_City")],
        rate: 20.0,
        burst: 20,
        per_domain: 600,
    };
    let now = ms("2026-06-10T12:00:00-05:00");
    let (mut s, _) = setup.scheduler(now);
    let (other, keys) = Setup {
        targets: vec![
            T::new("a", "a@one.example", "America/Mexico_City"),
            T::new("b", "b@one.example", "America/Mexico_City"),
        ],
        ..setup
    }
    .scheduler(now);
    assert_eq!(s.next_slot(keys[1], dt(now)), Slot::Never);
    let _ = s.next_slot(keys[0], DateTime::<Utc>::MAX_UTC);
    let _ = s.next_slot(keys[0], DateTime::<Utc>::MIN_UTC);
    s.record_send(keys[1], dt(now));
    s.restore([("x", "", i64::MIN), ("y", "y", i64::MAX)]);
    let _ = s.next_slot(keys[0], dt(now));
    drop(other);
}

/// The worked example of docs/pacing.md, kept true by this test.
#[test]
fn worked_example_twelve_thousand_signers_to_four_targets() {
    let targets: Vec<T> = [
        "presidency",
        "interior",
        "migration",
        "human-rights-commission",
    ]
    .iter()
    .map(|id| {
        let mut t = T::new(id, &format!("{id}@{id}.example"), "America/Mexico_City");
        t.holidays = mexico_holidays();
        t.backlog = 12_000;
        t
    })
    .collect();
    let setup = Setup {
        targets,
        rate: 20.0,
        burst: 20,
        per_domain: 600,
    };
    let from = ms("2026-04-06T09:00:00-06:00"); // Monday 6 April 2026
    let (s, _) = setup.scheduler(from);
    let plan = s.plan(dt(from), dt(from + 120 * 24 * HOUR));
    let p = &plan[0];
    let days = p.per_day.len();
    let full_day = p.per_day[1].1;
    let last = p.last_at.unwrap().with_timezone(&setup.targets[0].tz);
    eprintln!(
        "{days} days, {full_day} a full day, last at {last}, {:?}",
        &p.per_day[..3]
    );
    assert!(plan
        .iter()
        .all(|q| q.per_day == p.per_day && q.left_over == 0));
    // 474 a day (the default curve's hourly budgets over 09-18h), 26 working days, the last
    // letters on Tuesday 12 May 2026 (1 May is a holiday).
    assert_eq!((days, full_day), (26, 474));
    assert_eq!(
        last.date_naive(),
        NaiveDate::from_ymd_opt(2026, 5, 12).unwrap()
    );

    // With the example campaign's flat curve: 9 x 60 = 540 a day, 23 working days, the last
    // letter at 10:19:40 on Thursday 7 May (20 s apart, each hour's 60 take its first 20 minutes).
    let flat = Setup {
        targets: setup
            .targets
            .iter()
            .map(|t| T {
                flat: true,
                ..t.clone()
            })
            .collect(),
        ..setup
    };
    let (s, _) = flat.scheduler(from);
    let plan = s.plan(dt(from), dt(from + 120 * 24 * HOUR));
    let p = &plan[0];
    assert_eq!((p.per_day.len(), p.per_day[1].1), (23, 540));
    let last = p.last_at.unwrap().with_timezone(&flat.targets[0].tz);
    assert_eq!(last.to_rfc3339(), "2026-05-07T10:19:40-06:00");
}

#[test]
fn ten_thousand_decisions_take_well_under_a_second() {
    let targets: Vec<T> = (0..50)
        .map(|i| {
            let mut t = T::new(
                &format!("t{i}"),
                &format!("t{i}@d{}.example", i % 5),
                "Europe/Madrid",
            );
            t.backlog = 1_000;
            t
        })
        .collect();
    let setup = Setup {
        targets,
        rate: 20.0,
        burst: 20,
        per_domain: 600,
    };
    let from = ms("2026-03-02T08:00:00+01:00");
    let (mut s, keys) = setup.scheduler(from);
    let started = std::time::Instant::now();
    let mut now = from;
    for i in 0..10_000 {
        let k = keys[i % keys.len()];
        if s.next_slot(k, dt(now)) == Slot::Now {
            s.record_send(k, dt(now));
        }
        now += 500;
    }
    let took = started.elapsed();
    eprintln!("10,000 decisions in {took:?}");
    assert!(took.as_secs_f64() < 2.0, "{took:?}");
}

const ZONES: [&str; 4] = [
    "America/Mexico_City",
    "America/Toronto",
    "Europe/Madrid",
    "Asia/Kolkata",
];
const DAYS: [&str; 7] = ["mon", "tue", "wed", "thu", "fri", "sat", "sun"];

fn target_strategy() -> impl Strategy<Value = T> {
    (
        0..4usize,
        0..3usize,
        0..3usize,
        1..90u32,
        0..300u32,
        1..128u8,
        (0..48u32, 1..48u32),
        0..400u64,
        proptest::option::of(1..20u64),
        proptest::collection::vec(0..20u64, 0..3),
    )
        .prop_map(
            |(zone, addr, domain, per_hour, spacing_s, mask, (start, len), backlog, drip, hol)| {
                let mut t = T::new("x", &format!("a{addr}@d{domain}.example"), ZONES[zone]);
                t.per_hour = per_hour;
                t.spacing_s = spacing_s;
                t.days = (0..7)
                    .filter(|i| mask & (1 << i) != 0)
                    .map(|i| DAYS[i])
                    .collect();
                let start = start * 30;
                t.hours = (start, (start + len * 30).min(24 * 60));
                t.backlog = backlog;
                let base = NaiveDate::from_ymd_opt(2026, 3, 1).unwrap();
                t.drip_until = drip.map(|d| base + chrono::Days::new(d));
                t.holidays = hol
                    .into_iter()
                    .map(|d| base + chrono::Days::new(d))
                    .collect();
                t
            },
        )
        .prop_filter("the window must have hours", |t| t.hours.0 < t.hours.1)
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(32))]

    /// Whatever the policies, zones and backlogs: two weeks from late February (across the
    /// March DST changes of Toronto and Madrid) break no limit, and the plan is the run.
    #[test]
    fn no_policy_lets_any_limit_be_broken(
        mut targets in proptest::collection::vec(target_strategy(), 1..5),
        rate in prop_oneof![Just(0.2), Just(1.0), Just(20.0)],
        burst in 1..10u32,
        per_domain in 1..200u32,
        start_hour in 0..24i64,
    ) {
        for (i, t) in targets.iter_mut().enumerate() {
            t.id = format!("t{i}");
        }
        let setup = Setup { targets, rate, burst, per_domain };
        let from = ms("2026-02-26T00:00:00Z") + start_hour * HOUR;
        let until = from + 30 * 24 * HOUR;
        let (s, keys) = setup.scheduler(from);
        let plan = s.plan(dt(from), dt(until));
        let mut run = s.clone();
        let sends = run_by_hand(&mut run, from, until);
        prop_assert_eq!(breaches(&setup, &keys, &sends), None);
        for p in &plan {
            let n = sends.iter().filter(|s| s.0 == p.key).count() as u64;
            prop_assert_eq!(p.queued - p.left_over, n);
            prop_assert_eq!(
                p.last_at.map(|t| t.timestamp_millis()),
                sends.iter().rev().find(|s| s.0 == p.key).map(|s| s.1)
            );
        }
    }
}

#[test]
fn targets_without_an_override_get_the_campaigns_rule() {
    // CampaignPacing keys overrides by TargetId; a rule for an unknown id is the default.
    let p = CampaignPacing::from_raw(None, &[]).unwrap();
    assert_eq!(
        p.rule_for(&TargetId::parse("nobody").unwrap()),
        p.default_rule()
    );
}
