//! Typed settings: `config/default.toml` (embedded in the binary) overlaid by an optional file
//! and then by `MISSIVE_<SECTION>__<KEY>` environment variables. Plain data plus the checks that
//! make a bad value fail at start-up with the key's name, never half-way through a batch.

use serde::Deserialize;
use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::time::Duration;

/// The defaults, shipped inside the binary so `missive` runs with no file at all.
pub const DEFAULT_TOML: &str = include_str!("../config/default.toml");

/// Everything Missive can be told.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Settings {
    pub database: DatabaseSettings,
    pub letters: LettersSettings,
    pub smtp: SmtpSettings,
    pub outbox: OutboxSettings,
    pub sending: SendingSettings,
    pub pacing: PacingSettings,
}

/// `[database]`
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DatabaseSettings {
    pub url: String,
    pub max_connections: u32,
}

/// `[letters]`
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LettersSettings {
    pub dir: PathBuf,
}

/// How to use STARTTLS on `smtp://` URLs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum StartTls {
    Required,
    Opportunistic,
    Off,
}

/// `[smtp]`
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SmtpSettings {
    pub url: String,
    pub starttls: StartTls,
    #[serde(default)]
    pub username: Option<String>,
    #[serde(default)]
    pub password: Option<String>,
    pub hello_name: String,
    pub connect_timeout_seconds: u64,
    pub send_timeout_seconds: u64,
    pub connections: usize,
    pub max_messages_per_connection: u32,
}

impl SmtpSettings {
    /// Time allowed to open and set up one connection.
    pub fn connect_timeout(&self) -> Duration {
        Duration::from_secs(self.connect_timeout_seconds)
    }

    /// Time allowed for one letter's whole conversation.
    pub fn send_timeout(&self) -> Duration {
        Duration::from_secs(self.send_timeout_seconds)
    }
}

/// `[outbox]`
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct OutboxSettings {
    pub dir: PathBuf,
}

/// `[sending]`
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SendingSettings {
    pub rate_per_second: f64,
    pub burst: u32,
    pub claim_batch: u32,
    pub lease_seconds: u64,
    pub retry_base_seconds: u64,
    pub retry_max_seconds: u64,
    pub max_age_hours: u64,
    pub throttle_cooldown_seconds: u64,
    pub in_doubt: InDoubtPolicy,
}

/// What happens to a letter whose fate is unknown (connection lost after the data).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum InDoubtPolicy {
    /// Keep it `in_doubt` until an organiser runs `missive resolve` (at most once).
    Hold,
    /// Retry it like a transient failure (at least once; a duplicate is possible).
    Resend,
}

/// `[pacing]`: limits over all campaigns (per-target pacing is in each campaign.toml).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PacingSettings {
    /// Letters per sliding hour to any one receiving domain.
    pub per_domain_per_hour: u32,
}

/// A setting that cannot be used, named by its key.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("cannot read config file {path}: {source}")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{0}")]
    Parse(String),
    #[error("`{key}` {problem}")]
    Invalid { key: &'static str, problem: String },
}

