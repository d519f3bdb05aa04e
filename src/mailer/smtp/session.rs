//! One connection to the relay, its SMTP spoken by lettre's `AsyncSmtpConnection` over a
//! [`Wire`](super::wire): opening it (TCP with `TCP_NODELAY`, implicit TLS, the greeting read
//! apart, EHLO, STARTTLS guarded against injection, EHLO again, AUTH only inside TLS or to a
//! relay on this machine), and one letter's transaction on it (MAIL, RCPT and DATA beside the
//! worker's gate, then the message once the gate said yes).
//!
//! Every failure while opening is a [`RelayFault`] (the relay's, never a letter's); every
//! failure in a transaction is a [`Delivery`] with its stage. Nothing here logs what it writes:
//! AUTH lines carry the credentials, messages carry signers' words.
//!
//! Depends on `mailer`, `domain` and lettre's SMTP client.

use super::wire::{self, GreetingError, Opened, WireControl};
use super::{Credentials, SmtpEndpoint, TlsMode};
use crate::domain::{EmailAddress, Letter};
use crate::mailer::{enhanced_code, Delivery, FaultKind, RelayFault, Stage, Verdict};
use lettre::transport::smtp::authentication::{self, Mechanism};
use lettre::transport::smtp::client::AsyncSmtpConnection;
use lettre::transport::smtp::commands::{Auth, Data, Ehlo, Mail, Noop, Quit, Rcpt, Rset, Starttls};
use lettre::transport::smtp::extension::{
    ClientId, Extension, MailBodyParameter, MailParameter, ServerInfo,
};
use lettre::transport::smtp::response::Response;
use secrecy::ExposeSecret as _;
use std::net::SocketAddr;
use tokio::net::TcpStream;

/// The hint for every fault reaching the relay at all.
const REACH_HINT: &str = "check smtp.url (MISSIVE_SMTP__URL), and that the relay runs and \
    this machine may reach it";
const CREDENTIALS_HINT: &str = "check MISSIVE_SMTP__USERNAME and MISSIVE_SMTP__PASSWORD";

/// The worker's say on transmitting the message: a future until it has answered, then the
/// answer, kept for a second try on a fresh connection.
pub(super) enum Gate<F> {
    Pending(F),
    Done(bool),
}

/// How a letter's transaction ended, and so what becomes of the connection.
pub(super) enum Ended {
    /// The relay replied after the data, whatever it said: the transaction is over.
    Replied(Delivery),
    /// MAIL, RCPT or DATA was refused: the connection is usable again after RSET.
    Refused(Delivery),
    /// Missive's own refusal before MAIL: the connection was not touched.
    NotSent(Delivery),
    /// The connection failed, or is in a state it cannot leave (DATA accepted and no message
    /// coming): it must not be used again.
    Broken(Delivery),
}

impl Ended {
    pub(super) fn delivery(&self) -> &Delivery {
        match self {
            Ended::Replied(d) | Ended::Refused(d) | Ended::NotSent(d) | Ended::Broken(d) => d,
        }
    }
}

/// An open, greeted, (as configured) encrypted and authenticated connection.
pub(super) struct Connection {
    smtp: AsyncSmtpConnection,
    wire: WireControl,
    /// What the relay offered in its last EHLO reply (after STARTTLS, the encrypted one).
    info: ServerInfo,
}

/// A failed lettre call: the relay's reply, or why there was none.
enum Failed {
    Reply { code: u16, text: String },
    NoReply(String),
}

fn failed(e: &lettre::transport::smtp::Error) -> Failed {
    let detail = std::error::Error::source(e).map(ToString::to_string);
    match e.status() {
        Some(code) => Failed::Reply {
            code: code.into(),
            text: detail.unwrap_or_default(),
        },
        None if e.is_response() && detail.as_deref() == Some("incomplete response") => {
            Failed::NoReply("the relay closed the connection".into())
        }
        None => Failed::NoReply(match detail {
            Some(detail) => detail,
            None => e.to_string(),
        }),
    }
}

