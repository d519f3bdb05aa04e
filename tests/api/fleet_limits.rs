//! Limits shared by every process on one queue, on both stores: the `throttles` rows (a GCRA's
//! arrival time per limit, reserved atomically by many processes at once, held forward by a
//! cool-down), the pacing lease (one holder at a time, taken over when it lapses or its holder
//! is gone), and two workers in two processes' worth of connections keeping one relay rate
//! between them.

use crate::helpers::{signer, spawn_app, spawn_app_with, TestApp};
use missive::queue::Queue;
use missive::worker::RunOptions;
use tokio_util::sync::CancellationToken;

/// Another process's view of `app`'s queue: a pool of its own.
async fn another_process(app: &TestApp) -> Queue {
    Queue::open(&app.settings.database).await.unwrap()
}

#[tokio::test]
async fn reservations_from_many_processes_line_up_on_one_row() {
    let app = spawn_app().await;
    let mut queues = vec![app.app.queue.clone()];
    for _ in 0..3 {
        queues.push(another_process(&app).await);
    }
    let now_us = app.app.queue.now_us();
    let interval = 1_000;

    // 4 processes x 25 reservations of 4 tokens, all at once, at the same instant.
    let mut tasks = Vec::new();
    for q in queues {
        tasks.push(tokio::spawn(async move {
            let mut tats = Vec::new();
            for _ in 0..25 {
                tats.push(q.reserve("relay test", 4, interval, now_us).await.unwrap());
            }
            tats
        }));
    }
    let mut tats = Vec::new();
    for t in tasks {
        tats.extend(t.await.unwrap());
    }
    tats.sort();

    // Every reservation got its own 4 tokens: none lost, none shared.
    let expected: Vec<i64> = (1..=100).map(|k| now_us + k * 4 * interval).collect();
    assert_eq!(tats, expected);
    assert_eq!(
        app.app.queue.throttle("relay test").await.unwrap(),
        Some(now_us + 400 * interval)
    );
    assert_eq!(app.app.queue.throttle("relay other").await.unwrap(), None);
}

#[tokio::test]
async fn a_reservation_after_an_idle_spell_starts_from_now() {
    let app = spawn_app().await;
    let q = &app.app.queue;

    assert_eq!(q.reserve("k", 2, 10, 1_000).await.unwrap(), 1_020);
    // Long after: the old arrival time has passed, nothing is saved up.
    assert_eq!(q.reserve("k", 1, 10, 5_000).await.unwrap(), 5_010);
    // Before the arrival time: the tokens follow the ones reserved.
    assert_eq!(q.reserve("k", 3, 10, 5_001).await.unwrap(), 5_040);
}

#[tokio::test]
async fn a_cool_down_moves_the_limit_forward_never_back() {
    let app = spawn_app().await;
    let q = &app.app.queue;
    q.reserve("relay r", 1, 100, 1_000).await.unwrap();

    assert_eq!(q.hold("relay r", 50_000).await.unwrap(), 50_000);
    assert_eq!(
        q.hold("relay r", 20_000).await.unwrap(),
        50_000,
        "never back"
    );
    // The next token is after the cool-down.
    assert_eq!(q.reserve("relay r", 1, 100, 2_000).await.unwrap(), 50_100);
    // A cool-down of a limit never used creates it.
    assert_eq!(q.hold("relay new", 7).await.unwrap(), 7);
}

#[tokio::test]
async fn the_pacing_lease_has_one_holder_at_a_time() {
    let app = spawn_app().await;
    let a = app.app.queue.clone();
    let b = another_process(&app).await;
    let lease = 10_000;

    assert_eq!(
        a.lead("pacing", "a", 1_000, lease, None).await.unwrap(),
        "a"
    );
    assert_eq!(
        b.lead("pacing", "b", 2_000, lease, None).await.unwrap(),
        "a"
    );
    // The holder renews it.
    assert_eq!(
        a.lead("pacing", "a", 9_000, lease, None).await.unwrap(),
        "a"
    );
    assert_eq!(
        b.lead("pacing", "b", 12_000, lease, None).await.unwrap(),
        "a"
    );
    // Unrenewed, it lapses, and the next to ask takes it.
    assert_eq!(
        b.lead("pacing", "b", 19_001, lease, None).await.unwrap(),
        "b"
    );
    assert_eq!(
        a.lead("pacing", "a", 19_002, lease, None).await.unwrap(),
        "b"
    );
    // A holder known to be gone is replaced at once; a live one is not.
    assert_eq!(
        a.lead("pacing", "a", 19_003, lease, Some("c"))
            .await
            .unwrap(),
        "b"
    );
    assert_eq!(
        a.lead("pacing", "a", 19_004, lease, Some("b"))
            .await
            .unwrap(),
        "a"
    );
    // Resigning frees it; resigning someone else's lease does nothing.
    b.resign("pacing", "b").await.unwrap();
    assert_eq!(
        b.lead("pacing", "b", 19_005, lease, None).await.unwrap(),
        "a"
    );
    a.resign("pacing", "a").await.unwrap();
    assert_eq!(
        b.lead("pacing", "b", 19_006, lease, None).await.unwrap(),
        "b"
    );
}

#[tokio::test]
async fn two_workers_keep_one_relay_rate_between_them() {
    let app = spawn_app_with(&[
        ("MISSIVE_SENDING__RATE_PER_SECOND", "10"),
        ("MISSIVE_SENDING__BURST", "1"),
    ])
    .await;
    for i in 0..6 {
        app.sign(&signer("Ana", "Example", &format!("ana{i}@example.net")))
            .await
            .unwrap();
    }
    let other = missive::startup::App::build(app.settings.clone())
        .await
        .unwrap();

    let run = RunOptions::default();
    let (first, second) = (app.app.dispatcher(), other.dispatcher());
    let (one, two) = tokio::join!(
        first.run(&run, CancellationToken::new()),
        second.run(&run, CancellationToken::new()),
    );
    let (one, two) = (one.unwrap(), two.unwrap());

    assert_eq!(one.sent + two.sent, 24);
    assert!(
        one.sent > 0 && two.sent > 0,
        "both workers sent: {} and {}",
        one.sent,
        two.sent
    );
    let starts: Vec<i64> = sqlx::query_scalar("SELECT started_at FROM attempts ORDER BY 1")
        .fetch_all(&app.db().await)
        .await
        .unwrap();
    assert_eq!(starts.len(), 24);
    // 10 a second between them, burst 1: any letter and the tenth after it are a second apart
    // (less the timer's lateness of the first), where each worker alone would allow two.
    for (i, pair) in starts.windows(11).enumerate() {
        let gap = pair[10] - pair[0];
        assert!(gap >= 900, "letters {i} and {} only {gap} ms apart", i + 10);
    }
}
