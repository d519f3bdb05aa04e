//! One SMTP connection on the wire: the socket (or its TLS stream), one read buffer that the
//! reply parser works in, and one reusable write buffer so each group of commands goes out in a
//! single write. It knows the protocol (greeting, EHLO/HELO, STARTTLS, AUTH PLAIN/LOGIN,
//! MAIL/RCPT/DATA pipelined when the server offers PIPELINING, the message, RSET, QUIT) and
//! reports every failure as a `Delivery` with its stage; the session (`mod.rs`) decides what to
//! do with the connection afterwards.
//!
//! Nothing here logs what it writes: AUTH lines carry the credentials.

use super::dot;
use super::reply::{self, Reply, ReplyError};
use super::tls::{self, Stream};
use super::{Credentials, SmtpEndpoint, TlsMode};
use crate::mailer::{Delivery, Stage};
use base64::Engine as _;
use secrecy::ExposeSecret as _;
use std::io::IoSlice;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// How much the read buffer asks the socket for at a time.
const READ_CHUNK: usize = 4096;

/// What the server said it supports in its EHLO reply (RFC 5321 section 4.1.1.1).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(super) struct Extensions {
    pub(super) pipelining: bool,
    pub(super) starttls: bool,
    pub(super) smtputf8: bool,
    pub(super) eight_bit_mime: bool,
    /// The largest message the server takes, when it says (`SIZE 0` means no fixed limit).
    pub(super) size: Option<u64>,
    pub(super) auth_plain: bool,
    pub(super) auth_login: bool,
}

impl Extensions {
    /// Reads the keyword lines of an EHLO reply (the first line is the server's name).
    pub(super) fn parse(reply: &Reply) -> Extensions {
        let mut ext = Extensions::default();
        for line in reply.lines.iter().skip(1) {
            let mut words = line.split_whitespace();
            let Some(keyword) = words.next() else {
                continue;
            };
            let keyword = keyword.to_ascii_uppercase();
            // Old servers write `AUTH=PLAIN LOGIN`.
            let (keyword, first) = match keyword.split_once('=') {
                Some((k, v)) => (k.to_owned(), Some(v.to_owned())),
                None => (keyword, None),
            };
            match keyword.as_str() {
                "PIPELINING" => ext.pipelining = true,
                "STARTTLS" => ext.starttls = true,
                "SMTPUTF8" => ext.smtputf8 = true,
                "8BITMIME" => ext.eight_bit_mime = true,
                "SIZE" => ext.size = words.next().and_then(|n| n.parse().ok()),
                "AUTH" => {
                    for mechanism in first.into_iter().chain(words.map(str::to_owned)) {
                        match mechanism.to_ascii_uppercase().as_str() {
                            "PLAIN" => ext.auth_plain = true,
                            "LOGIN" => ext.auth_login = true,
                            _ => {}
                        }
                    }
                }
                _ => {}
            }
        }
        ext
    }
}

