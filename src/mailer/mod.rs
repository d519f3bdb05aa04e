//! Turning a queued letter into a MIME message (lettre's builder, `message.rs`) and handing it
//! to a transport: SMTP (`smtp/`: lettre's connection over sockets Missive owns, one per
//! sending task) or the outbox folder (`outbox.rs`); the classification of every letter's
//! result as accepted, transient, permanent or in doubt; and the faults of the relay's session
//! (`fault.rs`), which are never a letter's.
//!
//! Depends on `domain` and `config` only.

mod fault;
mod message;
mod outbox;
mod smtp;

pub use fault::{FaultKind, RelayFault};
pub use message::build_message;
pub use outbox::Outbox;
pub use smtp::{check_ca_file, SmtpEndpoint, SmtpSession, TlsMode};

use crate::config::Settings;
use crate::domain::Letter;
use std::fmt;
use std::sync::Arc;

/// How far a delivery attempt got: the SMTP stage of the last command sent.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Stage {
    Connect,
    Tls,
    Greeting,
    Ehlo,
    Auth,
    Mail,
    Rcpt,
    Data,
    /// The message and its final dot were sent; waiting for the reply.
    EndOfData,
    Outbox,
}

impl Stage {
    /// The name recorded with the attempt.
    pub fn as_str(self) -> &'static str {
        match self {
            Stage::Connect => "connect",
            Stage::Tls => "tls",
            Stage::Greeting => "greeting",
            Stage::Ehlo => "ehlo",
            Stage::Auth => "auth",
            Stage::Mail => "mail",
            Stage::Rcpt => "rcpt",
            Stage::Data => "data",
            Stage::EndOfData => "end_of_data",
            Stage::Outbox => "outbox",
        }
    }
}

impl fmt::Display for Stage {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// What became of one delivery attempt.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    /// 2xx after the end of data (or written to the outbox).
    Accepted,
    /// Worth trying again later: 4xx, timeouts, lost connections before the data was complete.
    Transient,
    /// Will never work as it is: 5xx.
    Permanent,
    /// The message was transmitted but the reply never came: it may have been delivered.
    InDoubt,
}

/// The result of one attempt, with the server's own words.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Delivery {
    pub verdict: Verdict,
    pub stage: Stage,
    pub code: Option<u16>,
    /// The enhanced status code (`5.1.1`), when the reply had one.
    pub enhanced_code: Option<String>,
    /// The reply text, or what went wrong, for the organiser.
    pub reply: String,
    /// Whether the server asked us to slow down (421, 454, 4.7.x).
    pub throttled: bool,
}

impl Delivery {
    /// A result from a server reply `code text` at `stage`.
    pub fn from_reply(stage: Stage, code: u16, text: &str) -> Delivery {
        let verdict = match code {
            200..=399 => Verdict::Accepted,
            400..=499 => Verdict::Transient,
            _ => Verdict::Permanent,
        };
        let enhanced = enhanced_code(text);
        let throttled = code == 421
            || code == 454
            || (400..500).contains(&code)
                && enhanced.as_deref().is_some_and(|e| e.starts_with("4.7."));
        Delivery {
            verdict,
            stage,
            code: Some(code),
            enhanced_code: enhanced,
            reply: text.trim().to_owned(),
            throttled,
        }
    }

    /// The letter was not transmitted because its lease was lost to another worker.
    pub fn lease_lost(stage: Stage) -> Delivery {
        Delivery {
            verdict: Verdict::Transient,
            stage,
            code: None,
            enhanced_code: None,
            reply: "not transmitted: the lease on this letter was lost (another worker may own it)"
                .into(),
            throttled: false,
        }
    }

    /// A failure without a reply (network, timeout, TLS): transient, or in doubt once the
    /// message may have reached the server.
    pub fn no_reply(stage: Stage, what: impl Into<String>) -> Delivery {
        Delivery {
            verdict: if stage == Stage::EndOfData {
                Verdict::InDoubt
            } else {
                Verdict::Transient
            },
            stage,
            code: None,
            enhanced_code: None,
            reply: what.into(),
            throttled: false,
        }
    }
}

/// What became of handing one letter to the transport.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Handover {
    /// The letter's own attempt, whatever its result: it counts as one of its attempts.
    Attempted(Delivery),
    /// The relay's session failed before the letter's envelope went out: nothing about the
    /// letter is known, and it was not attempted.
    Relay(RelayFault),
}

