//! The SMTP client: connections Missive opens and owns, speaking SMTP itself (`client.rs`)
//! rather than through lettre, so a letter costs two round trips and two writes: MAIL, RCPT and
//! DATA pipelined in one write when the relay offers PIPELINING (RFC 2920), then the message and
//! its final dot in one write. Each sending task holds one `SmtpSession`, which keeps one
//! connection open (a socket with `TCP_NODELAY`, encrypted as configured), reuses it for up to
//! `max_messages_per_connection` letters, and reports every failure with its stage.
//!
//! Timeouts cover the whole connection set-up and each letter's whole conversation; a
//! connection that timed out or broke is dropped, never reused.
//!
//! Depends on `mailer`, `domain` and `config` only.

mod client;
mod dot;
mod reply;
mod tls;

pub use tls::check_ca_file;

use super::{Delivery, MailerError, Stage, Verdict};
use crate::config::{SmtpSettings, StartTls};
use crate::domain::Letter;
use client::{Connection, Refusal};
use std::sync::Arc;
use std::time::Duration;

/// How long the clean-up after a refused MAIL/RCPT/DATA (the replies still owed, then RSET)
/// may take before the connection is given up instead.
const RECOVER_TIMEOUT: Duration = Duration::from_secs(10);
/// How long QUIT may take when a connection is closed.
const QUIT_TIMEOUT: Duration = Duration::from_secs(5);

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
        let bad = |why: &str| MailerError::Url(format!("`{url}` {why}"));
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
/// where the AUTH line is built (`client.rs`).
struct Credentials {
    username: String,
    password: secrecy::SecretString,
}

/// One sending task's connection to the relay.
pub struct SmtpSession {
    endpoint: Arc<SmtpEndpoint>,
    conn: Option<Connection>,
    sent_on_conn: u32,
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

/// The worker's say on transmitting the message: a future until it has answered, then the
/// answer, kept for a second try on a fresh connection.
enum Gate<F> {
    Pending(F),
    Done(bool),
}

/// Why a letter's conversation ended without a reply to its data.
enum Failure {
    /// MAIL, RCPT or DATA was refused, or the connection failed before the message.
    Envelope(Refusal),
    /// Missive's own refusal before sending anything: the connection is untouched.
    Local(Delivery),
    /// Missive stopped after DATA was accepted, without transmitting the message: the server
    /// waits for it, so the connection cannot be used again.
    Abandoned(Delivery),
    /// The message was (perhaps partly) written and no reply was read.
    AfterData(Delivery),
}

impl SmtpSession {
    /// A session that connects on first use.
    pub fn new(endpoint: Arc<SmtpEndpoint>) -> SmtpSession {
        SmtpSession {
            endpoint,
            conn: None,
            sent_on_conn: 0,
        }
    }

    /// Sends one message, reconnecting first if needed. A reused connection that turns out to
    /// have been closed by the server while idle is replaced once, at no cost to the letter.
    ///
    /// `before_data` runs beside the envelope (MAIL, RCPT, DATA), so the worker's record that
    /// the letter may now be delivered costs no round trip of its own; no byte of the message
    /// is written until it has yielded `true`.
    pub async fn send<F>(&mut self, letter: &Letter, message: &[u8], before_data: F) -> Delivery
    where
        F: std::future::Future<Output = bool>,
    {
        let mut gate = Gate::Pending(before_data);
        let (first, reused) = self.send_once(letter, message, &mut gate).await;
        let stale = reused
            && !matches!(gate, Gate::Done(false))
            && first.stage == Stage::Mail
            && first.code.is_none()
            && first.verdict == Verdict::Transient;
        if stale {
            tracing::debug!("reused connection was closed by the server; reconnecting");
            return self.send_once(letter, message, &mut gate).await.0;
        }
        first
    }