/// The lines of a reply joined by spaces, an enhanced status code repeated on every line kept
/// once (`550-5.1.1 No such user` / `550 5.1.1 here` reads `5.1.1 No such user here`).
fn reply_text(response: &Response) -> String {
    let lines: Vec<&str> = response.message().collect();
    let Some((first, rest)) = lines.split_first() else {
        return String::new();
    };
    let repeated = first
        .split_whitespace()
        .next()
        .filter(|w| enhanced_code(w).is_some());
    let mut text = (*first).to_owned();
    for line in rest {
        text.push(' ');
        let line = match repeated {
            Some(code) => line
                .strip_prefix(code)
                .filter(|rest| rest.starts_with(' '))
                .map_or(*line, str::trim_start),
            None => line,
        };
        text.push_str(line);
    }
    text
}

/// A relay fault for a failed step of the session set-up: a refusal of `what`, or no reply.
fn setup_fault(stage: Stage, what: &str, e: &lettre::transport::smtp::Error) -> RelayFault {
    match failed(e) {
        Failed::Reply { code, text } => RelayFault::refused(stage, what, code, &text),
        Failed::NoReply(why) => {
            RelayFault::new(FaultKind::TurnedAway, stage, format!("{what}: {why}"))
        }
    }
}

/// Whether AUTH may go over this connection: inside TLS, or to a relay on this machine.
pub(super) fn may_authenticate(tls: bool, peer: SocketAddr) -> bool {
    tls || peer.ip().to_canonical().is_loopback()
}

/// Opens a TCP connection to the relay, trying each address its name resolves to.
async fn connect(ep: &SmtpEndpoint) -> Result<TcpStream, RelayFault> {
    let unreachable = |what: String| {
        RelayFault::new(FaultKind::Unreachable, Stage::Connect, what).with_hint(REACH_HINT)
    };
    let addresses = tokio::net::lookup_host((ep.host.as_str(), ep.port))
        .await
        .map_err(|e| unreachable(format!("cannot find the relay host `{}`: {e}", ep.host)))?;
    let mut last = None;
    for address in addresses {
        match TcpStream::connect(address).await {
            Ok(tcp) => {
                tcp.set_nodelay(true).map_err(|e| {
                    unreachable(format!("cannot set TCP_NODELAY on the connection: {e}"))
                })?;
                return Ok(tcp);
            }
            Err(e) => last = Some(e),
        }
    }
    Err(unreachable(match last {
        Some(e) => format!("cannot connect to the relay {}:{}: {e}", ep.host, ep.port),
        None => format!("the relay host `{}` has no address", ep.host),
    }))
}