/// The `x.y.z` enhanced status code at the start of a reply text (RFC 3463), if any.
fn enhanced_code(text: &str) -> Option<String> {
    let first = text.split_whitespace().next()?;
    let parts: Vec<&str> = first.split('.').collect();
    let ok = parts.len() == 3
        && matches!(parts[0], "2" | "4" | "5")
        && parts[1..]
            .iter()
            .all(|p| !p.is_empty() && p.len() <= 3 && p.chars().all(|c| c.is_ascii_digit()));
    ok.then(|| first.to_owned())
}

/// Where letters go: built once at start-up, shared by every sending task.
#[derive(Debug, Clone)]
pub enum Transport {
    /// `.eml` files in a folder; nothing leaves the machine.
    Outbox(Arc<Outbox>),
    /// An SMTP relay.
    Smtp(Arc<SmtpEndpoint>),
}

impl Transport {
    /// The transport the settings ask for: SMTP when `smtp.url` is set, else the outbox.
    pub fn from_settings(settings: &Settings) -> Result<Transport, MailerError> {
        // Checked even for the outbox, so a wrong path shows before SMTP is switched on.
        if let Some(path) = settings.smtp.ca_file() {
            check_ca_file(path).map_err(MailerError::CaFile)?;
        }
        let url = settings.smtp.url.trim();
        if url.is_empty() {
            Ok(Transport::Outbox(Arc::new(Outbox::new(
                settings.outbox.dir.clone(),
            ))))
        } else {
            let endpoint = SmtpEndpoint::from_settings(&settings.smtp)?;
            Ok(Transport::Smtp(Arc::new(endpoint)))
        }
    }

    /// A sender for one task: it owns its connection and reuses it letter after letter.
    pub fn sender(&self) -> Sender {
        match self {
            Transport::Outbox(o) => Sender::Outbox(o.clone()),
            Transport::Smtp(e) => Sender::Smtp(Box::new(SmtpSession::new(e.clone()))),
        }
    }

    /// How many letters may be in flight at once.
    pub fn concurrency(&self) -> usize {
        match self {
            Transport::Outbox(_) => 2,
            Transport::Smtp(e) => e.connections,
        }
    }

    /// Opens a connection to the relay and closes it again: whether the relay can be used now.
    /// The outbox always can.
    pub async fn probe(&self) -> Result<(), RelayFault> {
        let mut sender = self.sender();
        let ready = sender.ready().await;
        sender.close().await;
        ready
    }

    /// The relay letters go to, `host:port`, or `outbox` (the key of its health record).
    pub fn relay_key(&self) -> String {
        match self {
            Transport::Outbox(_) => "outbox".into(),
            Transport::Smtp(e) => format!("{}:{}", e.host, e.port),
        }
    }

    /// A description for logs and summaries (no secrets).
    pub fn describe(&self) -> String {
        match self {
            Transport::Outbox(o) => format!("outbox folder {}", o.dir().display()),
            Transport::Smtp(e) => format!("SMTP relay {}", e.describe()),
        }
    }
}

/// One sending task's end of the transport.
#[derive(Debug)]
pub enum Sender {
    Outbox(Arc<Outbox>),
    Smtp(Box<SmtpSession>),
}

impl Sender {
    /// Makes sure the transport can take the next letter: for SMTP, a connection is open and
    /// answering (see [`SmtpSession::ready`]). A fault is the relay's.
    pub async fn ready(&mut self) -> Result<(), RelayFault> {
        match self {
            Sender::Outbox(_) => Ok(()),
            Sender::Smtp(s) => s.ready().await,
        }
    }

    /// Whether a connection to the relay is open (the outbox always counts as one).
    pub fn is_connected(&self) -> bool {
        match self {
            Sender::Outbox(_) => true,
            Sender::Smtp(s) => s.is_connected(),
        }
    }

    /// Sends one letter and says what became of it. Never panics, never hangs past the
    /// configured timeouts.
    ///
    /// `before_data` is where the worker records that the letter may now be delivered: SMTP
    /// awaits it beside the envelope (MAIL, RCPT, DATA), the outbox before writing the file.
    /// No byte of the message is transmitted until it has yielded `true`; if it yields `false`
    /// (the lease was lost), nothing is.
    pub async fn send<F>(
        &mut self,
        letter: &Letter,
        message_id: &str,
        file_stem: &str,
        before_data: F,
    ) -> Handover
    where
        F: std::future::Future<Output = bool>,
    {
        let message = match build_message(letter, message_id) {
            Ok(m) => m,
            Err(e) => {
                return Handover::Attempted(Delivery {
                    verdict: Verdict::Permanent,
                    stage: Stage::Connect,
                    code: None,
                    enhanced_code: None,
                    reply: format!("the letter cannot be written as an email: {e}"),
                    throttled: false,
                })
            }
        };
        match self {
            Sender::Outbox(o) => {
                if !before_data.await {
                    return Handover::Attempted(Delivery::lease_lost(Stage::Outbox));
                }
                Handover::Attempted(o.write(file_stem, &message).await)
            }
            Sender::Smtp(s) => s.send(letter, &message, before_data).await,
        }
    }

