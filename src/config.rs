//! Typed settings: `config/default.toml` (embedded in the binary) overlaid by an optional file
//! and then by `MISSIVE_<SECTION>__<KEY>` environment variables. Plain data plus the checks that
//! make a bad value fail at start-up with the key's name, never half-way through a batch; checks
//! that need another module's knowledge (the SMTP URL, the CA file) live in that module.
//!
//! Secrets (`smtp.password`, `http.api_keys`, `http.secret`) are read only from the environment
//! and held as `SecretString`, whose `Debug` prints `[REDACTED]`: printing the settings, or
//! anything holding them, never shows one. Code exposes a secret only where it is used.
//! `redact_url` is the one place a URL is made fit to show (its password becomes `***`).
//!
//! Depends on `domain` (the address policy) and `pacing` (for its limits' checks) only.

use crate::domain::AddressPolicy;
use secrecy::{ExposeSecret as _, SecretString};
use serde::Deserialize;
use std::collections::HashMap;
use std::net::IpAddr;
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
    pub http: HttpSettings,
}

/// `[database]`
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DatabaseSettings {
    pub url: String,
    pub max_connections: u32,
    /// PostgreSQL: apply pending migrations when a process starts (else `missive migrate`
    /// does, and a process finding them pending stops). SQLite always migrates its file.
    pub migrate_on_start: bool,
}

impl DatabaseSettings {
    /// `url` fit to show in output and logs: its password, if any, is `***`.
    pub fn redacted_url(&self) -> String {
        redact_url(&self.url)
    }
}

/// What stands in for a password in a URL that is shown.
const REDACTED: &str = "***";

/// `url` fit to show in output, logs and errors: a password in it (`user:PASSWORD@host`, or a
/// `password` query parameter) becomes `***`; the user, host, port, path and other parameters
/// stay, and a URL with no password is returned as written. A URL that does not parse, or has
/// an `@` but no host, keeps only its scheme and what follows its last `@`, up to any query,
/// which becomes `?***`: where its password would end cannot be known.
pub fn redact_url(url: &str) -> String {
    let Ok(mut parsed) = url::Url::parse(url) else {
        return redact_unparsed(url);
    };
    if !parsed.has_host() && url.contains('@') {
        // `scheme:user:password@host` parses as a path; a password may still be in it.
        return redact_unparsed(url);
    }
    let mut changed = false;
    if parsed.password().is_some() {
        if parsed.set_password(Some(REDACTED)).is_err() {
            return redact_unparsed(url);
        }
        changed = true;
    }
    if parsed
        .query_pairs()
        .any(|(name, _)| is_password_parameter(&name))
    {
        let pairs: Vec<(String, String)> = parsed
            .query_pairs()
            .map(|(name, value)| {
                let value = if is_password_parameter(&name) {
                    REDACTED.to_owned()
                } else {
                    value.into_owned()
                };
                (name.into_owned(), value)
            })
            .collect();
        parsed.query_pairs_mut().clear().extend_pairs(pairs);
        changed = true;
    }
    if changed {
        parsed.to_string()
    } else {
        url.to_owned()
    }
}

/// `password`, `sslpassword` and the like, as libpq-style URLs may carry them.
fn is_password_parameter(name: &str) -> bool {
    name.to_ascii_lowercase().contains("password")
}

fn redact_unparsed(url: &str) -> String {
    let (scheme, rest) = match url.split_once("://") {
        Some((scheme, rest)) => (format!("{scheme}://"), rest),
        None => (String::new(), url),
    };
    let (rest, query) = match rest.split_once('?') {
        Some((rest, _)) => (rest, format!("?{REDACTED}")),
        None => (rest, String::new()),
    };
    match rest.rfind('@') {
        Some(at) => format!("{scheme}{REDACTED}{}{query}", &rest[at..]),
        None => format!("{scheme}{rest}{query}"),
    }
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
    /// From `MISSIVE_SMTP__PASSWORD` only.
    #[serde(default)]
    pub password: Option<SecretString>,
    pub hello_name: String,
    pub connect_timeout_seconds: u64,
    pub send_timeout_seconds: u64,
    pub connections: usize,
    pub max_messages_per_connection: u32,
    /// A PEM file of extra trust anchors (a private relay's CA); empty: the public roots only.
    pub ca_file: PathBuf,
    /// The relay accepts SMTPUTF8 (RFC 6531), so addresses with UTF-8 before the `@` are taken.
    pub smtputf8: bool,
}

