//! The SMTP transport: connections Missive opens and owns, one per sending task, each speaking
//! SMTP through lettre's `AsyncSmtpConnection` (`session.rs`) over a socket with `TCP_NODELAY`
//! (`wire.rs`, which also keeps the guards lettre lacks). Each sending task holds one
//! `SmtpSession`, which keeps its connection open and reuses it for up to
//! `max_messages_per_connection` letters, tests it with NOOP before reusing it after an idle
//! spell, and replaces a connection the relay closed while it idled (a `421` or a closed socket
//! at the next MAIL) at no cost to the letter.
//!
//! A failure while opening a connection is the relay's ([`RelayFault`]); a failure in a
//! letter's transaction is the letter's ([`Delivery`]). Timeouts cover the whole set-up and
//! each letter's whole conversation; a connection that timed out or broke is dropped.
//!
//! Depends on `mailer`, `domain` and `config` only.

mod session;
mod tls;
mod wire;

pub use tls::check_ca_file;

use super::{Delivery, Handover, MailerError, RelayFault, Stage, Verdict};
use crate::config::{SmtpSettings, StartTls};
use crate::domain::Letter;
use session::{Connection, Ended, Gate};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// How long RSET after a refused MAIL, RCPT or DATA may take before the connection is given
/// up instead.
const RECOVER_TIMEOUT: Duration = Duration::from_secs(10);
/// How long QUIT may take when a connection is closed.
const QUIT_TIMEOUT: Duration = Duration::from_secs(5);
/// A connection idle this long is tested with NOOP before it carries a letter (relays close
/// idle sessions, RFC 5321 section 4.5.3.2: often after a minute, some sooner).
const IDLE_CHECK: Duration = Duration::from_secs(3);
/// How long that NOOP may take.
const NOOP_TIMEOUT: Duration = Duration::from_secs(5);

/// How the connection is encrypted.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TlsMode {
    /// `smtps://`: TLS from the first byte.
    Implicit,
    /// `smtp://` with `starttls = "required"`.
    StartTlsRequired,
    /// `smtp://` with `starttls = "opportunistic"`.
    StartTlsOpportunistic,
    /// `smtp://` with `starttls = "off"`.
    Off,
}

/// A relay to send through, parsed once from the settings.
pub struct SmtpEndpoint {
    pub host: String,
    pub port: u16,
    pub tls: TlsMode,
    credentials: Option<Credentials>,
    /// The name given in EHLO.
    hello: String,
    tls_config: Arc<rustls::ClientConfig>,
    pub connect_timeout: Duration,
    pub send_timeout: Duration,
    /// How many connections (and so sending tasks) to keep.
    pub connections: usize,
    pub max_messages_per_connection: u32,
    /// The configuration promises a relay that takes SMTPUTF8 (`smtp.smtputf8`).
    smtputf8: bool,
}

impl std::fmt::Debug for SmtpEndpoint {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Never print the credentials.
        f.debug_struct("SmtpEndpoint")
            .field("host", &self.host)
            .field("port", &self.port)
            .field("tls", &self.tls)
            .field("auth", &self.credentials.is_some())
            .finish()
    }
}

impl SmtpEndpoint {
    /// Parses `smtp://host[:port]` or `smtps://host[:port]`.
    pub fn parse(url: &str, starttls: StartTls) -> Result<(String, u16, TlsMode), MailerError> {
        // The URL is shown with any password it holds replaced.
        let shown = crate::config::redact_url(url);
        let bad = |why: &str| MailerError::Url(format!("smtp.url `{shown}` {why}"));
        let parsed = url::Url::parse(url.trim()).map_err(|e| {
            bad(&format!(
                "is not a URL ({e}); write smtp://host:port or smtps://host:port"
            ))
        })?;
        let tls = match parsed.scheme() {
            "smtps" => TlsMode::Implicit,
            "smtp" => match starttls {
                StartTls::Required => TlsMode::StartTlsRequired,
                StartTls::Opportunistic => TlsMode::StartTlsOpportunistic,
                StartTls::Off => TlsMode::Off,
            },
            other => {
                return Err(bad(&format!(
                    "has scheme `{other}`; use smtp:// or smtps://"
                )))
            }
        };
        if !parsed.username().is_empty() || parsed.password().is_some() {
            return Err(bad(
                "holds credentials; set MISSIVE_SMTP__USERNAME and MISSIVE_SMTP__PASSWORD instead",
            ));
        }
        let host = parsed
            .host_str()
            .filter(|h| !h.is_empty())
            .ok_or_else(|| bad("has no host"))?
            .trim_start_matches('[')
            .trim_end_matches(']')
            .to_owned();
        let port = parsed
            .port()
            .unwrap_or(if tls == TlsMode::Implicit { 465 } else { 25 });
        Ok((host, port, tls))
    }

