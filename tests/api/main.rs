//! The one integration-test binary. Each module is a family of tests; `helpers` spawns the real
//! application (its own database, campaign folder and outbox per test), `web_helpers` the web
//! server on a free port, `db_helpers` gives each test its database (a temporary SQLite file, or
//! a fresh PostgreSQL database when `MISSIVE_TEST_DATABASE_URL` is set), and `smtp_server` is a
//! scripted SMTP server for fault cases.

mod db_helpers;
mod helpers;
mod smtp_server;
mod web_helpers;

mod aiosmtpd;
mod browser;
mod cli;
mod crash;
mod csv_import;
mod delivery;
mod deploy;
mod faults;
mod fleet_limits;
mod pacing;
mod python_email;
mod real_smtp;
mod relay_faults;
mod secrets;
mod signing;
mod smtp_client;
mod templates;
mod test_databases;
mod transitions;
mod web;
