//! The queue's state machine, property-tested against a real queue (SQLite, or PostgreSQL with
//! `MISSIVE_TEST_DATABASE_URL`): random sequences of every queue operation, with every letter's
//! state read after each one; each change must be an edge of `domain::TRANSITIONS`, and fenced
//! writes with a stale token must change nothing.

use crate::db_helpers::Backend;
use crate::helpers::{signer, spawn_app, spawn_app_with_ana, TestApp};
use missive::domain::LetterState;
use missive::queue::{AttemptRecord, ClaimRequest, NextState, Scope};
use proptest::prelude::*;
use std::collections::HashMap;

#[derive(Debug, Clone)]
enum Op {
    Claim { limit: u32, token: i64 },
    Mark { token: i64, pick: usize },
    Record { token: i64, pick: usize, next: u8 },
    Release { token: i64, pick: usize },
    Heartbeat { token: i64 },
    Recover { advance_ms: i64 },
    RetryFailed,
    RetryLetter { pick: usize },
    Resolve { resend: bool },
}

fn op() -> impl Strategy<Value = Op> {
    let token = 1i64..4;
    prop_oneof![
        (1u32..6, token.clone()).prop_map(|(limit, token)| Op::Claim { limit, token }),
        (token.clone(), 0usize..8).prop_map(|(token, pick)| Op::Mark { token, pick }),
        (token.clone(), 0usize..8, 0u8..5).prop_map(|(token, pick, next)| Op::Record {
            token,
            pick,
            next
        }),
        (token.clone(), 0usize..8).prop_map(|(token, pick)| Op::Release { token, pick }),
        token.prop_map(|token| Op::Heartbeat { token }),
        (0i64..120_000).prop_map(|advance_ms| Op::Recover { advance_ms }),
        Just(Op::RetryFailed),
        (0usize..8).prop_map(|pick| Op::RetryLetter { pick }),
        any::<bool>().prop_map(|resend| Op::Resolve { resend }),
    ]
}

async fn states(app: &TestApp) -> HashMap<i64, LetterState> {
    let rows: Vec<(i64, String)> = sqlx::query_as("SELECT id, state FROM letters")
        .fetch_all(&app.db().await)
        .await
        .unwrap();
    rows.into_iter()
        .map(|(id, s)| (id, s.parse().unwrap()))
        .collect()
}

async fn apply(app: &TestApp, op: &Op, now: &mut i64, ids: &[i64]) {
    let q = &app.app.queue;
    let id = |pick: usize| ids[pick % ids.len()];
    match *op {
        Op::Claim { limit, token } => {
            claim_up_to(q, token, *now, limit).await.unwrap();
        }
        Op::Mark { token, pick } => {
            q.mark_sending(token, &[id(pick)], *now).await.unwrap();
        }
        Op::Record { token, pick, next } => {
            let next = match next {
                0 => NextState::Sent,
                1 => NextState::Deferred { retry_at: *now },
                2 => NextState::Failed,
                3 => NextState::InDoubt,
                _ => NextState::Expired,
            };
            let record = AttemptRecord {
                letter_id: id(pick),
                lease_token: token,
                attempt: 1,
                worker: "prop".into(),
                started_at: *now,
                finished_at: *now,
                next,
                stage: None,
                code: None,
                enhanced_code: None,
                reply: None,
            };
            q.record_attempts(&[record], *now).await.unwrap();
        }
        Op::Release { token, pick } => {
            q.release(&[(id(pick), token)], *now).await.unwrap();
        }
        Op::Heartbeat { token } => {
            q.extend_leases(token, *now + 30_000).await.unwrap();
        }
        Op::Recover { advance_ms } => {
            *now += advance_ms;
            q.recover_expired(*now).await.unwrap();
        }
        Op::RetryFailed => {
            q.retry_failed(None, *now).await.unwrap();
        }
        Op::RetryLetter { pick } => {
            q.retry_letter(id(pick), *now).await.unwrap();
        }
        Op::Resolve { resend } => {
            q.resolve_in_doubt(&Scope::default(), resend, *now)
                .await
                .unwrap();
        }
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 24, ..ProptestConfig::default() })]

    #[test]
    fn every_state_change_is_an_allowed_transition(ops in proptest::collection::vec(op(), 1..40)) {
        let rt = tokio::runtime::Runtime::new().unwrap();
        rt.block_on(async {
            let app = spawn_app().await;
            app.sign(&signer("Ana", "Example", "ana@example.net")).await.unwrap();
            app.sign(&signer("Luis", "Example", "luis@example.net")).await.unwrap();
            let mut now = missive::queue::now_millis();
            let mut before = states(&app).await;
            let ids: Vec<i64> = before.keys().copied().collect();
            for op in &ops {
                apply(&app, op, &mut now, &ids).await;
                let after = states(&app).await;
                for (id, from) in &before {
                    let to = after[id];
                    assert!(*from == to || from.can_move_to(to), "{op:?} moved letter {id} from {from} to {to}");
                }
                before = after;
            }
        });
    }
}