/// Why a read or write on the connection failed.
#[derive(Debug, thiserror::Error)]
pub(super) enum WireError {
    #[error("the server closed the connection")]
    Closed,
    #[error("network error: {0}")]
    Io(#[from] std::io::Error),
    #[error(transparent)]
    Reply(#[from] ReplyError),
}

/// How MAIL, RCPT and DATA ended, when the server does not wait for the message.
#[derive(Debug)]
pub(super) enum Refusal {
    /// A 4xx/5xx reply to MAIL, RCPT or DATA. `pending` replies to commands already sent
    /// (pipelined after the refused one) are still to come before the connection is in step.
    Refused {
        delivery: Delivery,
        code: u16,
        pending: usize,
    },
    /// The connection failed or the server answered out of turn: it cannot be used again.
    Broken(Delivery),
}

/// One open, greeted (and, as configured, encrypted and authenticated) connection.
pub(super) struct Connection {
    stream: Stream,
    /// Bytes read and not yet parsed start at `read_pos`.
    read_buf: Vec<u8>,
    read_pos: usize,
    /// Reused for every command group, so sending allocates nothing once warm.
    write_buf: Vec<u8>,
    pub(super) extensions: Extensions,
}

impl Connection {
    /// Connects and sets the connection up: TCP (with `TCP_NODELAY`), implicit TLS, greeting,
    /// EHLO, STARTTLS (and EHLO again), AUTH. `stage` is kept current so a timeout around this
    /// is reported at the step it happened.
    pub(super) async fn open(ep: &SmtpEndpoint, stage: &mut Stage) -> Result<Connection, Delivery> {
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
        let stream = if ep.tls == TlsMode::Implicit {
            *stage = Stage::Tls;
            tls::handshake(&ep.tls_config, &ep.host, tcp)
                .await
                .map_err(|why| Delivery::no_reply(Stage::Tls, why))?
        } else {
            Stream::Plain(tcp)
        };
        let mut conn = Connection {
            stream,
            read_buf: Vec::with_capacity(READ_CHUNK),
            read_pos: 0,
            write_buf: Vec::with_capacity(1024),
            extensions: Extensions::default(),
        };

        *stage = Stage::Greeting;
        let greeting = conn
            .read_reply()
            .await
            .map_err(|e| Delivery::no_reply(Stage::Greeting, greeting_failure(e)))?;
        if !greeting.is_positive() {
            return Err(refusal(Stage::Greeting, &greeting));
        }

        *stage = Stage::Ehlo;
        conn.hello(ep).await?;

        let offered = conn.extensions.starttls;
        match ep.tls {
            TlsMode::StartTlsRequired | TlsMode::StartTlsOpportunistic if offered => {
                *stage = Stage::Tls;
                conn = conn.starttls(ep).await?;
                *stage = Stage::Ehlo;
                conn.hello(ep).await?;
            }
            TlsMode::StartTlsRequired => {
                conn.quit().await;
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

        if let Some(credentials) = &ep.credentials {
            *stage = Stage::Auth;
            conn.authenticate(credentials, &ep.host).await?;
        }
        let ext = &conn.extensions;
        tracing::debug!(
            pipelining = ext.pipelining,
            smtputf8 = ext.smtputf8,
            eight_bit_mime = ext.eight_bit_mime,
            size = ext.size,
            tls = matches!(conn.stream, Stream::Tls(_)),
            "SMTP connection ready"
        );
        Ok(conn)
    }

    /// EHLO, or HELO if the server does not know EHLO (500/502). Sets `extensions`.
    async fn hello(&mut self, ep: &SmtpEndpoint) -> Result<(), Delivery> {
        let at = Stage::Ehlo;
        let reply = self.command(at, &["EHLO ", ep.hello.as_str()]).await?;
        if reply.is_positive() {
            self.extensions = Extensions::parse(&reply);
            return Ok(());
        }
        if !matches!(reply.code, 500 | 502) {
            return Err(refusal(at, &reply));
        }
        let reply = self.command(at, &["HELO ", ep.hello.as_str()]).await?;
        if !reply.is_positive() {
            return Err(refusal(at, &reply));
        }
        self.extensions = Extensions::default();
        Ok(())
    }

    /// STARTTLS and the handshake; the connection comes back encrypted, its extensions to be
    /// read again with EHLO.
    async fn starttls(mut self, ep: &SmtpEndpoint) -> Result<Connection, Delivery> {
        let at = Stage::Tls;
        let reply = self.command(at, &["STARTTLS"]).await?;
        if reply.code != 220 {
            return Err(refusal(at, &reply));
        }
        if self.read_pos < self.read_buf.len() {
            // Bytes sent before the handshake would be read as if they came over TLS.
            return Err(Delivery::no_reply(
                at,
                "the server sent more after agreeing to STARTTLS, before TLS began; \
                 refusing the connection",
            ));
        }
        let Stream::Plain(tcp) = self.stream else {
            return Err(Delivery::no_reply(
                at,
                "STARTTLS on an encrypted connection",
            ));
        };
        let stream = tls::handshake(&ep.tls_config, &ep.host, tcp)
            .await
            .map_err(|why| Delivery::no_reply(at, why))?;
        Ok(Connection {
            stream,
            read_buf: self.read_buf,
            read_pos: 0,
            write_buf: self.write_buf,
            extensions: Extensions::default(),
        })
    }

    /// AUTH PLAIN if offered, else AUTH LOGIN. The credentials go only onto the wire.
    async fn authenticate(
        &mut self,
        credentials: &Credentials,
        host: &str,
    ) -> Result<(), Delivery> {
        let at = Stage::Auth;
        let b64 = base64::engine::general_purpose::STANDARD;
        let reply = if self.extensions.auth_plain {
            let token = b64.encode(format!(
                "\0{}\0{}",
                credentials.username,
                credentials.password.expose_secret()
            ));
            self.command(at, &["AUTH PLAIN ", token.as_str()]).await?
        } else if self.extensions.auth_login {
            let mut reply = self.command(at, &["AUTH LOGIN"]).await?;
            let password = credentials.password.expose_secret();
            for secret in [credentials.username.as_str(), password] {
                if reply.code != 334 {
                    break;
                }
                reply = self.command(at, &[b64.encode(secret).as_str()]).await?;
            }
            reply
        } else {
            return Err(Delivery::no_reply(
                at,
                format!(
                    "{host} offers no AUTH mechanism Missive speaks (PLAIN or LOGIN) and \
                     MISSIVE_SMTP__USERNAME is set (hint: on smtp:// the relay may offer AUTH \
                     only after STARTTLS; or unset the credentials for a relay that needs none)"
                ),
            ));
        };
        match reply.code {
            235 => Ok(()),
            400..=599 => Err(refusal(at, &reply)),
            _ => Err(out_of_turn(at, &reply)),
        }
    }

    /// MAIL FROM, RCPT TO and DATA: in one write when the server offers PIPELINING, else one
    /// at a time. `Ok` when DATA got 354 and the server waits for the message; otherwise the
    /// first refusal decides, with its stage.
    pub(super) async fn envelope(
        &mut self,
        stage: &mut Stage,
        from: &str,
        to: &str,
        smtputf8: bool,
    ) -> Result<(), Refusal> {
        let params = if smtputf8 { " SMTPUTF8" } else { "" };
        let mail: [&str; 4] = ["MAIL FROM:<", from, ">", params];
        let rcpt: [&str; 3] = ["RCPT TO:<", to, ">"];
        let steps = [Stage::Mail, Stage::Rcpt, Stage::Data];
        *stage = Stage::Mail;
        if self.extensions.pipelining {
            self.write_buf.clear();
            push_line(&mut self.write_buf, &mail);
            push_line(&mut self.write_buf, &rcpt);
            push_line(&mut self.write_buf, &["DATA"]);
            self.flush_write_buf()
                .await
                .map_err(|e| Refusal::Broken(Delivery::no_reply(Stage::Mail, e.to_string())))?;
            for (i, step) in steps.into_iter().enumerate() {
                *stage = step;
                let reply = self
                    .read_reply()
                    .await
                    .map_err(|e| Refusal::Broken(Delivery::no_reply(step, e.to_string())))?;
                check_envelope_reply(step, &reply, steps.len() - 1 - i)?;
            }
            return Ok(());
        }
        for step in steps {
            *stage = step;
            let reply = match step {
                Stage::Mail => self.command(step, &mail).await,
                Stage::Rcpt => self.command(step, &rcpt).await,
                _ => self.command(step, &["DATA"]).await,
            }
            .map_err(Refusal::Broken)?;
            check_envelope_reply(step, &reply, 0)?;
        }
        Ok(())
    }

    /// After a refusal: reads the `pending` replies still owed, then RSET. `false` if the
    /// connection cannot be trusted any more (a failure, or 354 to a DATA sent after a refused
    /// MAIL or RCPT: the server now waits for a message that will not come).
    pub(super) async fn recover(&mut self, pending: usize) -> bool {
        for _ in 0..pending {
            match self.read_reply().await {
                Ok(reply) if reply.is_positive() || reply.is_negative() => {}
                _ => return false,
            }
        }
        matches!(self.command(Stage::Mail, &["RSET"]).await, Ok(r) if r.is_positive())
    }

    /// The message after DATA's 354, then the final dot, in one write; the server's reply.
    pub(super) async fn message(&mut self, message: &[u8]) -> Result<Reply, WireError> {
        let data = dot::encode(message);
        let mut parts = [IoSlice::new(&data.body), IoSlice::new(data.end)];
        write_all_vectored(&mut self.stream, &mut parts).await?;
        self.stream.flush().await?;
        self.read_reply().await
    }

    /// QUIT, and its reply if it comes at once; errors do not matter any more.
    pub(super) async fn quit(&mut self) {
        if self.command(Stage::Mail, &["QUIT"]).await.is_ok() {
            let _ = self.stream.shutdown().await;
        }
    }

    /// Writes one command line (the `parts` joined, then CRLF) and reads its reply. A failure
    /// to write or read is a `Delivery` at `at`.
    async fn command(&mut self, at: Stage, parts: &[&str]) -> Result<Reply, Delivery> {
        self.write_buf.clear();
        push_line(&mut self.write_buf, parts);
        self.flush_write_buf()
            .await
            .map_err(|e| Delivery::no_reply(at, e.to_string()))?;
        self.read_reply()
            .await
            .map_err(|e| Delivery::no_reply(at, e.to_string()))
    }

    async fn flush_write_buf(&mut self) -> Result<(), WireError> {
        self.stream.write_all(&self.write_buf).await?;
        self.stream.flush().await?;
        Ok(())
    }

    /// The next complete reply, reading from the socket only when the buffer holds none (after
    /// pipelined commands, several replies often arrive in one read).
    async fn read_reply(&mut self) -> Result<Reply, WireError> {
        loop {
            if let Some((reply, used)) = reply::parse(&self.read_buf[self.read_pos..])? {
                self.read_pos += used;
                if self.read_pos == self.read_buf.len() {
                    self.read_buf.clear();
                    self.read_pos = 0;
                }
                return Ok(reply);
            }
            if self.read_pos > 0 {
                self.read_buf.drain(..self.read_pos);
                self.read_pos = 0;
            }
            self.read_buf.reserve(READ_CHUNK);
            if self.stream.read_buf(&mut self.read_buf).await? == 0 {
                return Err(WireError::Closed);
            }
        }
    }
}

/// `parts` joined, then CRLF, at the end of `buf`.
fn push_line(buf: &mut Vec<u8>, parts: &[&str]) {
    for part in parts {
        buf.extend_from_slice(part.as_bytes());
    }
    buf.extend_from_slice(b"\r\n");
}

/// Judges the reply to MAIL, RCPT (250) or DATA (354); `pending` replies follow it.
fn check_envelope_reply(step: Stage, reply: &Reply, pending: usize) -> Result<(), Refusal> {
    let expected = if step == Stage::Data {
        reply.code == 354
    } else {
        reply.is_positive()
    };
    if expected {
        Ok(())
    } else if reply.is_negative() {
        Err(Refusal::Refused {
            delivery: refusal(step, reply),
            code: reply.code,
            pending,
        })
    } else {
        Err(Refusal::Broken(out_of_turn(step, reply)))
    }
}

/// A 4xx/5xx reply at `at` as a delivery result; any other code where it was not expected is
/// a failure without a reply code (it must never count as accepted).
pub(super) fn refusal(at: Stage, reply: &Reply) -> Delivery {
    if reply.is_negative() {
        Delivery::from_reply(at, reply.code, &reply.text())
    } else {
        out_of_turn(at, reply)
    }
}

/// A reply that makes no sense at this point of the conversation.
pub(super) fn out_of_turn(at: Stage, reply: &Reply) -> Delivery {
    Delivery::no_reply(at, format!("unexpected reply at {at}: {reply}"))
}

fn greeting_failure(e: WireError) -> String {
    match e {
        WireError::Closed => "the server closed the connection before greeting".into(),
        WireError::Reply(ReplyError::Malformed(line)) => format!("malformed greeting: {line}"),
        other => format!("reading the greeting: {other}"),
    }
}

/// Writes every byte of `parts` (vectored: one system call for the message and its final dot
/// on a plain socket), however the writes split them.
async fn write_all_vectored(
    stream: &mut Stream,
    mut parts: &mut [IoSlice<'_>],
) -> Result<(), WireError> {
    IoSlice::advance_slices(&mut parts, 0);
    while !parts.is_empty() {
        let n = stream.write_vectored(parts).await?;
        if n == 0 {
            return Err(WireError::Io(std::io::ErrorKind::WriteZero.into()));
        }
        IoSlice::advance_slices(&mut parts, n);
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ehlo(text: &[&str]) -> Reply {
        Reply {
            code: 250,
            lines: text.iter().map(|s| s.to_string()).collect(),
        }
    }

    #[test]
    fn extensions_are_read_from_the_ehlo_reply() {
        let ext = Extensions::parse(&ehlo(&[
            "mx.example.org greets you",
            "pipelining",
            "SIZE 10240000",
            "STARTTLS",
            "AUTH LOGIN PLAIN CRAM-MD5",
            "8BITMIME",
            "SMTPUTF8",
        ]));
        assert_eq!(
            ext,
            Extensions {
                pipelining: true,
                starttls: true,
                smtputf8: true,
                eight_bit_mime: true,
                size: Some(10_240_000),
                auth_plain: true,
                auth_login: true,
            }
        );
    }

    #[test]
    fn the_server_name_line_and_old_auth_syntax_are_understood() {
        // The first line is the server's name, even if it looks like a keyword.
        let ext = Extensions::parse(&ehlo(&["PIPELINING", "AUTH=LOGIN", "SIZE x"]));
        assert!(!ext.pipelining);
        assert!(ext.auth_login && !ext.auth_plain);
        assert_eq!(ext.size, None);
        assert_eq!(
            Extensions::parse(&ehlo(&["only a name"])),
            Extensions::default()
        );
    }

    #[test]
    fn envelope_replies_are_judged_by_stage() {
        let r = |code, text: &str| Reply {
            code,
            lines: vec![text.to_owned()],
        };
        assert!(check_envelope_reply(Stage::Mail, &r(250, "Ok"), 2).is_ok());
        assert!(check_envelope_reply(Stage::Data, &r(354, "go"), 0).is_ok());
        let Err(Refusal::Refused {
            delivery, pending, ..
        }) = check_envelope_reply(Stage::Rcpt, &r(550, "5.1.1 No such user"), 1)
        else {
            panic!("a 550 is a refusal");
        };
        assert_eq!(
            (delivery.stage, delivery.code, pending),
            (Stage::Rcpt, Some(550), 1)
        );
        // 250 to DATA is out of turn: never a success, the connection is not trusted.
        let Err(Refusal::Broken(d)) = check_envelope_reply(Stage::Data, &r(250, "Ok"), 0) else {
            panic!("250 to DATA is out of turn");
        };
        assert_eq!((d.stage, d.code), (Stage::Data, None));
        assert_ne!(d.verdict, crate::mailer::Verdict::Accepted);
    }
}