    /// One try: the result, and whether it went over a connection already used before.
    async fn send_once<F>(
        &mut self,
        letter: &Letter,
        message: &[u8],
        gate: &mut Gate<F>,
    ) -> (Delivery, bool)
    where
        F: std::future::Future<Output = bool>,
    {
        if self.sent_on_conn >= self.endpoint.max_messages_per_connection {
            self.close().await;
        }
        let reused = self.conn.is_some();
        let mut conn = match self.conn.take() {
            Some(conn) => conn,
            None => {
                let mut stage = Stage::Connect;
                let timeout = self.endpoint.connect_timeout;
                match tokio::time::timeout(timeout, Connection::open(&self.endpoint, &mut stage))
                    .await
                {
                    Ok(Ok(conn)) => {
                        self.sent_on_conn = 0;
                        conn
                    }
                    Ok(Err(delivery)) => return (delivery, false),
                    Err(_) => {
                        let delivery = Delivery::no_reply(
                            stage,
                            format!(
                                "no answer within {} s while connecting ({stage})",
                                timeout.as_secs()
                            ),
                        );
                        return (delivery, false);
                    }
                }
            }
        };
        let mut stage = Stage::Mail;
        let timeout = self.endpoint.send_timeout;
        let result = tokio::time::timeout(
            timeout,
            converse(&mut conn, &mut stage, letter, message, gate),
        )
        .await;
        let delivery = match result {
            // The conversation is in an unknown place: the connection cannot be reused.
            Err(_) => Delivery::no_reply(
                stage,
                format!("no reply within {} s at {stage}", timeout.as_secs()),
            ),
            Ok(Ok(delivery)) => {
                // A reply after the data ends the transaction cleanly, whatever it says; 421
                // means the server is closing.
                self.sent_on_conn += 1;
                if delivery.code != Some(421) {
                    self.conn = Some(conn);
                }
                delivery
            }
            Ok(Err(Failure::Local(delivery))) => {
                self.conn = Some(conn);
                delivery
            }
            Ok(Err(Failure::Abandoned(delivery) | Failure::AfterData(delivery))) => delivery,
            Ok(Err(Failure::Envelope(Refusal::Broken(delivery)))) => delivery,
            Ok(Err(Failure::Envelope(Refusal::Refused {
                delivery,
                code,
                pending,
            }))) => {
                // A refused MAIL/RCPT/DATA leaves the connection usable once the replies still
                // owed are read and the transaction is reset; 421 means the server is closing.
                if code != 421
                    && matches!(
                        tokio::time::timeout(RECOVER_TIMEOUT, conn.recover(pending)).await,
                        Ok(true)
                    )
                {
                    self.conn = Some(conn);
                }
                delivery
            }
        };
        (delivery, reused)
    }

    /// Says QUIT (briefly) and drops the connection.
    pub async fn close(&mut self) {
        if let Some(mut conn) = self.conn.take() {
            let _ = tokio::time::timeout(QUIT_TIMEOUT, conn.quit()).await;
        }
        self.sent_on_conn = 0;
    }
}

/// The envelope addresses of `letter`, checked the way lettre checks them, and whether they
/// need SMTPUTF8.
fn envelope(
    letter: &Letter,
    extensions_smtputf8: bool,
) -> Result<(String, String, bool), Delivery> {
    let refuse = |reply: String| Delivery {
        verdict: Verdict::Permanent,
        stage: Stage::Mail,
        code: None,
        enhanced_code: None,
        reply,
        throttled: false,
    };
    let address = |a: &crate::domain::EmailAddress| {
        a.as_str()
            .parse::<lettre::Address>()
            .map(|a| AsRef::<str>::as_ref(&a).to_owned())
            .map_err(|e| refuse(format!("`{a}` cannot be used in an SMTP envelope: {e}")))
    };
    let from = address(&letter.from_address)?;
    let to = address(&letter.recipient)?;
    let utf8 = !from.is_ascii() || !to.is_ascii();
    if utf8 && !extensions_smtputf8 {
        return Err(refuse(
            "the relay does not support SMTPUTF8, which this address needs".into(),
        ));
    }
    Ok((from, to, utf8))
}

/// MAIL, RCPT and DATA with the gate beside them, then the message: `stage` kept current so a
/// timeout or error is known with the step it happened at. `Ok` is the reply after the data,
/// as a result.
async fn converse<F>(
    conn: &mut Connection,
    stage: &mut Stage,
    letter: &Letter,
    message: &[u8],
    gate: &mut Gate<F>,
) -> Result<Delivery, Failure>
where
    F: std::future::Future<Output = bool>,
{
    let (from, to, utf8) = envelope(letter, conn.extensions.smtputf8).map_err(Failure::Local)?;
    let envelope = conn.envelope(stage, &from, &to, utf8);
    let (envelope, proceed) = match std::mem::replace(gate, Gate::Done(false)) {
        Gate::Pending(g) => tokio::join!(envelope, g),
        Gate::Done(proceed) => (envelope.await, proceed),
    };
    *gate = Gate::Done(proceed);
    envelope.map_err(Failure::Envelope)?;
    // DATA was accepted and the gate has answered: no byte of the message goes without its yes.
    if !proceed {
        return Err(Failure::Abandoned(Delivery::lease_lost(Stage::Data)));
    }
    *stage = Stage::EndOfData;
    let reply = conn
        .message(message)
        .await
        .map_err(|e| Failure::AfterData(Delivery::no_reply(Stage::EndOfData, e.to_string())))?;
    if reply.is_positive() || reply.is_negative() {
        Ok(Delivery::from_reply(
            Stage::EndOfData,
            reply.code,
            &reply.text(),
        ))
    } else {
        Err(Failure::AfterData(client::out_of_turn(
            Stage::EndOfData,
            &reply,
        )))
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