/// Claims up to ten due letters of any campaign under `token`, leased for 30 s.
async fn claim_up_to(
    q: &missive::queue::Queue,
    token: i64,
    now: i64,
    limit: u32,
) -> Result<Vec<missive::queue::ClaimedLetter>, missive::queue::QueueError> {
    q.claim(&ClaimRequest {
        owner: "test",
        token,
        now,
        lease_ms: 30_000,
        limit,
        campaign: None,
        target: None,
        exclude_campaigns: None,
    })
    .await
}

#[tokio::test]
async fn a_batch_of_records_moves_letters_as_the_same_records_one_by_one_would() {
    // Arrange: three letters claimed under token 1; the first one's DATA was accepted.
    let app = spawn_app_with_ana(&[]).await;
    let q = &app.app.queue;
    let now = missive::queue::now_millis();
    let claimed = claim_up_to(q, 1, now, 10).await.unwrap();
    let ids: Vec<i64> = claimed.iter().map(|l| l.id).collect();
    assert!(ids.len() >= 3, "{ids:?}");
    let (a, b, c) = (ids[0], ids[1], ids[2]);
    assert_eq!(q.mark_sending(1, &[a], now).await.unwrap(), vec![a]);
    let record = |letter_id: i64, lease_token: i64, next: NextState| AttemptRecord {
        letter_id,
        lease_token,
        attempt: 1,
        worker: "batch".into(),
        started_at: now,
        finished_at: now,
        next,
        stage: None,
        code: None,
        enhanced_code: None,
        reply: None,
    };

    // Act: a stale token, then the right one, for a; a move b's state forbids, then one it
    // allows; a move c's state forbids.
    let moved = q
        .record_attempts(
            &[
                record(a, 2, NextState::Failed),
                record(b, 1, NextState::InDoubt),
                record(a, 1, NextState::Sent),
                record(b, 1, NextState::Failed),
                record(c, 1, NextState::Sent),
            ],
            now,
        )
        .await
        .unwrap();

    // Assert
    let after = states(&app).await;
    assert_eq!(moved, 2);
    assert_eq!(after[&a], LetterState::Sent);
    assert_eq!(after[&b], LetterState::Failed);
    assert_eq!(after[&c], LetterState::Claimed);
    let attempts: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM attempts")
        .fetch_one(&app.db().await)
        .await
        .unwrap();
    assert_eq!(attempts, 5, "one attempt row per record, moved or not");
}

