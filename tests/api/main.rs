//! The one integration-test binary. Each module is a family of tests; `helpers` spawns the real
//! application (its own temporary SQLite file, campaign folder and outbox per test),
//! `web_helpers` the web server on a free port, and `smtp_server` is a scripted SMTP server for
//! fault cases.

mod helpers;
mod smtp_server;
mod web_helpers;

mod aiosmtpd;
mod browser;
mod cli;
mod crash;
mod csv_import;
mod delivery;
mod faults;
mod pacing;
mod python_email;
mod real_smtp;
mod relay_faults;
mod secrets;
mod signing;
mod smtp_client;
mod templates;
mod transitions;
mod web;
