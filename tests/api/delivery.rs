//! Sending over a real SMTP conversation with the scripted server: what each reply does to a
//! letter (sent, deferred with backoff, failed with the server's words, in doubt), the attempts
//! recorded, and connections reused rather than opened per letter.

use crate::helpers::{ana_over_one_connection, signer, spawn_app_with, TestApp};
use crate::smtp_server::{reply, Action, Event, ScriptedSmtp, Stage};
use missive::domain::LetterState;
use missive::queue::now_millis;
use std::sync::Arc;
use std::time::Duration;

#[derive(Debug, sqlx::FromRow)]
struct LetterRow {
    state: String,
    attempts: i64,
    next_attempt_at: i64,
    last_code: Option<i64>,
    last_enhanced_code: Option<String>,
    last_reply: Option<String>,
    sent_at: Option<i64>,
}

async fn letters(app: &TestApp) -> Vec<LetterRow> {
    sqlx::query_as(
        "SELECT state, attempts, next_attempt_at, last_code, last_enhanced_code, last_reply, sent_at
           FROM letters ORDER BY id",
    )
    .fetch_all(&app.db().await)
    .await
    .unwrap()
}

async fn app_for(server: &ScriptedSmtp) -> TestApp {
    spawn_app_with(&[
        ("MISSIVE_SMTP__URL", &server.url()),
        ("MISSIVE_SMTP__CONNECTIONS", "2"),
    ])
    .await
}

#[tokio::test]
async fn accepted_letters_are_sent_with_the_servers_reply_recorded() {
    let server = ScriptedSmtp::start().await;
    let app = app_for(&server).await;
    app.sign(&signer("José", "Núñez", "jose@example.net"))
        .await
        .unwrap();
    app.sign(&signer("Zoë", "Dubois", "zoe@example.net"))
        .await
        .unwrap();

    let summary = app.send_all().await;

    assert_eq!(summary.sent, 8);
    let received = server.received();
    assert_eq!(received.len(), 8);
    let mut rcpts: Vec<String> = received.iter().map(|r| r.rcpt_to.join(",")).collect();
    rcpts.sort();
    rcpts.dedup();
    assert_eq!(
        rcpts.len(),
        4,
        "one letter per target and signer: {rcpts:?}"
    );
    for r in &received {
        assert_eq!(r.mail_from, "letters@example.org");
        let reply_to = r.header("Reply-To").unwrap();
        assert!(
            reply_to.contains("jose@example.net") || reply_to.contains("zoe@example.net"),
            "{reply_to}"
        );
    }
    for l in letters(&app).await {
        assert_eq!(l.state, "sent");
        assert_eq!(l.last_code, Some(250));
        assert!(l.last_reply.unwrap().contains("Ok: queued"));
        assert!(l.sent_at.is_some());
    }
    assert!(
        server.sessions() <= 2,
        "connections are reused: {} sessions",
        server.sessions()
    );
}

#[tokio::test]
async fn the_message_id_is_the_one_stored_with_the_letter() {
    let server = ScriptedSmtp::start().await;
    let app = app_for(&server).await;
    app.sign(&signer("Ana", "Example", "ana@example.net"))
        .await
        .unwrap();

    app.send_all().await;

    // Sorted here, as `seen` is: ORDER BY follows the database's collation, which on
    // PostgreSQL need not be byte order.
    let mut stored: Vec<String> = sqlx::query_scalar("SELECT message_id FROM letters")
        .fetch_all(&app.db().await)
        .await
        .unwrap();
    stored.sort();
    let mut seen: Vec<String> = server
        .received()
        .iter()
        .map(|r| r.header("Message-ID").unwrap())
        .collect();
    seen.sort();
    assert_eq!(seen, stored);
}

