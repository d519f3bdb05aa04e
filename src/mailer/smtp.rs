//! The SMTP client: connections Missive opens and owns. Each sending task holds one
//! `SmtpSession`, which keeps one lettre `AsyncSmtpConnection` open over a socket with
//! `TCP_NODELAY` set (lettre's pooled transport leaves Nagle on and stalls ~40 ms a letter),
//! reuses it for up to `max_messages_per_connection` letters, and drives the conversation
//! command by command so every failure is known with its stage.
//!
//! Timeouts cover the whole connection set-up and each letter's whole conversation; a
//! connection that timed out or broke is dropped, never reused.

use super::{Delivery, MailerError, Stage, Verdict};
use crate::config::{SmtpSettings, StartTls};
use crate::domain::Letter;
use lettre::transport::smtp::authentication::{Credentials, Mechanism};
use lettre::transport::smtp::client::{AsyncSmtpConnection, AsyncTokioStream, TlsParameters};
use lettre::transport::smtp::commands::{Data, Mail, Rcpt, Rset};
use lettre::transport::smtp::extension::{ClientId, Extension, MailParameter};
use std::error::Error as _;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::TcpStream;

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
    hello: ClientId,
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
            (Some(u), Some(p)) if !u.is_empty() => Some(Credentials::new(u.clone(), p.clone())),
            (Some(u), None) if !u.is_empty() => {
                return Err(MailerError::Url(
                    "MISSIVE_SMTP__USERNAME is set but MISSIVE_SMTP__PASSWORD is not".into(),
                ))
            }
            _ => None,
        };
        let hello = if s.hello_name.trim().is_empty() {
            ClientId::default()
        } else {
            ClientId::Domain(s.hello_name.trim().to_owned())
        };
        Ok(SmtpEndpoint {
            host,
            port,
            tls,
            credentials,
            hello,
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

/// One sending task's connection to the relay.
pub struct SmtpSession {
    endpoint: Arc<SmtpEndpoint>,
    conn: Option<AsyncSmtpConnection>,
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

/// A lettre error as a `Delivery` at `stage`.
fn classify(stage: Stage, e: &lettre::transport::smtp::Error) -> Delivery {
    let text = e.source().map(|s| s.to_string()).unwrap_or_default();
    match e.status() {
        Some(code) => Delivery::from_reply(stage, u16::from(code), &text),
        None if e.is_tls() => Delivery::no_reply(Stage::Tls, format!("TLS failed: {e}")),
        None => Delivery::no_reply(stage, format!("{e}")),
    }
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

    async fn open(&self, stage: &mut Stage) -> Result<AsyncSmtpConnection, Delivery> {
        let ep = &self.endpoint;
        *stage = Stage::Connect;
        let tcp = TcpStream::connect((ep.host.as_str(), ep.port))
            .await
            .map_err(|e| {
                Delivery::no_reply(
                    Stage::Connect,
                    format!("cannot connect to {}:{}: {e}", ep.host, ep.port),
                )
            })?;
        tcp.set_nodelay(true).map_err(|e| {
            Delivery::no_reply(Stage::Connect, format!("cannot set TCP_NODELAY: {e}"))
        })?;
        let stream: Box<dyn AsyncTokioStream> = if ep.tls == TlsMode::Implicit {
            *stage = Stage::Tls;
            Box::new(ImplicitTls::connect(tcp, &ep.host).await?)
        } else {
            Box::new(tcp)
        };
        // The greeting is read here, then replayed to lettre, so a refusal is known to come from
        // the greeting and a failure after it from EHLO.
        *stage = Stage::Greeting;
        let stream = Replay::after_greeting(stream).await?;
        *stage = Stage::Ehlo;
        let mut conn = AsyncSmtpConnection::connect_with_transport(Box::new(stream), &ep.hello)
            .await
            .map_err(|e| classify(Stage::Ehlo, &e))?;
        match ep.tls {
            TlsMode::StartTlsRequired | TlsMode::StartTlsOpportunistic if conn.can_starttls() => {
                *stage = Stage::Tls;
                let params =
                    TlsParameters::new(ep.host.clone()).map_err(|e| classify(Stage::Tls, &e))?;
                conn.starttls(params, &ep.hello)
                    .await
                    .map_err(|e| classify(Stage::Tls, &e))?;
            }
            TlsMode::StartTlsRequired => {
                conn.abort().await;
                return Err(Delivery::no_reply(
                    Stage::Tls,
                    format!(
                        "{} does not offer STARTTLS and smtp.starttls is \"required\" \
                         (hint: use smtps://, or starttls = \"opportunistic\" for a trusted relay)",
                        ep.host
                    ),
                ));
            }
            _ => {}
        }
        if let Some(creds) = &ep.credentials {
            *stage = Stage::Auth;
            conn.auth(&[Mechanism::Plain, Mechanism::Login], creds)
                .await
                .map_err(|e| classify(Stage::Auth, &e))?;
        }
        Ok(conn)
    }

    /// Sends one message, reconnecting first if needed. A reused connection that turns out to
    /// have been closed by the server while idle is replaced once, at no cost to the letter.
    pub async fn send<F>(&mut self, letter: &Letter, message: &[u8], before_data: F) -> Delivery
    where
        F: std::future::Future<Output = bool>,
    {
        let mut gate = Some(before_data);
        let reused = self.conn.is_some();
        let first = self.send_once(letter, message, &mut gate).await;
        let stale = reused
            && gate.is_some()
            && first.stage == Stage::Mail
            && first.code.is_none()
            && first.verdict == Verdict::Transient;
        if stale {
            tracing::debug!("reused connection was closed by the server; reconnecting");
            return self.send_once(letter, message, &mut gate).await;
        }
        first
    }

    async fn send_once<F>(
        &mut self,
        letter: &Letter,
        message: &[u8],
        gate: &mut Option<F>,
    ) -> Delivery
    where
        F: std::future::Future<Output = bool>,
    {
        if self.sent_on_conn >= self.endpoint.max_messages_per_connection {
            self.close().await;
        }
        if self.conn.as_ref().is_some_and(|c| c.has_broken()) {
            self.conn = None;
        }
        if self.conn.is_none() {
            let mut stage = Stage::Connect;
            let timeout = self.endpoint.connect_timeout;
            match tokio::time::timeout(timeout, self.open(&mut stage)).await {
                Ok(Ok(conn)) => {
                    self.conn = Some(conn);
                    self.sent_on_conn = 0;
                }
                Ok(Err(delivery)) => return delivery,
                Err(_) => {
                    return Delivery::no_reply(
                        stage,
                        format!(
                            "no answer within {} s while connecting ({stage})",
                            timeout.as_secs()
                        ),
                    )
                }
            }
        }
        let Some(mut conn) = self.conn.take() else {
            return Delivery::no_reply(Stage::Connect, "no connection");
        };
        let mut stage = Stage::Mail;
        let timeout = self.endpoint.send_timeout;
        let result = tokio::time::timeout(
            timeout,
            converse(&mut conn, &mut stage, letter, message, gate),
        )
        .await;
        match result {
            Err(_) => {
                // The conversation is in an unknown place: the connection cannot be reused.
                Delivery::no_reply(
                    stage,
                    format!("no reply within {} s at {stage}", timeout.as_secs()),
                )
            }
            Ok(Ok(response)) => {
                self.sent_on_conn += 1;
                self.conn = Some(conn);
                let text: Vec<&str> = response.message().collect();
                Delivery::from_reply(
                    Stage::EndOfData,
                    u16::from(response.code()),
                    &text.join("\n"),
                )
            }
            Ok(Err(Failure::Local(delivery))) => {
                self.conn = Some(conn);
                delivery
            }
            // The server waits for the message: this connection cannot be used again.
            Ok(Err(Failure::Abandoned(delivery))) => delivery,
            Ok(Err(Failure::Smtp(e))) => {
                let delivery = classify(stage, &e);
                let reusable = delivery.code.is_some_and(|c| c != 421)
                    && delivery.stage != Stage::EndOfData
                    && !conn.has_broken();
                if reusable {
                    // A refused MAIL/RCPT/DATA leaves the connection usable once reset.
                    let reset =
                        tokio::time::timeout(Duration::from_secs(10), conn.command(Rset)).await;
                    if matches!(reset, Ok(Ok(_))) {
                        self.conn = Some(conn);
                    }
                } else if delivery.stage == Stage::EndOfData && delivery.code.is_some() {
                    // A reply after the data ends the transaction cleanly.
                    if !conn.has_broken() {
                        self.sent_on_conn += 1;
                        self.conn = Some(conn);
                    }
                }
                delivery
            }
        }
    }

    /// Says QUIT (briefly) and drops the connection.
    pub async fn close(&mut self) {
        if let Some(mut conn) = self.conn.take() {
            let _ = tokio::time::timeout(Duration::from_secs(5), conn.quit()).await;
        }
        self.sent_on_conn = 0;
    }
}

/// Why a conversation ended without a positive reply.
enum Failure {
    /// lettre's error: a negative reply, a network failure, a malformed reply.
    Smtp(lettre::transport::smtp::Error),
    /// Missive's own refusal before sending anything.
    Local(Delivery),
    /// Missive stopped after DATA was accepted, without transmitting the message.
    Abandoned(Delivery),
}

impl From<lettre::transport::smtp::Error> for Failure {
    fn from(e: lettre::transport::smtp::Error) -> Self {
        Failure::Smtp(e)
    }
}

/// MAIL, RCPT, DATA, the message: one command at a time, `stage` kept current so a timeout or
/// error is known with the step it happened at.
async fn converse<F>(
    conn: &mut AsyncSmtpConnection,
    stage: &mut Stage,
    letter: &Letter,
    message: &[u8],
    gate: &mut Option<F>,
) -> Result<lettre::transport::smtp::response::Response, Failure>
where
    F: std::future::Future<Output = bool>,
{
    let address = |a: &crate::domain::EmailAddress| {
        a.as_str().parse::<lettre::Address>().map_err(|e| {
            Failure::Local(Delivery {
                verdict: Verdict::Permanent,
                stage: Stage::Mail,
                code: None,
                enhanced_code: None,
                reply: format!("`{a}` cannot be used in an SMTP envelope: {e}"),
                throttled: false,
            })
        })
    };
    let from = address(&letter.from_address)?;
    let to = address(&letter.recipient)?;
    let mut params = Vec::new();
    if !AsRef::<str>::as_ref(&from).is_ascii() || !AsRef::<str>::as_ref(&to).is_ascii() {
        if !conn.server_info().supports_feature(Extension::SmtpUtfEight) {
            return Err(Failure::Local(Delivery {
                verdict: Verdict::Permanent,
                stage: Stage::Mail,
                code: None,
                enhanced_code: None,
                reply: "the relay does not support SMTPUTF8, which this address needs".into(),
                throttled: false,
            }));
        }
        params.push(MailParameter::SmtpUtfEight);
    }
    *stage = Stage::Mail;
    conn.command(Mail::new(Some(from), params)).await?;
    *stage = Stage::Rcpt;
    conn.command(Rcpt::new(to, vec![])).await?;
    *stage = Stage::Data;
    conn.command(Data).await?;
    let proceed = match gate.take() {
        Some(g) => g.await,
        None => true,
    };
    if !proceed {
        return Err(Failure::Abandoned(Delivery::lease_lost(Stage::Data)));
    }
    *stage = Stage::EndOfData;
    Ok(conn.message(message).await?)
}

/// A stream whose first bytes (the server's greeting, already read and checked) are read again
/// before the rest.
struct Replay {
    prefix: Vec<u8>,
    pos: usize,
    inner: Box<dyn AsyncTokioStream>,
}

impl std::fmt::Debug for Replay {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Replay")
    }
}

impl Replay {
    /// Reads the greeting (one or more `220` lines); a negative or malformed one is a `Delivery`
    /// at the greeting stage.
    async fn after_greeting(mut inner: Box<dyn AsyncTokioStream>) -> Result<Replay, Delivery> {
        use tokio::io::AsyncReadExt;
        let mut buf = Vec::with_capacity(256);
        let mut chunk = [0u8; 512];
        loop {
            // A complete reply: its last line is `NNN text` (a space, not `-`, after the code).
            let text = String::from_utf8_lossy(&buf);
            if let Some(last) = text
                .strip_suffix("\r\n")
                .or_else(|| text.strip_suffix('\n'))
            {
                let line = last.rsplit('\n').next().unwrap_or_default();
                let code = line.get(..3).and_then(|c| c.parse::<u16>().ok());
                if line.as_bytes().get(3) != Some(&b'-') {
                    return match code {
                        Some(200..=299) => Ok(Replay {
                            prefix: buf,
                            pos: 0,
                            inner,
                        }),
                        Some(code) => {
                            let text: Vec<&str> = last
                                .lines()
                                .map(|l| l.get(4..).unwrap_or_default())
                                .collect();
                            Err(Delivery::from_reply(
                                Stage::Greeting,
                                code,
                                &text.join("\n"),
                            ))
                        }
                        None => Err(Delivery::no_reply(
                            Stage::Greeting,
                            format!("malformed greeting: {}", line.escape_debug()),
                        )),
                    };
                }
            }
            if buf.len() > 8192 {
                return Err(Delivery::no_reply(
                    Stage::Greeting,
                    "greeting longer than 8 KiB",
                ));
            }
            let n = inner.read(&mut chunk).await.map_err(|e| {
                Delivery::no_reply(Stage::Greeting, format!("reading the greeting: {e}"))
            })?;
            if n == 0 {
                return Err(Delivery::no_reply(
                    Stage::Greeting,
                    "the server closed the connection before greeting",
                ));
            }
            buf.extend_from_slice(&chunk[..n]);
        }
    }
}

impl AsyncRead for Replay {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        if self.pos < self.prefix.len() {
            let n = (self.prefix.len() - self.pos).min(buf.remaining());
            let start = self.pos;
            buf.put_slice(&self.prefix[start..start + n]);
            self.pos += n;
            return Poll::Ready(Ok(()));
        }
        Pin::new(&mut self.inner).poll_read(cx, buf)
    }
}

impl AsyncWrite for Replay {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write(cx, buf)
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}

impl AsyncTokioStream for Replay {
    fn peer_addr(&self) -> std::io::Result<std::net::SocketAddr> {
        self.inner.peer_addr()
    }
}

/// A TLS stream for `smtps://`, over the socket Missive opened (so `TCP_NODELAY` holds).
struct ImplicitTls(tokio_rustls::client::TlsStream<TcpStream>);

impl std::fmt::Debug for ImplicitTls {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("ImplicitTls")
    }
}