#[tokio::test]
async fn a_letter_erased_after_its_claim_is_never_marked_sending_so_never_sent() {
    // Arrange: a signer's letters claimed; then one is deleted, as an erasure would.
    let app = spawn_app_with_ana(&[]).await;
    let q = &app.app.queue;
    let now = missive::queue::now_millis();
    let claimed = claim_up_to(q, 7, now, 10).await.unwrap();
    let erased = claimed[0].id;
    sqlx::query("DELETE FROM letters WHERE id = $1")
        .bind(erased)
        .execute(&app.db().await)
        .await
        .unwrap();

    // Act: the worker asks for every claimed letter's `sending` mark.
    let ids: Vec<i64> = claimed.iter().map(|l| l.id).collect();
    let marked = q.mark_sending(7, &ids, now).await.unwrap();

    // Assert: the erased letter's mark is refused, so no byte of it is transmitted.
    assert_eq!(marked.len(), ids.len() - 1);
    assert!(!marked.contains(&erased));
}

#[tokio::test]
async fn a_letter_deleted_between_its_claim_and_its_reading_is_skipped_not_an_error() {
    // Arrange: four letters; a trigger deletes one as soon as it is claimed, standing in for
    // an erasure that lands between the claim and the read of the letters' texts.
    let app = spawn_app_with_ana(&[]).await;
    if app.database.backend() == Backend::Postgres {
        // PostgreSQL claims and reads the texts in one statement: nothing can land between
        // them (an erasure after the claim is refused its mark, tested above).
        eprintln!("note: SQLite only: on PostgreSQL the claim reads the texts itself");
        return;
    }
    let db = app.db().await;
    let doomed: i64 = sqlx::query_scalar("SELECT MIN(id) FROM letters")
        .fetch_one(&db)
        .await
        .unwrap();
    let trigger = [format!(
        "CREATE TRIGGER erase_on_claim AFTER UPDATE OF state ON letters
          WHEN new.state = 'claimed' AND new.id = {doomed}
          BEGIN DELETE FROM letters WHERE id = new.id; END"
    )];
    for statement in trigger {
        sqlx::query(&statement).execute(&db).await.unwrap();
    }

    // Act
    let claimed = claim_up_to(&app.app.queue, 1, missive::queue::now_millis(), 10)
        .await
        .expect("a vanished letter does not fail the claim");

    // Assert: the other three come back whole; the deleted one is not among them.
    let ids: Vec<i64> = claimed.iter().map(|l| l.id).collect();
    assert_eq!(ids.len(), 3, "{ids:?}");
    assert!(!ids.contains(&doomed));
    assert!(claimed.iter().all(|l| !l.letter.body_text.is_empty()));
}

#[tokio::test]
async fn status_counts_the_letters_a_worker_holds_beside_the_others() {
    // Arrange: one signer's four letters: two claimed, of which one is being sent.
    let app = spawn_app_with_ana(&[]).await;
    let q = &app.app.queue;
    let now = missive::queue::now_millis();
    let claimed = claim_up_to(q, 1, now, 2).await.unwrap();
    assert_eq!(claimed.len(), 2);
    q.mark_sending(1, &[claimed[0].id], now).await.unwrap();

    // Act
    let status = app.status().await;

    // Assert: the held letters (left out of the status index) are counted, per target too.
    let count = |s: LetterState| status.by_state.get(&s).copied().unwrap_or(0);
    assert_eq!(
        (
            count(LetterState::Queued),
            count(LetterState::Claimed),
            count(LetterState::Sending)
        ),
        (2, 1, 1),
        "{status:?}"
    );
    let held_target = |id: i64| {
        let l = claimed.iter().find(|l| l.id == id).unwrap();
        l.letter.target_id.clone()
    };
    let sending = status
        .by_target
        .iter()
        .find(|t| t.state == LetterState::Sending)
        .expect("a per-target row for the letter being sent");
    assert_eq!(sending.target_id, held_target(claimed[0].id));
    assert_eq!(sending.letters, 1);
    assert_eq!(
        status.by_target.iter().map(|t| t.letters).sum::<i64>(),
        4,
        "{status:?}"
    );
    assert!(status.oldest_waiting_since.is_some());
}
