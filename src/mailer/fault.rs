//! Faults of the relay's session: what went wrong while opening a connection to the relay
//! (reaching it, its greeting, EHLO, STARTTLS, TLS, AUTH) or because the relay cannot give what
//! the configuration asks for. None of them says anything about a letter: the worker never
//! fails a letter or spends its attempts on one. Each fault says how far it reaches (this one
//! connection, or the relay as a whole), in the server's own words, with a hint for the fix
//! when one is known.
//!
//! Depends on `mailer` (its `Stage`) only.

use super::{enhanced_code, Stage};
use std::fmt;

/// How far a fault of the relay's session reaches.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum FaultKind {
    /// The relay cannot be used as configured, and trying again soon will not change that:
    /// a 5xx at the greeting, EHLO, STARTTLS or AUTH (a refused password among them), a TLS
    /// failure, or a configuration the relay cannot satisfy.
    Unusable,
    /// The relay could not be reached: connection refused, host not found, no answer in time,
    /// the connection closed before the greeting. The relay is unusable when no connection
    /// to it is open.
    Unreachable,
    /// This one connection was turned away (a 4xx at the greeting, EHLO, STARTTLS or AUTH, as
    /// relays that cap their sessions answer): it backs off while the others go on.
    TurnedAway,
}

/// A fault of the relay's session, as an operator should read it.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct RelayFault {
    pub kind: FaultKind,
    /// Where the session stopped.
    pub stage: Stage,
    /// The relay's reply code, when it replied.
    pub code: Option<u16>,
    pub enhanced_code: Option<String>,
    /// What happened, with the relay's own words where it gave any.
    pub reply: String,
    /// How to fix it, when that is known (shown as a `hint:` line).
    pub hint: Option<String>,
}

impl RelayFault {
    /// A fault without a reply from the relay (network, timeout, TLS, configuration).
    pub fn new(kind: FaultKind, stage: Stage, reply: impl Into<String>) -> RelayFault {
        RelayFault {
            kind,
            stage,
            code: None,
            enhanced_code: None,
            reply: reply.into(),
            hint: None,
        }
    }

    /// The relay's refusal `code text` at `stage` of the session set-up, introduced by `what`
    /// (e.g. "the relay refused the credentials"): a 4xx turns this connection away, a 5xx
    /// makes the relay unusable.
    pub fn refused(stage: Stage, what: &str, code: u16, text: &str) -> RelayFault {
        let kind = if (400..500).contains(&code) {
            FaultKind::TurnedAway
        } else {
            FaultKind::Unusable
        };
        let text = text.trim();
        RelayFault {
            kind,
            stage,
            code: Some(code),
            enhanced_code: enhanced_code(text),
            reply: format!("{what}: {code} {text}"),
            hint: None,
        }
    }

    /// The same fault with a hint for the fix.
    pub fn with_hint(mut self, hint: impl Into<String>) -> RelayFault {
        self.hint = Some(hint.into());
        self
    }

    /// The same fault, reaching as far as `kind`.
    pub fn with_kind(mut self, kind: FaultKind) -> RelayFault {
        self.kind = kind;
        self
    }
}

impl fmt::Display for RelayFault {
    /// The reply, then `(hint: ...)`, which the command line prints on a line of its own.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.reply)?;
        if let Some(hint) = &self.hint {
            write!(f, " (hint: {hint})")?;
        }
        Ok(())
    }
}

impl std::error::Error for RelayFault {}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_4xx_turns_one_connection_away_and_a_5xx_makes_the_relay_unusable() {
        let busy = RelayFault::refused(Stage::Greeting, "the relay turned us away", 421, "busy");
        assert_eq!(busy.kind, FaultKind::TurnedAway);
        let refused = RelayFault::refused(
            Stage::Auth,
            "the relay refused the credentials",
            535,
            "5.7.8 Authentication credentials invalid\r\n",
        );
        assert_eq!(refused.kind, FaultKind::Unusable);
        assert_eq!(refused.enhanced_code.as_deref(), Some("5.7.8"));
        assert_eq!(
            refused
                .with_hint("check MISSIVE_SMTP__USERNAME and MISSIVE_SMTP__PASSWORD")
                .to_string(),
            "the relay refused the credentials: 535 5.7.8 Authentication credentials invalid \
             (hint: check MISSIVE_SMTP__USERNAME and MISSIVE_SMTP__PASSWORD)"
        );
    }
}