impl Connection {
    /// Connects and sets the connection up. `stage` is kept current so a timeout around this
    /// is reported at the step it happened.
    pub(super) async fn open(
        ep: &SmtpEndpoint,
        stage: &mut Stage,
    ) -> Result<Connection, RelayFault> {
        *stage = Stage::Connect;
        let tcp = connect(ep).await?;
        let mut opened = Opened::plain(tcp)
            .map_err(|e| RelayFault::new(FaultKind::Unreachable, Stage::Connect, e.to_string()))?;
        if ep.tls == TlsMode::Implicit {
            *stage = Stage::Tls;
            opened = opened
                .encrypt(&ep.tls_config, &ep.host)
                .await
                .map_err(|why| RelayFault::new(FaultKind::Unusable, Stage::Tls, why))?;
        }

        *stage = Stage::Greeting;
        let greeting = wire::read_greeting(&mut opened)
            .await
            .map_err(|e| match e {
                GreetingError::Malformed(_) => {
                    RelayFault::new(FaultKind::Unusable, Stage::Greeting, e.to_string())
                        .with_hint(REACH_HINT)
                }
                _ => RelayFault::new(FaultKind::TurnedAway, Stage::Greeting, e.to_string()),
            })?;
        if !(200..300).contains(&greeting.code) {
            let fault = RelayFault::refused(
                Stage::Greeting,
                "the relay turned the connection away at its greeting",
                greeting.code,
                &greeting.text,
            );
            return Err(match fault.kind {
                FaultKind::TurnedAway => fault.with_hint(
                    "the relay may be busy or capping its connections: lower smtp.connections",
                ),
                _ => fault.with_hint(
                    "the relay does not accept connections from this machine: ask its operator",
                ),
            });
        }

        *stage = Stage::Ehlo;
        let (wire, control) = opened.into_wire(greeting.raw);
        let client = ClientId::Domain(ep.hello.clone());
        let smtp = AsyncSmtpConnection::connect_with_transport(Box::new(wire), &client)
            .await
            .map_err(|e| ehlo_fault(&e))?;
        let info = smtp.server_info().clone();
        let mut conn = Connection {
            smtp,
            wire: control,
            info,
        };

        let offered = conn.info.supports_feature(Extension::StartTls);
        match ep.tls {
            TlsMode::StartTlsRequired | TlsMode::StartTlsOpportunistic if offered => {
                *stage = Stage::Tls;
                conn.starttls(ep).await?;
                *stage = Stage::Ehlo;
                let reply = conn
                    .smtp
                    .command(Ehlo::new(client))
                    .await
                    .map_err(|e| ehlo_fault(&e))?;
                conn.info = ServerInfo::from_response(&reply).map_err(|e| {
                    RelayFault::new(
                        FaultKind::Unusable,
                        Stage::Ehlo,
                        format!("the relay's EHLO reply cannot be read: {e}"),
                    )
                })?;
            }
            TlsMode::StartTlsRequired => {
                conn.quit().await;
                return Err(RelayFault::new(
                    FaultKind::Unusable,
                    Stage::Tls,
                    format!(
                        "{} does not offer STARTTLS and smtp.starttls is \"required\"",
                        ep.host
                    ),
                )
                .with_hint(
                    "use smtps://, or starttls = \"opportunistic\" for a relay on a network you trust",
                ));
            }
            _ => {}
        }

        if let Some(credentials) = &ep.credentials {
            *stage = Stage::Auth;
            conn.authenticate(credentials, ep).await?;
        }
        if ep.smtputf8 && !conn.info.supports_feature(Extension::SmtpUtfEight) {
            conn.quit().await;
            return Err(RelayFault::new(
                FaultKind::Unusable,
                Stage::Ehlo,
                format!(
                    "smtp.smtputf8 is true but {} does not offer SMTPUTF8",
                    ep.host
                ),
            )
            .with_hint("set smtp.smtputf8 = false, or use a relay that takes SMTPUTF8"));
        }
        tracing::debug!(
            smtputf8 = conn.info.supports_feature(Extension::SmtpUtfEight),
            eight_bit_mime = conn.info.supports_feature(Extension::EightBitMime),
            tls = conn.wire.is_tls(),
            "SMTP connection ready"
        );
        Ok(conn)
    }

    /// STARTTLS, refusing anything the relay sends after its `220`, then the handshake.
    async fn starttls(&mut self, ep: &SmtpEndpoint) -> Result<(), RelayFault> {
        self.wire.arm_starttls();
        let result = self.smtp.command(Starttls).await;
        if self.wire.injected() {
            return Err(RelayFault::new(
                FaultKind::Unusable,
                Stage::Tls,
                wire::INJECTION,
            ));
        }
        result.map_err(|e| setup_fault(Stage::Tls, "the relay refused STARTTLS", &e))?;
        self.wire
            .start_tls(&ep.tls_config, &ep.host)
            .await
            .map_err(|why| RelayFault::new(FaultKind::Unusable, Stage::Tls, why))
    }