impl SmtpSettings {
    /// Which addresses the doors take in and campaigns may name, from `smtputf8`.
    pub fn address_policy(&self) -> AddressPolicy {
        AddressPolicy::from_smtputf8(self.smtputf8)
    }

    /// `ca_file`, if one is set.
    pub fn ca_file(&self) -> Option<&Path> {
        (!self.ca_file.as_os_str().is_empty()).then_some(self.ca_file.as_path())
    }

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

/// `[http]`: the web intake (action pages, the form, the JSON API).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HttpSettings {
    pub bind: String,
    pub base_url: String,
    pub frame_ancestors: String,
    pub sign_per_minute: u32,
    pub sign_burst: u32,
    pub api_per_second: u32,
    pub api_burst: u32,
    /// The reverse proxies whose `X-Forwarded-For` is believed.
    pub trusted_proxies: TrustedProxies,
    pub confirm_expiry_days: u32,
    /// Comma-separated API keys; from `MISSIVE_HTTP__API_KEYS` only.
    #[serde(default)]
    pub api_keys: Option<SecretString>,
    /// The key signing confirmation links and form tokens; from `MISSIVE_HTTP__SECRET` only.
    #[serde(default)]
    pub secret: Option<SecretString>,
}

impl HttpSettings {
    /// The API keys, trimmed, empty entries dropped, each still secret.
    pub fn api_key_list(&self) -> Vec<SecretString> {
        self.api_keys
            .as_ref()
            .map(|keys| keys.expose_secret())
            .unwrap_or_default()
            .split(',')
            .map(str::trim)
            .filter(|k| !k.is_empty())
            .map(SecretString::from)
            .collect()
    }

    /// The sites allowed to frame the embeddable form.
    pub fn frame_ancestor_list(&self) -> Vec<String> {
        self.frame_ancestors
            .split_whitespace()
            .map(str::to_owned)
            .collect()
    }

    /// Whether supporters reach us over HTTPS (cookies are then `Secure`).
    pub fn is_https(&self) -> bool {
        self.base_url.starts_with("https://")
    }
}

/// `http.trusted_proxies`: the reverse proxies in front of Missive, as IP addresses and CIDR
/// ranges. Only a request whose TCP peer is one of them has its `X-Forwarded-For` read (by
/// `intake::web`). In a file it is an array of strings; in `MISSIVE_HTTP__TRUSTED_PROXIES`, one
/// string with the entries separated by commas. Parsed at load, so a bad entry stops start-up.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct TrustedProxies(Vec<ipnet::IpNet>);

impl TrustedProxies {
    /// Parses entries such as `127.0.0.1`, `::1` or `10.0.0.0/8`, skipping blank ones; the
    /// error names the first entry that is not an address or a range.
    pub fn parse<'a>(entries: impl IntoIterator<Item = &'a str>) -> Result<TrustedProxies, String> {
        let mut nets = Vec::new();
        for entry in entries.into_iter().map(str::trim).filter(|e| !e.is_empty()) {
            nets.push(parse_proxy(entry)?);
        }
        Ok(TrustedProxies(nets))
    }

    /// Whether no proxy is trusted.
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// Whether `ip` is a trusted proxy. An IPv4-mapped IPv6 address (`::ffff:10.0.0.1`, as a
    /// socket bound to `[::]` sees IPv4 peers) counts as its IPv4 address.
    pub fn contains(&self, ip: IpAddr) -> bool {
        let ip = ip.to_canonical();
        self.0.iter().any(|net| net.contains(&ip))
    }
}

fn parse_proxy(entry: &str) -> Result<ipnet::IpNet, String> {
    let not_one = || {
        format!(
            "entry `{}` is not an IP address or a CIDR range (hint: write addresses \
             such as 127.0.0.1 or ::1 and ranges such as 10.0.0.0/8 or fd00::/8)",
            entry.escape_debug()
        )
    };
    if entry.contains('/') {
        let net: ipnet::IpNet = entry.parse().map_err(|_| not_one())?;
        if net != net.trunc() {
            return Err(format!(
                "entry `{entry}` has bits set past its prefix length (hint: write {})",
                net.trunc()
            ));
        }
        Ok(net)
    } else {
        let ip: IpAddr = entry.parse().map_err(|_| not_one())?;
        Ok(ipnet::IpNet::from(ip.to_canonical()))
    }
}