#[tokio::test]
async fn a_4xx_reply_defers_the_letter_with_backoff_and_keeps_the_reply() {
    let server = ScriptedSmtp::start_with(|e: &Event| match e.stage {
        Stage::Rcpt => reply(451, "4.7.1 Greylisted, try again in 5 minutes"),
        _ => Action::Default,
    })
    .await;
    let app = app_for(&server).await;
    app.sign(&signer("Ana", "Example", "ana@example.net"))
        .await
        .unwrap();
    let before = now_millis();

    let summary = app.send_all().await;

    assert_eq!(summary.deferred, 4);
    for l in letters(&app).await {
        assert_eq!(l.state, "deferred");
        assert_eq!(l.attempts, 1);
        assert_eq!(l.last_code, Some(451));
        assert_eq!(l.last_enhanced_code.as_deref(), Some("4.7.1"));
        assert!(l.last_reply.unwrap().contains("Greylisted"));
        assert!(
            l.next_attempt_at >= before + 300_000,
            "at least 5 minutes before the next attempt"
        );
        assert!(
            l.next_attempt_at <= now_millis() + 375_000 + 1000,
            "base delay plus at most a quarter of jitter"
        );
    }
    let stages: Vec<String> = sqlx::query_scalar("SELECT stage FROM attempts")
        .fetch_all(&app.db().await)
        .await
        .unwrap();
    assert_eq!(stages, vec!["rcpt"; 4]);
    // Deferred letters are not due yet: a second batch sends nothing.
    assert_eq!(app.send_all().await.attempted(), 0);
}

#[tokio::test]
async fn a_5xx_reply_fails_the_letter_with_the_servers_words() {
    let server = ScriptedSmtp::start_with(|e: &Event| match e.stage {
        Stage::Rcpt if e.argument.contains("interior@") => reply(
            550,
            "5.1.1 <interior@example.org>: Recipient address rejected",
        ),
        _ => Action::Default,
    })
    .await;
    let app = app_for(&server).await;
    app.sign(&signer("Ana", "Example", "ana@example.net"))
        .await
        .unwrap();

    let summary = app.send_all().await;

    assert_eq!((summary.sent, summary.failed), (3, 1));
    let failed: (String, i64, String) = sqlx::query_as(
        "SELECT target_id, last_code, last_reply FROM letters WHERE state = 'failed'",
    )
    .fetch_one(&app.db().await)
    .await
    .unwrap();
    assert_eq!(failed.0, "interior");
    assert_eq!(failed.1, 550);
    assert!(
        failed.2.contains("Recipient address rejected"),
        "{}",
        failed.2
    );
    assert_eq!(server.received().len(), 3);
}

#[tokio::test]
async fn a_5xx_reply_after_the_data_fails_the_letter() {
    let server = ScriptedSmtp::start_with(|e: &Event| match e.stage {
        Stage::EndOfData => reply(554, "5.7.1 Message rejected as spam"),
        _ => Action::Default,
    })
    .await;
    let app = app_for(&server).await;
    app.sign(&signer("Ana", "Example", "ana@example.net"))
        .await
        .unwrap();

    let summary = app.send_all().await;

    assert_eq!(summary.failed, 4);
    for l in letters(&app).await {
        assert_eq!((l.state.as_str(), l.last_code), ("failed", Some(554)));
    }
}

#[tokio::test]
async fn losing_the_connection_after_the_final_dot_leaves_the_letter_in_doubt() {
    let server = ScriptedSmtp::start_with(|e: &Event| match e.stage {
        Stage::EndOfData if e.transaction == 0 => Action::Close,
        _ => Action::Default,
    })
    .await;
    let app = ana_over_one_connection(&server).await;

    let summary = app.send_all().await;

    assert_eq!((summary.in_doubt, summary.sent), (1, 3));
    let states: Vec<String> = letters(&app).await.into_iter().map(|l| l.state).collect();
    assert_eq!(states.iter().filter(|s| *s == "in_doubt").count(), 1);
}

#[tokio::test]
async fn retry_failed_queues_failed_letters_and_the_next_batch_sends_them() {
    let server = ScriptedSmtp::start_with(|e: &Event| match e.stage {
        Stage::Rcpt if e.transaction < 4 => reply(550, "5.2.1 Mailbox disabled"),
        _ => Action::Default,
    })
    .await;
    let app = ana_over_one_connection(&server).await;
    assert_eq!(app.send_all().await.failed, 4);

    let requeued = app
        .app
        .queue
        .retry_failed(None, now_millis())
        .await
        .unwrap();
    let summary = app.send_all().await;

    assert_eq!(requeued, 4);
    assert_eq!(summary.sent, 4);
    let status = app.status().await;
    assert_eq!(status.by_state.get(&LetterState::Sent), Some(&4));
    let attempts: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM attempts")
        .fetch_one(&app.db().await)
        .await
        .unwrap();
    assert_eq!(attempts, 8, "both attempts of every letter are in the log");
}