    /// The endpoint the `[smtp]` settings describe.
    pub fn from_settings(s: &SmtpSettings) -> Result<SmtpEndpoint, MailerError> {
        let (host, port, tls) = SmtpEndpoint::parse(&s.url, s.starttls)?;
        let credentials = match (&s.username, &s.password) {
            (Some(u), Some(p)) if !u.is_empty() => Some(Credentials {
                username: u.clone(),
                password: p.clone(),
            }),
            (Some(u), None) if !u.is_empty() => {
                return Err(MailerError::Url(
                    "MISSIVE_SMTP__USERNAME is set but MISSIVE_SMTP__PASSWORD is not".into(),
                ))
            }
            _ => None,
        };
        let hello = match s.hello_name.trim() {
            "" => hostname::get()
                .ok()
                .and_then(|h| h.into_string().ok())
                .filter(|h| is_hello_name(h))
                .unwrap_or_else(|| "localhost".to_owned()),
            name if is_hello_name(name) => name.to_owned(),
            name => {
                return Err(MailerError::Url(format!(
                    "smtp.hello_name `{}` is not a host name (hint: a name such as \
                     mail.example.org, with no spaces)",
                    name.escape_debug()
                )))
            }
        };
        let tls_config = tls::client_config(s.ca_file())?;
        Ok(SmtpEndpoint {
            host,
            port,
            tls,
            credentials,
            hello,
            tls_config,
            connect_timeout: s.connect_timeout(),
            send_timeout: s.send_timeout(),
            connections: s.connections,
            max_messages_per_connection: s.max_messages_per_connection,
            smtputf8: s.smtputf8,
        })
    }

    /// `host:port (tls)` for logs.
    pub fn describe(&self) -> String {
        let tls = match self.tls {
            TlsMode::Implicit => "implicit TLS",
            TlsMode::StartTlsRequired => "STARTTLS required",
            TlsMode::StartTlsOpportunistic => "STARTTLS if offered",
            TlsMode::Off => "no TLS",
        };
        format!("{}:{} ({tls})", self.host, self.port)
    }
}

/// A name fit for EHLO: printable ASCII without spaces, so it cannot break the command line.
fn is_hello_name(name: &str) -> bool {
    !name.is_empty() && name.len() <= 255 && name.bytes().all(|b| b.is_ascii_graphic())
}

/// The login for AUTH, from the environment. Never printed; the password is exposed only
/// where the AUTH command is built (`session.rs`).
struct Credentials {
    username: String,
    password: secrecy::SecretString,
}

/// One sending task's connection to the relay.
pub struct SmtpSession {
    endpoint: Arc<SmtpEndpoint>,
    conn: Option<Connection>,
    /// Letters sent on the current connection.
    sent_on_conn: u32,
    /// When the current connection last finished a command.
    last_used: Instant,
}

impl std::fmt::Debug for SmtpSession {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SmtpSession")
            .field("endpoint", &self.endpoint)
            .field("connected", &self.conn.is_some())
            .field("sent_on_conn", &self.sent_on_conn)
            .finish()
    }
}

impl SmtpSession {
    /// A session that connects on first use.
    pub fn new(endpoint: Arc<SmtpEndpoint>) -> SmtpSession {
        SmtpSession {
            endpoint,
            conn: None,
            sent_on_conn: 0,
            last_used: Instant::now(),
        }
    }

    /// Whether a connection is open.
    pub fn is_connected(&self) -> bool {
        self.conn.is_some()
    }

    /// Makes sure a connection is ready for the next letter: the open one (after
    /// `max_messages_per_connection` letters it is replaced; after an idle spell it must
    /// answer NOOP), or a new one. A fault opening it is the relay's.
    pub async fn ready(&mut self) -> Result<(), RelayFault> {
        if self.conn.is_some() && self.sent_on_conn >= self.endpoint.max_messages_per_connection {
            self.close().await;
        }
        if let Some(conn) = &mut self.conn {
            if self.last_used.elapsed() >= IDLE_CHECK {
                let alive = tokio::time::timeout(NOOP_TIMEOUT, conn.noop()).await;
                if alive.unwrap_or(false) {
                    self.last_used = Instant::now();
                } else {
                    tracing::debug!("an idle connection no longer answers; reconnecting");
                    self.conn = None;
                }
            }
        }
        if self.conn.is_none() {
            let mut stage = Stage::Connect;
            let timeout = self.endpoint.connect_timeout;
            let opened =
                tokio::time::timeout(timeout, Connection::open(&self.endpoint, &mut stage)).await;
            let conn = match opened {
                Ok(opened) => opened?,
                Err(_) => {
                    return Err(RelayFault::new(
                        super::FaultKind::Unreachable,
                        stage,
                        format!(
                            "the relay gave no answer within {} s while connecting ({stage})",
                            timeout.as_secs()
                        ),
                    )
                    .with_hint(
                        "check smtp.url; raise smtp.connect_timeout_seconds for a slow relay",
                    ))
                }
            };
            self.conn = Some(conn);
            self.sent_on_conn = 0;
            self.last_used = Instant::now();
        }
        Ok(())
    }