    /// AUTH PLAIN if offered, else AUTH LOGIN; only inside TLS or to a relay on this machine.
    async fn authenticate(
        &mut self,
        credentials: &Credentials,
        ep: &SmtpEndpoint,
    ) -> Result<(), RelayFault> {
        let at = Stage::Auth;
        if !may_authenticate(self.wire.is_tls(), self.wire.peer()) {
            self.quit().await;
            return Err(RelayFault::new(
                FaultKind::Unusable,
                at,
                format!(
                    "refusing to send the relay's password in clear text: the connection to {} \
                     is not encrypted and the relay is not on this machine",
                    ep.host
                ),
            )
            .with_hint(
                "use smtps:// or smtp.starttls = \"required\"; if the relay offers STARTTLS and \
                 Missive did not see it, something on the way may be removing it",
            ));
        }
        let Some(mechanism) = self
            .info
            .get_auth_mechanism(&[Mechanism::Plain, Mechanism::Login])
        else {
            self.quit().await;
            return Err(RelayFault::new(
                FaultKind::Unusable,
                at,
                format!(
                    "{} offers no AUTH mechanism Missive speaks (PLAIN or LOGIN) and \
                     MISSIVE_SMTP__USERNAME is set",
                    ep.host
                ),
            )
            .with_hint(
                "on smtp:// the relay may offer AUTH only after STARTTLS; or unset the \
                 credentials for a relay that needs none",
            ));
        };
        // lettre's credentials are plain strings, dropped with this call.
        let login = authentication::Credentials::new(
            credentials.username.clone(),
            credentials.password.expose_secret().to_owned(),
        );
        let refused = |e: &lettre::transport::smtp::Error| {
            let fault = setup_fault(at, "the relay refused the credentials", e);
            match fault.kind {
                FaultKind::Unusable => fault.with_hint(CREDENTIALS_HINT),
                _ => fault,
            }
        };
        let command = Auth::new(mechanism, login.clone(), None).map_err(|e| refused(&e))?;
        let mut reply = self.smtp.command(command).await.map_err(|e| refused(&e))?;
        // LOGIN asks for the user name, then the password; a relay asking for more is stopped.
        for _ in 0..3 {
            if !reply.has_code(334) {
                break;
            }
            let command = Auth::new_from_response(mechanism, login.clone(), &reply)
                .map_err(|e| refused(&e))?;
            reply = self.smtp.command(command).await.map_err(|e| refused(&e))?;
        }
        if reply.has_code(235) {
            Ok(())
        } else {
            Err(RelayFault::new(
                FaultKind::Unusable,
                at,
                format!(
                    "unexpected reply to AUTH: {} {}",
                    u16::from(reply.code()),
                    reply_text(&reply)
                ),
            ))
        }
    }

    /// Whether the relay still answers (NOOP).
    pub(super) async fn noop(&mut self) -> bool {
        self.smtp.command(Noop).await.is_ok()
    }

    /// QUIT; errors do not matter any more.
    pub(super) async fn quit(&mut self) {
        let _ = self.smtp.command(Quit).await;
    }

    /// After a refused MAIL, RCPT or DATA: RSET, so the connection can carry the next letter.
    pub(super) async fn reset(&mut self) -> bool {
        self.smtp.command(Rset).await.is_ok()
    }

    /// One letter: MAIL, RCPT and DATA with the gate beside them, then the message once the
    /// gate has said yes. `stage` is kept current so a timeout is known with its step.
    pub(super) async fn transaction<F>(
        &mut self,
        stage: &mut Stage,
        letter: &Letter,
        message: &[u8],
        gate: &mut Gate<F>,
    ) -> Ended
    where
        F: std::future::Future<Output = bool>,
    {
        let (from, to, params) = match self.envelope(letter, message) {
            Ok(envelope) => envelope,
            Err(delivery) => return Ended::NotSent(delivery),
        };
        let envelope = envelope(&mut self.smtp, stage, from, to, params);
        let (envelope, proceed) = match std::mem::replace(gate, Gate::Done(false)) {
            Gate::Pending(g) => tokio::join!(envelope, g),
            Gate::Done(proceed) => (envelope.await, proceed),
        };
        *gate = Gate::Done(proceed);
        if let Err(ended) = envelope {
            return ended;
        }
        // DATA was accepted and the gate has answered: no byte of the message goes without its
        // yes. Without it the relay waits for a message that will not come.
        if !proceed {
            return Ended::Broken(Delivery::lease_lost(Stage::Data));
        }
        *stage = Stage::EndOfData;
        match self.smtp.message(message).await {
            Ok(reply) => Ended::Replied(Delivery::from_reply(
                Stage::EndOfData,
                reply.code().into(),
                &reply_text(&reply),
            )),
            Err(e) => match failed(&e) {
                Failed::Reply { code, text } => {
                    Ended::Replied(Delivery::from_reply(Stage::EndOfData, code, &text))
                }
                // The message was (perhaps partly) written and no reply came: in doubt.
                Failed::NoReply(why) => Ended::Broken(Delivery::no_reply(Stage::EndOfData, why)),
            },
        }
    }