    /// Closes the connection politely (QUIT), if there is one.
    pub async fn close(&mut self) {
        if let Sender::Smtp(s) = self {
            s.close().await;
        }
    }
}

/// Errors of this module.
#[derive(Debug, thiserror::Error)]
pub enum MailerError {
    #[error("{0}")]
    Url(String),
    #[error("cannot build the message: {0}")]
    Build(String),
    /// `smtp.ca_file` cannot be used; the text names the file and what is wrong with it.
    #[error("smtp.ca_file {0}")]
    CaFile(String),
    #[error("{0}")]
    Tls(String),
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::tests::env;

    #[test]
    fn a_bad_smtp_url_stops_start_up_naming_the_key() {
        for url in ["http://x", "smtp://user:pw@mail.example.org", "not a url"] {
            let settings = Settings::load(None, env(&[("MISSIVE_SMTP__URL", url)])).unwrap();
            let err = Transport::from_settings(&settings).unwrap_err().to_string();
            assert!(err.contains("smtp.url"), "{url}: {err}");
        }
    }

    #[test]
    fn a_ca_file_that_cannot_be_used_stops_start_up_naming_the_key_and_the_file() {
        let dir = tempfile::tempdir().unwrap();
        let missing = dir.path().join("missing.pem");
        let not_pem = dir.path().join("notes.txt");
        std::fs::write(&not_pem, "not a certificate\n").unwrap();
        for (path, words) in [
            (&missing, "cannot be read"),
            (&not_pem, "holds no certificate"),
        ] {
            let settings = Settings::load(
                None,
                env(&[
                    ("MISSIVE_SMTP__URL", "smtp://127.0.0.1:2525"),
                    ("MISSIVE_SMTP__CA_FILE", &path.display().to_string()),
                ]),
            )
            .unwrap();
            let err = Transport::from_settings(&settings).unwrap_err().to_string();
            let name = path.file_name().unwrap().to_str().unwrap();
            assert!(
                err.contains("smtp.ca_file") && err.contains(name) && err.contains(words),
                "{err}"
            );
        }
        let unset = Settings::load(None, env(&[])).unwrap();
        assert_eq!(unset.smtp.ca_file(), None);
        assert!(Transport::from_settings(&unset).is_ok());
    }

    #[test]
    fn an_smtp_url_holding_a_password_is_refused_without_showing_it() {
        for (url, shown) in [
            (
                "smtp://letters:hunter2@mail.example.org:587",
                "smtp://letters:***@mail.example.org:587",
            ),
            (
                "smtp://letters:hunter2@mail.example.org:99999",
                "smtp://***@mail.example.org:99999",
            ),
        ] {
            let settings = Settings::load(None, env(&[("MISSIVE_SMTP__URL", url)])).unwrap();
            let err = Transport::from_settings(&settings).unwrap_err().to_string();
            assert!(err.contains("smtp.url") && err.contains(shown), "{err}");
            assert!(!err.contains("hunter2"), "{err}");
        }
    }

    #[test]
    fn replies_are_classified_by_code() {
        let d = Delivery::from_reply(Stage::Rcpt, 550, "5.1.1 User unknown");
        assert_eq!(d.verdict, Verdict::Permanent);
        assert_eq!(d.enhanced_code.as_deref(), Some("5.1.1"));
        let d = Delivery::from_reply(Stage::Rcpt, 451, "4.7.1 Greylisted");
        assert_eq!(d.verdict, Verdict::Transient);
        assert!(d.throttled);
        let d = Delivery::from_reply(Stage::Rcpt, 450, "mailbox busy");
        assert!(!d.throttled);
        assert_eq!(d.enhanced_code, None);
        assert_eq!(
            Delivery::from_reply(Stage::EndOfData, 250, "2.0.0 Ok").verdict,
            Verdict::Accepted
        );
    }

    #[test]
    fn losing_the_connection_after_the_dot_is_in_doubt() {
        assert_eq!(
            Delivery::no_reply(Stage::EndOfData, "eof").verdict,
            Verdict::InDoubt
        );
        assert_eq!(
            Delivery::no_reply(Stage::Rcpt, "eof").verdict,
            Verdict::Transient
        );
    }
}
