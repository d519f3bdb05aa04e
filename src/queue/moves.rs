//! Every way the queue moves a letter, as data: the states a move takes letters from and the
//! states it may leave them in. Each store renders a move's `from` list into its statement's
//! `WHERE state IN (...)` (`Move::fence_sql`), so no statement names a state list of its own;
//! and a test checks that every `from -> to` pair of every move is an edge of
//! `domain::TRANSITIONS`, so the table stays the one truth about what may happen.
//!
//! Depends on `domain` only.

use crate::domain::LetterState::{self, *};

/// One kind of state write.
#[derive(Debug, Clone, Copy)]
pub(super) struct Move {
    /// The states the move applies to (its fence).
    pub(super) from: &'static [LetterState],
    /// The states it may leave a letter in.
    #[cfg_attr(
        not(test),
        expect(dead_code, reason = "read by the check against TRANSITIONS")
    )]
    pub(super) to: &'static [LetterState],
}

impl Move {
    /// `'a', 'b'`: the body of the fence's SQL `IN (...)`.
    pub(super) fn fence_sql(&self) -> String {
        states_sql(self.from)
    }
}

/// `'a', 'b'`: `states` as the body of an SQL `IN (...)`.
pub(super) fn states_sql(states: &[LetterState]) -> String {
    states
        .iter()
        .map(|s| format!("'{}'", s.as_str()))
        .collect::<Vec<_>>()
        .join(", ")
}

/// A worker leases due letters.
pub(super) const CLAIM: Move = Move {
    from: &[Queued, Deferred],
    to: &[Claimed],
};
/// A leased letter's envelope is on its way.
pub(super) const MARK_SENDING: Move = Move {
    from: &[Claimed],
    to: &[Sending],
};
/// A leased letter handed back unstarted (stop, or the relay's session failed first): its
/// attempt is uncounted, and it waits as before (`deferred` if it had been tried, else
/// `queued`; see `UNCLAIMED`).
pub(super) const RELEASE: Move = Move {
    from: &[Claimed, Sending],
    to: &[Queued, Deferred],
};
/// Recovery after a worker vanished: letters it had not started go back to the queue.
pub(super) const RECOVER_CLAIMED: Move = Move {
    from: &[Claimed],
    to: &[Queued, Deferred],
};
/// Recovery after a worker vanished: letters whose data may have gone are in doubt.
pub(super) const RECOVER_SENDING: Move = Move {
    from: &[Sending],
    to: &[InDoubt],
};
/// An organiser settles letters in doubt: queued again, or recorded as sent.
pub(super) const RESOLVE_RESEND: Move = Move {
    from: &[InDoubt],
    to: &[Queued],
};
pub(super) const RESOLVE_SENT: Move = Move {
    from: &[InDoubt],
    to: &[Sent],
};
/// `missive retry --failed`.
pub(super) const RETRY_FAILED: Move = Move {
    from: &[Failed, Expired],
    to: &[Queued],
};
/// `missive retry --letter`.
pub(super) const RETRY_LETTER: Move = Move {
    from: &[Failed, Expired, Deferred],
    to: &[Queued],
};
/// `missive pause`, `resume`, `cancel`.
pub(super) const PAUSE: Move = Move {
    from: &[Queued, Deferred],
    to: &[Held],
};
pub(super) const RESUME: Move = Move {
    from: &[Held],
    to: &[Queued],
};
pub(super) const CANCEL: Move = Move {
    from: &[Queued, Deferred, Held],
    to: &[Cancelled],
};

/// The states a letter holds a lease in: the ones its worker renews and recovery looks at.
pub(super) const LEASED: Move = Move {
    from: &[Claimed, Sending],
    to: &[],
};

/// The SQL expression (over the row's own `attempts`) of the state a handed-back letter returns
/// to: `deferred` if it had an attempt before this one, else `queued`. The same text on every
/// store; `RELEASE` and `RECOVER_CLAIMED` list both.
pub(super) const UNCLAIMED_STATE_SQL: &str =
    "CASE WHEN attempts > 1 THEN 'deferred' ELSE 'queued' END";

/// Every move, for the check against the transition table.
#[cfg(test)]
const ALL: [(&str, Move); 12] = [
    ("claim", CLAIM),
    ("mark sending", MARK_SENDING),
    ("release", RELEASE),
    ("recover claimed", RECOVER_CLAIMED),
    ("recover sending", RECOVER_SENDING),
    ("resolve resend", RESOLVE_RESEND),
    ("resolve sent", RESOLVE_SENT),
    ("retry failed", RETRY_FAILED),
    ("retry letter", RETRY_LETTER),
    ("pause", PAUSE),
    ("resume", RESUME),
    ("cancel", CANCEL),
];

/// An attempt's result moves a letter from wherever a result may be recorded (`claimed` or
/// `sending`) to its next state: the fence for each next state is exactly the table's sources.
pub(super) fn record_fence(to: LetterState) -> Vec<LetterState> {
    LetterState::sources(to)
        .into_iter()
        .filter(|s| matches!(s, Claimed | Sending))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_move_is_made_of_edges_of_the_transition_table() {
        for (name, m) in ALL {
            for from in m.from {
                for to in m.to {
                    assert!(
                        from.can_move_to(*to),
                        "{name}: {from} -> {to} is not in TRANSITIONS"
                    );
                }
            }
        }
    }

    #[test]
    fn results_are_recorded_only_from_leased_states() {
        for to in [Sent, Deferred, Failed, InDoubt, Expired] {
            let fence = record_fence(to);
            assert!(!fence.is_empty(), "{to}");
            assert!(fence.iter().all(|s| s.can_move_to(to)));
        }
        assert_eq!(
            record_fence(Sent),
            vec![Sending],
            "sent only after the data"
        );
    }

    #[test]
    fn fences_render_as_sql_lists() {
        assert_eq!(CLAIM.fence_sql(), "'queued', 'deferred'");
        assert_eq!(RELEASE.fence_sql(), "'claimed', 'sending'");
    }
}