#[tokio::test]
async fn a_rejected_recipient_does_not_cost_the_connection() {
    let server = ScriptedSmtp::start_with(|e: &Event| match e.stage {
        Stage::Rcpt if e.transaction % 2 == 0 => reply(550, "5.1.1 No such user"),
        _ => Action::Default,
    })
    .await;
    let app = spawn_app_with(&[
        ("MISSIVE_SMTP__URL", &server.url()),
        ("MISSIVE_SMTP__CONNECTIONS", "1"),
    ])
    .await;
    for i in 0..5 {
        app.sign(&signer("Ana", "Example", &format!("ana{i}@example.net")))
            .await
            .unwrap();
    }

    let summary = app.send_all().await;

    assert_eq!(summary.sent + summary.failed, 20);
    assert_eq!(
        server.sessions(),
        1,
        "RSET after a refusal keeps the connection"
    );
}

#[tokio::test]
async fn the_next_letter_is_marked_sending_while_the_one_before_it_is_on_the_wire() {
    // A server slow to accept the first message, and one connection: while the first letter
    // waits for its reply, its sending task has already prepared the next one.
    let server = ScriptedSmtp::start_with(|e: &Event| match e.stage {
        Stage::EndOfData if e.transaction == 0 => Action::Delay(Duration::from_millis(1500)),
        _ => Action::Default,
    })
    .await;
    let app = ana_over_one_connection(&server).await;
    let db = app.db().await;
    let watch = async {
        // While the server holds back its reply to the first message: is a second letter
        // `sending` while the server has seen only the first letter's MAIL?
        let deadline = tokio::time::Instant::now() + Duration::from_millis(1400);
        while server.transactions() <= 1 && tokio::time::Instant::now() < deadline {
            let before = server.transactions();
            let sending: i64 =
                sqlx::query_scalar("SELECT COUNT(*) FROM letters WHERE state = 'sending'")
                    .fetch_one(&db)
                    .await
                    .unwrap();
            if before == 1 && server.transactions() == 1 && sending == 2 {
                return true;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        false
    };

    let (summary, marked_ahead) = tokio::join!(app.send_all(), watch);

    assert!(
        marked_ahead,
        "the next letter was marked sending while the first was on the wire"
    );
    assert_eq!(summary.sent, 4);
    assert_eq!(summary.in_doubt, 0);
    assert_eq!(server.received().len(), 4);
}

#[tokio::test]
async fn after_a_stall_the_relay_sees_its_rate_not_one_letter_per_connection_at_once() {
    // Burst 1 at 10 a second over 4 connections. The relay holds its replies to the first four
    // letters for half a second; when they come, the four senders' next letters must still
    // reach it a tenth of a second apart (half that at worst, for a sender woken late), not
    // together: the rate is counted when a letter is handed over.
    let mails = Arc::new(std::sync::Mutex::new(Vec::new()));
    let seen = mails.clone();
    let server = ScriptedSmtp::start_with(move |e: &Event| match e.stage {
        Stage::Mail => {
            seen.lock().unwrap().push(std::time::Instant::now());
            Action::Default
        }
        Stage::EndOfData if e.transaction < 4 => Action::Delay(Duration::from_millis(500)),
        _ => Action::Default,
    })
    .await;
    let app = spawn_app_with(&[
        ("MISSIVE_SMTP__URL", &server.url()),
        ("MISSIVE_SMTP__CONNECTIONS", "4"),
        ("MISSIVE_SENDING__RATE_PER_SECOND", "10"),
        ("MISSIVE_SENDING__BURST", "1"),
    ])
    .await;
    for n in 0..3 {
        app.sign(&signer("Ana", "Example", &format!("ana{n}@example.net")))
            .await
            .unwrap();
    }

    let summary = app.send_all().await;

    assert_eq!(summary.sent, 12);
    let mails = mails.lock().unwrap().clone();
    let gaps: Vec<u128> = mails
        .windows(2)
        .map(|w| w[1].duration_since(w[0]).as_millis())
        .collect();
    assert!(
        gaps.iter().all(|g| *g >= 45),
        "letters reached the relay closer than half an interval: {gaps:?}"
    );
}