impl ImplicitTls {
    async fn connect(tcp: TcpStream, host: &str) -> Result<ImplicitTls, Delivery> {
        let fail =
            |why: String| Delivery::no_reply(Stage::Tls, format!("TLS with {host} failed: {why}"));
        let roots = rustls::RootCertStore {
            roots: webpki_roots::TLS_SERVER_ROOTS.to_vec(),
        };
        let config = rustls::ClientConfig::builder_with_provider(Arc::new(
            rustls::crypto::ring::default_provider(),
        ))
        .with_safe_default_protocol_versions()
        .map_err(|e| fail(e.to_string()))?
        .with_root_certificates(roots)
        .with_no_client_auth();
        let name = rustls::pki_types::ServerName::try_from(host.to_owned())
            .map_err(|e| fail(e.to_string()))?;
        let stream = tokio_rustls::TlsConnector::from(Arc::new(config))
            .connect(name, tcp)
            .await
            .map_err(|e| fail(e.to_string()))?;
        Ok(ImplicitTls(stream))
    }
}

impl AsyncRead for ImplicitTls {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.0).poll_read(cx, buf)
    }
}

impl AsyncWrite for ImplicitTls {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        Pin::new(&mut self.0).poll_write(cx, buf)
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.0).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.0).poll_shutdown(cx)
    }
}

impl AsyncTokioStream for ImplicitTls {
    fn peer_addr(&self) -> std::io::Result<std::net::SocketAddr> {
        self.0.get_ref().0.peer_addr()
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
