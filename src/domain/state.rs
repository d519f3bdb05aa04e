//! The states a letter moves through, with their names as stored in the database and shown to
//! organisers. The transitions the queue allows live with the queue; this is only the vocabulary.

use std::fmt;
use std::str::FromStr;

/// Where a letter is in its life.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum LetterState {
    /// Waiting for its first attempt (or requeued by an organiser).
    Queued,
    /// Leased by a worker that is about to send it.
    Claimed,
    /// A worker is in the SMTP conversation for it.
    Sending,
    /// The server accepted it (2xx after the end of data).
    Sent,
    /// A transient failure; another attempt is scheduled.
    Deferred,
    /// A permanent failure (5xx) or an organiser's decision; the reason is recorded.
    Failed,
    /// The connection ended after the message was transmitted but before the server's reply:
    /// it may or may not have been delivered. An organiser resolves it.
    InDoubt,
    /// Transient failures went on past the maximum age.
    Expired,
    /// Held back by an organiser (paused).
    Held,
    /// Cancelled by an organiser; never sent.
    Cancelled,
}

impl LetterState {
    /// Every state, in the order reports list them.
    pub const ALL: [LetterState; 10] = [
        LetterState::Queued,
        LetterState::Claimed,
        LetterState::Sending,
        LetterState::Deferred,
        LetterState::Sent,
        LetterState::Failed,
        LetterState::InDoubt,
        LetterState::Expired,
        LetterState::Held,
        LetterState::Cancelled,
    ];

    /// The name stored in the database.
    pub fn as_str(self) -> &'static str {
        match self {
            LetterState::Queued => "queued",
            LetterState::Claimed => "claimed",
            LetterState::Sending => "sending",
            LetterState::Sent => "sent",
            LetterState::Deferred => "deferred",
            LetterState::Failed => "failed",
            LetterState::InDoubt => "in_doubt",
            LetterState::Expired => "expired",
            LetterState::Held => "held",
            LetterState::Cancelled => "cancelled",
        }
    }

    /// Whether the letter's story is over (no worker will touch it again on its own).
    pub fn is_final(self) -> bool {
        matches!(
            self,
            LetterState::Sent | LetterState::Failed | LetterState::Expired | LetterState::Cancelled
        )
    }
}

impl fmt::Display for LetterState {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for LetterState {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        LetterState::ALL
            .into_iter()
            .find(|st| st.as_str() == s)
            .ok_or_else(|| format!("unknown letter state `{s}`"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_round_trip() {
        for st in LetterState::ALL {
            assert_eq!(st.as_str().parse::<LetterState>().unwrap(), st);
        }
    }
}