    /// Sends one message over the ready connection (opening one first if needed). A reused
    /// connection the relay closed while it idled (a `421`, or the socket closed, in answer to
    /// MAIL) is replaced once, at no cost to the letter.
    ///
    /// `before_data` runs beside the envelope (MAIL, RCPT, DATA), so the worker's record that
    /// the letter may now be delivered costs no round trip of its own; no byte of the message
    /// is written until it has yielded `true`.
    pub async fn send<F>(&mut self, letter: &Letter, message: &[u8], before_data: F) -> Handover
    where
        F: std::future::Future<Output = bool>,
    {
        if let Err(fault) = self.ready().await {
            return Handover::Relay(fault);
        }
        let mut gate = Gate::Pending(before_data);
        let reused = self.sent_on_conn > 0;
        let first = self.send_once(letter, message, &mut gate).await;
        let closed_while_idle = reused
            && !matches!(gate, Gate::Done(false))
            && first.stage == Stage::Mail
            && first.verdict == Verdict::Transient
            && matches!(first.code, None | Some(421));
        if !closed_while_idle {
            return Handover::Attempted(first);
        }
        tracing::debug!(
            code = first.code,
            "the relay closed the reused connection; reconnecting"
        );
        self.conn = None;
        if let Err(fault) = self.ready().await {
            return Handover::Relay(fault);
        }
        Handover::Attempted(self.send_once(letter, message, &mut gate).await)
    }

    /// One try over the ready connection; what became of it decides whether the connection is
    /// kept.
    async fn send_once<F>(
        &mut self,
        letter: &Letter,
        message: &[u8],
        gate: &mut Gate<F>,
    ) -> Delivery
    where
        F: std::future::Future<Output = bool>,
    {
        let Some(mut conn) = self.conn.take() else {
            return Delivery::no_reply(Stage::Connect, "no connection to the relay");
        };
        let mut stage = Stage::Mail;
        let timeout = self.endpoint.send_timeout;
        let ended =
            tokio::time::timeout(timeout, conn.transaction(&mut stage, letter, message, gate))
                .await;
        self.last_used = Instant::now();
        let ended = match ended {
            Ok(ended) => ended,
            // The conversation is in an unknown place: the connection cannot be reused.
            Err(_) => {
                return Delivery::no_reply(
                    stage,
                    format!("no reply within {} s at {stage}", timeout.as_secs()),
                )
            }
        };
        let closing = ended.delivery().code == Some(421);
        match &ended {
            // The transaction is over, whatever the reply said; 421 means the relay is closing.
            Ended::Replied(_) => {
                self.sent_on_conn += 1;
                if !closing {
                    self.conn = Some(conn);
                }
            }
            Ended::NotSent(_) => self.conn = Some(conn),
            Ended::Refused(_) => {
                let reset = !closing
                    && tokio::time::timeout(RECOVER_TIMEOUT, conn.reset())
                        .await
                        .unwrap_or(false);
                if reset {
                    self.conn = Some(conn);
                }
            }
            Ended::Broken(_) => {}
        }
        match ended {
            Ended::Replied(d) | Ended::NotSent(d) | Ended::Refused(d) | Ended::Broken(d) => d,
        }
    }

    /// Says QUIT (briefly) and drops the connection.
    pub async fn close(&mut self) {
        if let Some(mut conn) = self.conn.take() {
            let _ = tokio::time::timeout(QUIT_TIMEOUT, conn.quit()).await;
        }
        self.sent_on_conn = 0;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls_are_parsed_with_their_tls_mode_and_default_ports() {
        assert_eq!(
            SmtpEndpoint::parse("smtp://127.0.0.1:2525", StartTls::Off).unwrap(),
            ("127.0.0.1".into(), 2525, TlsMode::Off)
        );
        assert_eq!(
            SmtpEndpoint::parse("smtps://mail.example.org", StartTls::Required).unwrap(),
            ("mail.example.org".into(), 465, TlsMode::Implicit)
        );
        assert_eq!(
            SmtpEndpoint::parse("smtp://mail.example.org", StartTls::Required)
                .unwrap()
                .2,
            TlsMode::StartTlsRequired
        );
        assert!(SmtpEndpoint::parse("smtp://user:pw@mail.example.org", StartTls::Off).is_err());
        assert!(SmtpEndpoint::parse("http://mail.example.org", StartTls::Off).is_err());
        assert!(SmtpEndpoint::parse("not a url", StartTls::Off).is_err());
    }
}
