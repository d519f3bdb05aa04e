//! The states a letter moves through, with their names as stored in the database and shown to
//! organisers, and the one table of allowed transitions. The queue builds every state-changing
//! statement's `WHERE state IN (...)` from this table, so no code path can move a letter along an
//! edge that is not listed here.

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

    /// Whether the letter still waits to reach its server: queued, deferred, or in a worker's
    /// hands (`held` letters wait for an organiser, not for the queue).
    pub fn is_waiting(self) -> bool {
        matches!(
            self,
            LetterState::Queued
                | LetterState::Deferred
                | LetterState::Claimed
                | LetterState::Sending
        )
    }
}

/// Every allowed move, `(from, to)`. Anything else is refused by the queue.
pub const TRANSITIONS: &[(LetterState, LetterState)] = {
    use LetterState::*;
    &[
        // A worker leases due letters.
        (Queued, Claimed),
        (Deferred, Claimed),
        // The envelope is on its way: the message goes once the server accepts DATA.
        (Claimed, Sending),
        // Handed back unstarted (shutdown), or its worker vanished before DATA.
        (Claimed, Queued),
        (Claimed, Deferred),
        // Handed back before its envelope went out, though its worker had already recorded it
        // as about to go (the relay's session failed first): its attempt is uncounted.
        (Sending, Queued),
        // A refusal or failure before DATA.
        (Claimed, Failed),
        (Claimed, Expired),
        // The reply after the data, or its absence.
        (Sending, Sent),
        (Sending, Deferred),
        (Sending, Failed),
        (Sending, Expired),
        (Sending, InDoubt),
        // Organisers: retry, resolve, pause, resume, cancel.
        (Failed, Queued),
        (Expired, Queued),
        (Deferred, Queued),
        (InDoubt, Queued),
        (InDoubt, Sent),
        (Queued, Held),
        (Deferred, Held),
        (Held, Queued),
        (Queued, Cancelled),
        (Deferred, Cancelled),
        (Held, Cancelled),
    ]
};

impl LetterState {
    /// Whether a letter may move from `self` to `to`.
    pub fn can_move_to(self, to: LetterState) -> bool {
        TRANSITIONS.contains(&(self, to))
    }

    /// The states a letter may move to `to` from.
    pub fn sources(to: LetterState) -> Vec<LetterState> {
        TRANSITIONS
            .iter()
            .filter(|(_, t)| *t == to)
            .map(|(f, _)| *f)
            .collect()
    }

    /// `'a', 'b'` for the states `to` may be reached from: the body of an SQL `IN (...)`.
    pub fn sources_sql(to: LetterState) -> String {
        LetterState::sources(to)
            .iter()
            .map(|s| format!("'{}'", s.as_str()))
            .collect::<Vec<_>>()
            .join(", ")
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
    fn final_states_have_no_way_out_except_by_an_organiser() {
        for (from, to) in TRANSITIONS {
            assert_ne!(from, to);
            assert!(
                *from != LetterState::Sent && *from != LetterState::Cancelled,
                "{from} -> {to}"
            );
        }
        assert!(
            !LetterState::Queued.can_move_to(LetterState::Sent),
            "nothing is sent without a conversation"
        );
        assert!(
            !LetterState::Claimed.can_move_to(LetterState::Sent),
            "sent only after DATA was accepted"
        );
        assert!(
            !LetterState::Claimed.can_move_to(LetterState::InDoubt),
            "in doubt only once the data may have gone"
        );
    }

    #[test]
    fn names_round_trip() {
        for st in LetterState::ALL {
            assert_eq!(st.as_str().parse::<LetterState>().unwrap(), st);
        }
    }
}
