//! Pacing: letters reach each target as a steady, bounded stream in its working hours, however
//! many people sign at once, so no official's mail server ever sees a flood and blocks the
//! campaign.
//!
//! Pure and deterministic: no I/O, no tokio, no database, no clock. Every function takes the
//! time as a parameter (`DateTime<Utc>`, or queue milliseconds for sends read from the
//! database), so tests run weeks of sending in milliseconds and the forecast (`plan`) is the
//! run. Depends on `domain` only; `letters` reads policies into it and the worker asks it.
//!
//! - `policy`: the `[pacing]` keys of campaign.toml and the global limits, checked;
//! - `clock`: a target's sending window on its own clock, across daylight-saving changes;
//! - `limits`: sliding-hour logs, spacing and the relay's token bucket;
//! - `drip`: spreading a backlog evenly up to an end date;
//! - `scheduler`: all limits together (`next_slot`, `record_send`, `restore`);
//! - `plan`: the projected schedule, by simulating the scheduler.

mod clock;
mod drip;
mod limits;
mod plan;
mod policy;
mod scheduler;
#[cfg(test)]
mod tests;

pub use plan::TargetPlan;
pub use policy::{
    CampaignPacing, GlobalLimits, PacingProblem, PacingRule, RawPacing, RawTargetPacing, RawWindow,
    Window, DEFAULT_CURVE, DEFAULT_HOURS, DEFAULT_MIN_SPACING_SECONDS, DEFAULT_PER_HOUR,
    MAX_PER_HOUR, MAX_SPACING_SECONDS,
};
pub use scheduler::{Pause, Scheduler, Slot, TargetKey, TargetSpec};

use chrono::{DateTime, Utc};

/// Milliseconds since the Unix epoch, as the queue stores times (`letters.sent_at`,
/// `attempts.started_at`).
pub type Millis = i64;

fn from_millis(t: Millis) -> Option<DateTime<Utc>> {
    DateTime::from_timestamp_millis(t)
}
