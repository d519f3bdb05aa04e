//! The integration-test binary: one module per area.

mod browser;
mod smtp_server;
mod web;
mod web_helpers;