impl Settings {
    /// Loads the defaults, then `file` (if any), then the `MISSIVE_*` variables of `env`.
    ///
    /// `env` is passed in (rather than read here) so tests can load settings side by side.
    pub fn load(
        file: Option<&Path>,
        env: impl IntoIterator<Item = (String, String)>,
    ) -> Result<Settings, ConfigError> {
        let mut builder = config::Config::builder().add_source(config::File::from_str(
            DEFAULT_TOML,
            config::FileFormat::Toml,
        ));
        if let Some(path) = file {
            let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
                path: path.to_owned(),
                source,
            })?;
            let table: toml::Table = toml::from_str(&text)
                .map_err(|e| ConfigError::Parse(format!("{}: {}", path.display(), e.message())))?;
            if let Some(smtp) = table.get("smtp").and_then(|v| v.as_table()) {
                for secret in ["username", "password"] {
                    if smtp.contains_key(secret) {
                        return Err(ConfigError::Invalid {
                            key: if secret == "username" {
                                "smtp.username"
                            } else {
                                "smtp.password"
                            },
                            problem: format!(
                                "is set in {}; secrets are read only from the environment \
                                 (MISSIVE_SMTP__{})",
                                path.display(),
                                secret.to_uppercase()
                            ),
                        });
                    }
                }
            }
            builder = builder.add_source(config::File::from_str(&text, config::FileFormat::Toml));
        }
        // Only MISSIVE_<SECTION>__<KEY> variables are settings; MISSIVE_CONFIG and others are not.
        let vars: HashMap<String, String> = env
            .into_iter()
            .filter_map(|(k, v)| {
                let rest = k.strip_prefix("MISSIVE_")?;
                let (section, key) = rest.split_once("__")?;
                Some((
                    format!("{}.{}", section.to_lowercase(), key.to_lowercase()),
                    v,
                ))
            })
            .collect();
        for (key, value) in vars {
            builder = builder
                .set_override(key.clone(), value)
                .map_err(|e| ConfigError::Parse(format!("{key}: {e}")))?;
        }
        let settings: Settings = builder
            .build()
            .and_then(|c| c.try_deserialize())
            .map_err(|e| ConfigError::Parse(e.to_string()))?;
        settings.check()?;
        Ok(settings)
    }

    /// The limits the pacing scheduler applies over everything sent: the relay's rate and
    /// burst (`[sending]`) and the budget per receiving domain (`[pacing]`).
    pub fn pacing_limits(&self) -> Result<crate::pacing::GlobalLimits, ConfigError> {
        crate::pacing::GlobalLimits::new(
            self.sending.rate_per_second,
            self.sending.burst,
            self.pacing.per_domain_per_hour,
        )
        .map_err(|p| ConfigError::Invalid {
            key: p.key,
            problem: p.message,
        })
    }

    /// Loads settings the way the binary does: `--config`/`MISSIVE_CONFIG`, then the process
    /// environment.
    pub fn from_process(file: Option<&Path>) -> Result<Settings, ConfigError> {
        Settings::load(file, std::env::vars())
    }

    fn check(&self) -> Result<(), ConfigError> {
        let bad = |key, problem: &str| {
            Err(ConfigError::Invalid {
                key,
                problem: problem.to_owned(),
            })
        };
        let url = &self.database.url;
        if !(url.starts_with("sqlite:")
            || url.starts_with("postgres://")
            || url.starts_with("postgresql://"))
        {
            return bad(
                "database.url",
                "must start with sqlite: (e.g. sqlite://missive.db) or postgres://",
            );
        }
        if self.database.max_connections == 0 {
            return bad("database.max_connections", "must be at least 1");
        }
        if !(self.sending.rate_per_second > 0.0 && self.sending.rate_per_second.is_finite()) {
            return bad("sending.rate_per_second", "must be a positive number");
        }
        if self.sending.rate_per_second > 1_000_000.0 {
            return bad("sending.rate_per_second", "must be at most 1000000");
        }
        if self.pacing.per_domain_per_hour == 0 {
            return bad("pacing.per_domain_per_hour", "must be at least 1");
        }
        if self.sending.burst == 0 {
            return bad("sending.burst", "must be at least 1");
        }
        if self.sending.claim_batch == 0 {
            return bad("sending.claim_batch", "must be at least 1");
        }
        if self.sending.lease_seconds < 5 {
            return bad("sending.lease_seconds", "must be at least 5");
        }
        if self.sending.retry_base_seconds == 0
            || self.sending.retry_max_seconds < self.sending.retry_base_seconds
        {
            return bad(
                "sending.retry_base_seconds",
                "must be at least 1 and at most sending.retry_max_seconds",
            );
        }
        if self.smtp.connections == 0 {
            return bad("smtp.connections", "must be at least 1");
        }
        if self.smtp.max_messages_per_connection == 0 {
            return bad("smtp.max_messages_per_connection", "must be at least 1");
        }
        if self.smtp.send_timeout_seconds == 0 || self.smtp.connect_timeout_seconds == 0 {
            return bad(
                "smtp.send_timeout_seconds",
                "timeouts must be at least 1 second",
            );
        }
        if !self.smtp.url.trim().is_empty() {
            crate::mailer::SmtpEndpoint::parse(&self.smtp.url, self.smtp.starttls).map_err(
                |e| ConfigError::Invalid {
                    key: "smtp.url",
                    problem: e.to_string(),
                },
            )?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn env(pairs: &[(&str, &str)]) -> Vec<(String, String)> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    #[test]
    fn defaults_load_with_no_file_and_no_environment() {
        let s = Settings::load(None, env(&[])).unwrap();
        assert_eq!(s.database.url, "sqlite://missive.db");
        assert_eq!(s.smtp.url, "");
        assert_eq!(s.outbox.dir, PathBuf::from("outbox"));
    }

    #[test]
    fn environment_overrides_file_and_file_overrides_defaults() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("c.toml");
        std::fs::write(
            &path,
            "[sending]\nrate_per_second = 3.5\n[smtp]\nconnections = 2\n",
        )
        .unwrap();
        let s = Settings::load(
            Some(&path),
            env(&[
                ("MISSIVE_SMTP__CONNECTIONS", "7"),
                ("MISSIVE_SMTP__PASSWORD", "hunter2"),
                ("MISSIVE_CONFIG", "ignored.toml"),
            ]),
        )
        .unwrap();
        assert_eq!(s.sending.rate_per_second, 3.5);
        assert_eq!(s.smtp.connections, 7);
        assert_eq!(s.smtp.password.as_deref(), Some("hunter2"));
    }

    #[test]
    fn secrets_in_files_are_refused() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("c.toml");
        std::fs::write(&path, "[smtp]\npassword = \"x\"\n").unwrap();
        let err = Settings::load(Some(&path), env(&[]))
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("smtp.password") && err.contains("MISSIVE_SMTP__PASSWORD"),
            "{err}"
        );
    }

    #[test]
    fn bad_values_name_their_key() {
        let err = Settings::load(None, env(&[("MISSIVE_SENDING__RATE_PER_SECOND", "0")]))
            .unwrap_err()
            .to_string();
        assert!(err.contains("sending.rate_per_second"), "{err}");
        let err = Settings::load(None, env(&[("MISSIVE_DATABASE__URL", "mysql://x")]))
            .unwrap_err()
            .to_string();
        assert!(err.contains("database.url"), "{err}");
        let err = Settings::load(None, env(&[("MISSIVE_SMTP__URL", "http://x")]))
            .unwrap_err()
            .to_string();
        assert!(err.contains("smtp.url"), "{err}");
    }

    #[test]
    fn pacing_limits_come_from_sending_and_pacing_and_are_checked() {
        let s = Settings::load(None, env(&[])).unwrap();
        assert_eq!(s.pacing.per_domain_per_hour, 600);
        let limits = s.pacing_limits().unwrap();
        assert_eq!(limits.relay_interval_ms(), 50);
        assert_eq!(limits.relay_burst(), 20);
        let err = Settings::load(None, env(&[("MISSIVE_PACING__PER_DOMAIN_PER_HOUR", "0")]))
            .unwrap_err()
            .to_string();
        assert!(err.contains("pacing.per_domain_per_hour"), "{err}");
    }

    #[test]
    fn unknown_keys_in_a_file_are_errors() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("c.toml");
        std::fs::write(&path, "[sending]\nrate_per_secnd = 3\n").unwrap();
        let err = Settings::load(Some(&path), env(&[]))
            .unwrap_err()
            .to_string();
        assert!(err.contains("rate_per_secnd"), "{err}");
    }
}
