//! Missive: signatures on urgent actions become personalised letters to the authorities a
//! campaign targets, queued durably, paced, sent over SMTP and tracked letter by letter.
//!
//! Modules by domain, dependencies pointing one way:
//! `domain` <- `pacing` (pure) <- `letters`, `queue`, `mailer` <- `intake`, `worker` <- `startup`
//! <- `commands`.

pub mod cli;
pub mod commands;
pub mod config;
pub mod domain;
pub mod intake;
pub mod letters;
pub mod mailer;
pub mod pacing;
pub mod queue;
pub mod startup;
pub mod telemetry;
pub mod worker;