    /// The envelope addresses and MAIL parameters for `letter`, or why it cannot go over this
    /// connection.
    fn envelope(
        &self,
        letter: &Letter,
        message: &[u8],
    ) -> Result<(lettre::Address, lettre::Address, Vec<MailParameter>), Delivery> {
        let address = |a: &EmailAddress| {
            a.as_str().parse::<lettre::Address>().map_err(|e| Delivery {
                verdict: Verdict::Permanent,
                stage: Stage::Mail,
                code: None,
                enhanced_code: None,
                reply: format!("`{a}` cannot be used in an SMTP envelope: {e}"),
                throttled: false,
            })
        };
        let from = address(&letter.from_address)?;
        let to = address(&letter.recipient)?;
        // The Reply-To counts too: a header address needs SMTPUTF8 as much as the envelope's.
        let utf8 = [&letter.from_address, &letter.reply_to, &letter.recipient]
            .into_iter()
            .any(EmailAddress::needs_smtputf8);
        let offers = |e| self.info.supports_feature(e);
        let mut params = Vec::new();
        if utf8 {
            if !offers(Extension::SmtpUtfEight) {
                return Err(Delivery::no_reply(
                    Stage::Mail,
                    "this letter's addresses need SMTPUTF8, which the relay does not offer \
                     (it waits until the relay does: see smtp.smtputf8)",
                ));
            }
            params.push(MailParameter::SmtpUtfEight);
        }
        if !message.is_ascii() {
            if offers(Extension::EightBitMime) {
                params.push(MailParameter::Body(MailBodyParameter::EightBitMime));
            } else if !utf8 {
                return Err(Delivery::no_reply(
                    Stage::Mail,
                    "the message holds 8-bit bytes and the relay offers neither 8BITMIME nor \
                     SMTPUTF8",
                ));
            }
        }
        Ok((from, to, params))
    }
}

/// MAIL, RCPT and DATA, one at a time; the first refusal decides.
async fn envelope(
    smtp: &mut AsyncSmtpConnection,
    stage: &mut Stage,
    from: lettre::Address,
    to: lettre::Address,
    params: Vec<MailParameter>,
) -> Result<(), Ended> {
    let judge = |step: Stage, e: lettre::transport::smtp::Error| match failed(&e) {
        Failed::Reply { code, text } => Ended::Refused(Delivery::from_reply(step, code, &text)),
        Failed::NoReply(why) => Ended::Broken(Delivery::no_reply(step, why)),
    };
    *stage = Stage::Mail;
    smtp.command(Mail::new(Some(from), params))
        .await
        .map_err(|e| judge(Stage::Mail, e))?;
    *stage = Stage::Rcpt;
    smtp.command(Rcpt::new(to, Vec::new()))
        .await
        .map_err(|e| judge(Stage::Rcpt, e))?;
    *stage = Stage::Data;
    let reply = smtp
        .command(Data)
        .await
        .map_err(|e| judge(Stage::Data, e))?;
    if reply.has_code(354) {
        Ok(())
    } else {
        // A 2xx to DATA is out of turn: never a success, and the connection is not trusted.
        Err(Ended::Broken(Delivery::no_reply(
            Stage::Data,
            format!(
                "unexpected reply to DATA: {} {}",
                u16::from(reply.code()),
                reply_text(&reply)
            ),
        )))
    }
}

/// A failed EHLO (lettre's `connect_with_transport` sends it right after the greeting).
fn ehlo_fault(e: &lettre::transport::smtp::Error) -> RelayFault {
    let fault = setup_fault(Stage::Ehlo, "the relay refused EHLO", e);
    match fault.kind {
        FaultKind::Unusable => fault.with_hint(
            "check smtp.hello_name (the name Missive gives itself) and that the relay accepts \
             this machine",
        ),
        _ => fault,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn credentials_go_only_inside_tls_or_to_this_machine() {
        let at = |s: &str| s.parse::<SocketAddr>().unwrap();
        assert!(may_authenticate(false, at("127.0.0.1:25")));
        assert!(may_authenticate(false, at("[::1]:25")));
        assert!(may_authenticate(false, at("[::ffff:127.0.0.1]:25")));
        assert!(!may_authenticate(false, at("192.0.2.10:587")));
        assert!(!may_authenticate(false, at("[2001:db8::1]:587")));
        assert!(may_authenticate(true, at("192.0.2.10:587")));
    }
}