impl<'de> Deserialize<'de> for TrustedProxies {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        /// A TOML array of strings, or one comma-separated string (from the environment).
        struct Entries;

        impl<'de> serde::de::Visitor<'de> for Entries {
            type Value = Vec<String>;

            fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str("a list of IP addresses and CIDR ranges, or one string of them separated by commas")
            }

            fn visit_str<E: serde::de::Error>(self, v: &str) -> Result<Vec<String>, E> {
                Ok(v.split(',').map(str::to_owned).collect())
            }

            fn visit_seq<A: serde::de::SeqAccess<'de>>(
                self,
                mut seq: A,
            ) -> Result<Vec<String>, A::Error> {
                let mut entries = Vec::new();
                while let Some(entry) = seq.next_element::<String>()? {
                    entries.push(entry);
                }
                Ok(entries)
            }
        }

        let entries = d.deserialize_any(Entries)?;
        // The `config` crate adds "for key `http.trusted_proxies`" (checked by the tests).
        TrustedProxies::parse(entries.iter().map(String::as_str)).map_err(serde::de::Error::custom)
    }
}

/// Keys Missive no longer reads, each with what replaced it. Setting one is an error, so an
/// old configuration is never half-applied without a word.
const REPLACED: [(&str, &str, &str); 1] = [(
    "http",
    "trust_forwarded_for",
    "was replaced by `http.trusted_proxies`: the addresses and ranges of the reverse proxies \
     whose X-Forwarded-For is believed (hint: remove it and write, under [http], \
     trusted_proxies = [\"127.0.0.1\", \"10.0.0.0/8\"], or set \
     MISSIVE_HTTP__TRUSTED_PROXIES=127.0.0.1,10.0.0.0/8; empty, the default, trusts no proxy)",
)];

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
    /// A key Missive no longer reads, set in `place` (a file or an environment variable).
    #[error("`{key}` is set in {place}, but {replaced}")]
    Replaced {
        key: String,
        place: String,
        replaced: &'static str,
    },
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
            const SECRETS: [(&str, &str, &str); 4] = [
                ("smtp", "username", "smtp.username"),
                ("smtp", "password", "smtp.password"),
                ("http", "api_keys", "http.api_keys"),
                ("http", "secret", "http.secret"),
            ];
            for (section, old, replaced) in REPLACED {
                let set = table
                    .get(section)
                    .and_then(|v| v.as_table())
                    .is_some_and(|t| t.contains_key(old));
                if set {
                    return Err(ConfigError::Replaced {
                        key: format!("{section}.{old}"),
                        place: path.display().to_string(),
                        replaced,
                    });
                }
            }
            for (section, secret, key) in SECRETS {
                let set = table
                    .get(section)
                    .and_then(|v| v.as_table())
                    .is_some_and(|t| t.contains_key(secret));
                if set {
                    return Err(ConfigError::Invalid {
                        key,
                        problem: format!(
                            "is set in {}; secrets are read only from the environment \
                             (MISSIVE_{}__{})",
                            path.display(),
                            section.to_uppercase(),
                            secret.to_uppercase()
                        ),
                    });
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
        for (section, old, replaced) in REPLACED {
            let key = format!("{section}.{old}");
            if vars.contains_key(&key) {
                return Err(ConfigError::Replaced {
                    place: format!(
                        "the environment (MISSIVE_{}__{})",
                        section.to_uppercase(),
                        old.to_uppercase()
                    ),
                    key,
                    replaced,
                });
            }
        }
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
        // `smtp.url` and `smtp.ca_file` are checked by the mailer, which uses them
        // (`Transport::from_settings`, at start-up of every command that sends).
        self.check_http()
    }

    fn check_http(&self) -> Result<(), ConfigError> {
        let h = &self.http;
        let bad = |key, problem: String| Err(ConfigError::Invalid { key, problem });
        if h.bind.parse::<std::net::SocketAddr>().is_err() {
            return bad(
                "http.bind",
                format!("`{}` is not an address such as 127.0.0.1:8080", h.bind),
            );
        }
        match url::Url::parse(&h.base_url) {
            Ok(u)
                if matches!(u.scheme(), "http" | "https")
                    && u.host().is_some()
                    && u.query().is_none()
                    && u.fragment().is_none() => {}
            _ => {
                return bad(
                    "http.base_url",
                    format!(
                    "`{}` is not an http:// or https:// address such as https://act.example.org",
                    h.base_url
                ),
                )
            }
        }
        for origin in h.frame_ancestor_list() {
            let ok = origin.starts_with("https://") || origin.starts_with("http://");
            if !ok || origin.contains([';', ',', '\'', '"']) {
                return bad(
                    "http.frame_ancestors",
                    format!("`{origin}` is not an origin such as https://www.example.org"),
                );
            }
        }
        if h.sign_per_minute == 0 || h.sign_burst == 0 {
            return bad(
                "http.sign_per_minute",
                "and http.sign_burst must be at least 1".into(),
            );
        }
        if h.api_per_second == 0 || h.api_burst == 0 {
            return bad(
                "http.api_per_second",
                "and http.api_burst must be at least 1".into(),
            );
        }
        if h.confirm_expiry_days == 0 || h.confirm_expiry_days > 90 {
            return bad(
                "http.confirm_expiry_days",
                "must be between 1 and 90".into(),
            );
        }
        if h.api_key_list()
            .iter()
            .any(|k| k.expose_secret().chars().count() < 24)
        {
            return bad(
                "http.api_keys",
                "(MISSIVE_HTTP__API_KEYS) holds a key shorter than 24 characters".into(),
            );
        }
        if h.secret
            .as_ref()
            .is_some_and(|s| s.expose_secret().chars().count() < 32)
        {
            return bad(
                "http.secret",
                "(MISSIVE_HTTP__SECRET) must be at least 32 characters".into(),
            );
        }
        Ok(())
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    /// `MISSIVE_*` pairs as `Settings::load` takes them (other modules' tests use it too).
    pub(crate) fn env(pairs: &[(&str, &str)]) -> Vec<(String, String)> {
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
        assert_eq!(s.smtp.address_policy(), AddressPolicy::AsciiOnly);
    }

    #[test]
    fn smtputf8_from_the_environment_lets_utf8_addresses_in() {
        let s = Settings::load(None, env(&[("MISSIVE_SMTP__SMTPUTF8", "true")])).unwrap();
        assert_eq!(s.smtp.address_policy(), AddressPolicy::Smtputf8);
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
        assert_eq!(
            s.smtp.password.as_ref().map(|p| p.expose_secret()),
            Some("hunter2")
        );
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
    fn http_secrets_come_only_from_the_environment() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("c.toml");
        std::fs::write(&path, "[http]\napi_keys = \"x\"\n").unwrap();
        let err = Settings::load(Some(&path), env(&[]))
            .unwrap_err()
            .to_string();
        assert!(err.contains("MISSIVE_HTTP__API_KEYS"), "{err}");
        let key = "k".repeat(24);
        let s = Settings::load(
            None,
            env(&[("MISSIVE_HTTP__API_KEYS", &format!(" {key} ,,{key}2"))]),
        )
        .unwrap();
        let keys: Vec<String> = s
            .http
            .api_key_list()
            .iter()
            .map(|k| k.expose_secret().to_owned())
            .collect();
        assert_eq!(keys, vec![key.clone(), format!("{key}2")]);
    }

    #[test]
    fn bad_http_values_name_their_key() {
        for (var, value, key) in [
            ("MISSIVE_HTTP__BIND", "localhost", "http.bind"),
            ("MISSIVE_HTTP__BASE_URL", "ftp://x", "http.base_url"),
            (
                "MISSIVE_HTTP__FRAME_ANCESTORS",
                "*;",
                "http.frame_ancestors",
            ),
            (
                "MISSIVE_HTTP__CONFIRM_EXPIRY_DAYS",
                "0",
                "http.confirm_expiry_days",
            ),
            ("MISSIVE_HTTP__API_KEYS", "short", "http.api_keys"),
            ("MISSIVE_HTTP__SECRET", "short", "http.secret"),
        ] {
            let err = Settings::load(None, env(&[(var, value)]))
                .unwrap_err()
                .to_string();
            assert!(err.contains(key), "{var}: {err}");
        }
    }

    #[test]
    fn printing_the_settings_shows_no_secret() {
        let password = "smtp-password-hunter2";
        let key_a = "api-key-aaaaaaaaaaaaaaaaaaaaaaaa";
        let key_b = "api-key-bbbbbbbbbbbbbbbbbbbbbbbb";
        let secret = "form-secret-0123456789abcdefghijklmnop";
        let s = Settings::load(
            None,
            env(&[
                ("MISSIVE_SMTP__USERNAME", "letters@example.org"),
                ("MISSIVE_SMTP__PASSWORD", password),
                ("MISSIVE_HTTP__API_KEYS", &format!("{key_a},{key_b}")),
                ("MISSIVE_HTTP__SECRET", secret),
            ]),
        )
        .unwrap();

        let printed = [format!("{s:?}"), format!("{s:#?}"), format!("{:?}", s.http)];

        for text in printed {
            for value in [password, key_a, key_b, secret, "api-key-", "hunter2"] {
                assert!(!text.contains(value), "{value} printed in {text}");
            }
            assert!(text.contains("REDACTED"), "{text}");
        }
        assert_eq!(s.http.secret.as_ref().unwrap().expose_secret(), secret);
    }

    #[test]
    fn refusing_a_short_key_or_secret_does_not_repeat_it() {
        for (var, value) in [
            ("MISSIVE_HTTP__API_KEYS", "short-key-hunter2"),
            (
                "MISSIVE_HTTP__API_KEYS",
                "a-long-enough-key-0123456789,short-hunter2",
            ),
            ("MISSIVE_HTTP__SECRET", "short-secret-hunter2"),
        ] {
            let err = Settings::load(None, env(&[(var, value)]))
                .unwrap_err()
                .to_string();
            assert!(!err.contains("hunter2"), "{err}");
        }
    }

    #[test]
    fn a_database_password_is_replaced_and_the_rest_of_the_url_kept() {
        for (url, shown) in [
            (
                "postgres://missive:hunter2@db.example.org/missive",
                "postgres://missive:***@db.example.org/missive",
            ),
            (
                "postgresql://missive:hunter2@db.example.org:6432/missive?sslmode=require",
                "postgresql://missive:***@db.example.org:6432/missive?sslmode=require",
            ),
            (
                "postgres://missive:p%40ss%3Aword@[2001:db8::5]:5432/missive",
                "postgres://missive:***@[2001:db8::5]:5432/missive",
            ),
            (
                "postgres://db.example.org/missive?user=missive&password=hunter2",
                "postgres://db.example.org/missive?user=missive&password=***",
            ),
            (
                "postgres://:hunter2@db.example.org/missive",
                "postgres://:***@db.example.org/missive",
            ),
            // Nothing secret: shown exactly as written.
            ("sqlite://missive.db", "sqlite://missive.db"),
            (
                "sqlite:///var/lib/missive/missive.db?mode=rwc",
                "sqlite:///var/lib/missive/missive.db?mode=rwc",
            ),
            (
                "postgres://missive@db.example.org/missive",
                "postgres://missive@db.example.org/missive",
            ),
        ] {
            assert_eq!(redact_url(url), shown, "{url}");
        }
    }

    #[test]
    fn a_url_that_does_not_parse_or_has_no_host_loses_everything_before_its_last_at() {
        for (url, shown) in [
            // A port out of range: not a URL.
            (
                "postgres://missive:hun@ter2@db.example.org:99999/missive",
                "postgres://***@db.example.org:99999/missive",
            ),
            (
                "postgres://missive:hunter2@db.example.org:99999/missive?password=hunter2",
                "postgres://***@db.example.org:99999/missive?***",
            ),
            ("not a url", "not a url"),
            // These parse, as a scheme and a path.
            ("missive:hunter2@db.example.org", "***@db.example.org"),
            ("postgres:missive:hunter2@db/missive", "***@db/missive"),
        ] {
            assert!(
                url::Url::parse(url).map_or(true, |u| !u.has_host()),
                "{url} parses with a host"
            );
            assert_eq!(redact_url(url), shown, "{url}");
        }
    }

    #[test]
    fn the_database_settings_show_their_url_redacted() {
        let s = Settings::load(
            None,
            env(&[(
                "MISSIVE_DATABASE__URL",
                "postgres://missive:hunter2@db.example.org/missive",
            )]),
        )
        .unwrap();
        assert_eq!(
            s.database.redacted_url(),
            "postgres://missive:***@db.example.org/missive"
        );
    }

    #[test]
    fn trusted_proxies_are_a_toml_array_or_a_comma_separated_variable() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("c.toml");
        std::fs::write(
            &path,
            "[http]\ntrusted_proxies = [\"127.0.0.1\", \"10.0.0.0/8\", \"::1\"]\n",
        )
        .unwrap();

        let from_file = Settings::load(Some(&path), env(&[])).unwrap();
        let from_env = Settings::load(
            None,
            env(&[(
                "MISSIVE_HTTP__TRUSTED_PROXIES",
                " 127.0.0.1 , 10.0.0.0/8,::1,",
            )]),
        )
        .unwrap();
        let env_over_file = Settings::load(
            Some(&path),
            env(&[("MISSIVE_HTTP__TRUSTED_PROXIES", "192.0.2.0/24")]),
        )
        .unwrap();
        let emptied =
            Settings::load(Some(&path), env(&[("MISSIVE_HTTP__TRUSTED_PROXIES", "")])).unwrap();
        let default = Settings::load(None, env(&[])).unwrap();

        let expected = TrustedProxies::parse(["127.0.0.1", "10.0.0.0/8", "::1"]).unwrap();
        assert_eq!(from_file.http.trusted_proxies, expected);
        assert_eq!(from_env.http.trusted_proxies, expected);
        let p = &from_file.http.trusted_proxies;
        for (ip, trusted) in [
            ("127.0.0.1", true),
            ("10.200.3.4", true),
            ("::1", true),
            ("::ffff:10.0.0.1", true),
            ("127.0.0.2", false),
            ("11.0.0.1", false),
            ("::2", false),
        ] {
            assert_eq!(p.contains(ip.parse().unwrap()), trusted, "{ip}");
        }
        assert_eq!(
            env_over_file.http.trusted_proxies,
            TrustedProxies::parse(["192.0.2.0/24"]).unwrap()
        );
        assert!(emptied.http.trusted_proxies.is_empty());
        assert!(default.http.trusted_proxies.is_empty());
    }

    #[test]
    fn a_bad_trusted_proxy_names_the_key_and_the_entry() {
        for (value, entry, words) in [
            ("10.0.0.1,localhost", "localhost", "not an IP address"),
            ("10.0.0.0/33", "10.0.0.0/33", "not an IP address"),
            ("fd00::/129", "fd00::/129", "not an IP address"),
            ("10.0.0.1/8", "10.0.0.1/8", "write 10.0.0.0/8"),
        ] {
            let err = Settings::load(None, env(&[("MISSIVE_HTTP__TRUSTED_PROXIES", value)]))
                .unwrap_err()
                .to_string();
            assert!(
                err.contains("http.trusted_proxies") && err.contains(entry) && err.contains(words),
                "{value}: {err}"
            );
        }
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("c.toml");
        std::fs::write(
            &path,
            "[http]\ntrusted_proxies = [\"10.0.0.0/8\", \"10.0.0.300\"]\n",
        )
        .unwrap();
        let err = Settings::load(Some(&path), env(&[]))
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("http.trusted_proxies") && err.contains("10.0.0.300"),
            "{err}"
        );
    }

    #[test]
    fn the_replaced_trust_forwarded_for_is_refused_saying_how_to_write_trusted_proxies() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("c.toml");
        std::fs::write(&path, "[http]\ntrust_forwarded_for = true\n").unwrap();

        let in_file = Settings::load(Some(&path), env(&[]))
            .unwrap_err()
            .to_string();
        let in_env = Settings::load(None, env(&[("MISSIVE_HTTP__TRUST_FORWARDED_FOR", "false")]))
            .unwrap_err()
            .to_string();

        for (err, place) in [
            (&in_file, "c.toml"),
            (&in_env, "MISSIVE_HTTP__TRUST_FORWARDED_FOR"),
        ] {
            assert!(
                err.contains("http.trust_forwarded_for")
                    && err.contains(place)
                    && err.contains("replaced by `http.trusted_proxies`")
                    && err.contains("trusted_proxies = [\"127.0.0.1\", \"10.0.0.0/8\"]")
                    && err.contains("MISSIVE_HTTP__TRUSTED_PROXIES=127.0.0.1,10.0.0.0/8"),
                "{err}"
            );
        }
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
