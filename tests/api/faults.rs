//! The fault matrix of a letter's own transaction: every way an SMTP server or the network can
//! fail once the relay's session is open (MAIL, RCPT, DATA, the message, the reply after it),
//! scripted, with the letter's final state, the attempt recorded (stage, code, outcome) and the
//! next attempt time. Faults of the relay's session itself are in `relay_faults.rs`.

use crate::helpers::{ana_over_one_connection, signer, spawn_app_with, TestApp};
use crate::smtp_server::{reply, Action, Event, ScriptedSmtp, Stage};
use missive::queue::now_millis;

const FIVE_MINUTES: i64 = 300_000;

#[derive(Debug, sqlx::FromRow)]
struct Attempt {
    stage: Option<String>,
    code: Option<i64>,
    outcome: String,
    reply: Option<String>,
}

/// One signer's first letter (to the presidency) through a server running `script`.
struct Case {
    app: TestApp,
    server: ScriptedSmtp,
    before: i64,
}

async fn case(
    script: impl Fn(&Event) -> Action + Send + Sync + 'static,
    extra: &[(&str, &str)],
) -> Case {
    let server = ScriptedSmtp::start_with(script).await;
    let url = server.url();
    let mut env = vec![
        ("MISSIVE_SMTP__URL", url.as_str()),
        ("MISSIVE_SMTP__CONNECTIONS", "1"),
        ("MISSIVE_SMTP__SEND_TIMEOUT_SECONDS", "1"),
        ("MISSIVE_SMTP__CONNECT_TIMEOUT_SECONDS", "1"),
        ("MISSIVE_SENDING__THROTTLE_COOLDOWN_SECONDS", "0"),
    ];
    env.extend_from_slice(extra);
    let app = spawn_app_with(&env).await;
    app.sign(&signer("Ana", "Example", "ana@example.net"))
        .await
        .unwrap();
    let before = now_millis();
    // Send only the first letter, so each case is one attempt.
    app.send_up_to(1).await;
    Case {
        app,
        server,
        before,
    }
}

impl Case {
    async fn letter(&self) -> (String, i64, i64) {
        sqlx::query_as("SELECT state, attempts, next_attempt_at FROM letters ORDER BY id LIMIT 1")
            .fetch_one(&self.app.db().await)
            .await
            .unwrap()
    }

    async fn attempt(&self) -> Attempt {
        sqlx::query_as("SELECT stage, code, outcome, reply FROM attempts ORDER BY id")
            .fetch_one(&self.app.db().await)
            .await
            .unwrap()
    }

    /// Asserts the first letter was deferred at `stage` (with `code`), due again in 5 minutes or more.
    async fn assert_deferred(&self, stage: &str, code: Option<i64>) {
        let (state, attempts, next) = self.letter().await;
        assert_eq!((state.as_str(), attempts), ("deferred", 1));
        assert!(
            next >= self.before + FIVE_MINUTES,
            "retried no sooner than 5 minutes"
        );
        let a = self.attempt().await;
        assert_eq!(
            (a.stage.as_deref(), a.code, a.outcome.as_str()),
            (Some(stage), code, "deferred"),
            "{a:?}"
        );
    }

    async fn assert_failed(&self, stage: &str, code: i64, words: &str) {
        let (state, attempts, _) = self.letter().await;
        assert_eq!((state.as_str(), attempts), ("failed", 1));
        let a = self.attempt().await;
        assert_eq!(
            (a.stage.as_deref(), a.code, a.outcome.as_str()),
            (Some(stage), Some(code), "failed"),
            "{a:?}"
        );
        assert!(
            a.reply.as_deref().unwrap_or_default().contains(words),
            "{a:?}"
        );
    }
}

fn at(stage: Stage, action: Action) -> impl Fn(&Event) -> Action + Send + Sync + 'static {
    move |e: &Event| {
        if e.stage == stage {
            action.clone()
        } else {
            Action::Default
        }
    }
}

#[tokio::test]
async fn a_multi_line_greeting_is_accepted() {
    let c = case(
        at(
            Stage::Greeting,
            reply(220, "missive-test ESMTP\nready for letters"),
        ),
        &[],
    )
    .await;
    assert_eq!(c.letter().await.0, "sent");
}

#[tokio::test]
async fn a_421_mid_session_defers_and_the_next_letter_reconnects() {
    let c = case(
        |e: &Event| match e.stage {
            Stage::Mail if e.transaction == 0 => reply(421, "4.4.2 Timeout, closing"),
            _ => Action::Default,
        },
        &[],
    )
    .await;
    c.assert_deferred("mail", Some(421)).await;
    // The rest of the letters go through on a fresh connection.
    let summary = c.app.send_all().await;
    assert_eq!(summary.sent, 3);
    assert_eq!(c.server.sessions(), 2);
}

#[tokio::test]
async fn a_450_at_rcpt_defers() {
    let c = case(
        at(
            Stage::Rcpt,
            reply(450, "4.2.1 Mailbox temporarily unavailable"),
        ),
        &[],
    )
    .await;
    c.assert_deferred("rcpt", Some(450)).await;
}

#[tokio::test]
async fn a_451_at_rcpt_defers() {
    let c = case(
        at(Stage::Rcpt, reply(451, "4.3.0 Local error in processing")),
        &[],
    )
    .await;
    c.assert_deferred("rcpt", Some(451)).await;
}

#[tokio::test]
async fn a_452_at_rcpt_defers() {
    let c = case(
        at(Stage::Rcpt, reply(452, "4.5.3 Too many recipients")),
        &[],
    )
    .await;
    c.assert_deferred("rcpt", Some(452)).await;
}

#[tokio::test]
async fn a_550_at_rcpt_fails_with_the_servers_words() {
    let c = case(
        at(
            Stage::Rcpt,
            reply(550, "5.1.1 User unknown in virtual mailbox table"),
        ),
        &[],
    )
    .await;
    c.assert_failed("rcpt", 550, "User unknown").await;
}

#[tokio::test]
async fn a_553_at_mail_fails() {
    let c = case(
        at(
            Stage::Mail,
            reply(553, "5.7.1 Sender address rejected: not owned by user"),
        ),
        &[],
    )
    .await;
    c.assert_failed("mail", 553, "Sender address rejected")
        .await;
}

#[tokio::test]
async fn a_552_after_the_data_fails() {
    let c = case(
        at(
            Stage::EndOfData,
            reply(552, "5.3.4 Message size exceeds fixed limit"),
        ),
        &[],
    )
    .await;
    c.assert_failed("end_of_data", 552, "size exceeds").await;
}

#[tokio::test]
async fn a_554_after_the_data_fails() {
    let c = case(
        at(Stage::EndOfData, reply(554, "5.7.1 Rejected by policy")),
        &[],
    )
    .await;
    c.assert_failed("end_of_data", 554, "Rejected by policy")
        .await;
}

#[tokio::test]
async fn a_connection_dropped_before_data_defers_and_is_not_in_doubt() {
    let c = case(at(Stage::Rcpt, Action::Close), &[]).await;
    c.assert_deferred("rcpt", None).await;
    assert!(c.server.received().is_empty());
}

#[tokio::test]
async fn a_connection_dropped_after_the_dot_leaves_the_letter_in_doubt() {
    let c = case(at(Stage::EndOfData, Action::Close), &[]).await;
    let (state, attempts, _) = c.letter().await;
    assert_eq!((state.as_str(), attempts), ("in_doubt", 1));
    let a = c.attempt().await;
    assert_eq!(
        (a.stage.as_deref(), a.outcome.as_str()),
        (Some("end_of_data"), "in_doubt")
    );
}

#[tokio::test]
async fn a_stall_at_rcpt_defers_after_the_timeout() {
    let c = case(at(Stage::Rcpt, Action::Stall), &[]).await;
    c.assert_deferred("rcpt", None).await;
    assert!(c
        .attempt()
        .await
        .reply
        .unwrap()
        .contains("no reply within 1 s at rcpt"));
}

#[tokio::test]
async fn a_stall_after_the_dot_leaves_the_letter_in_doubt() {
    let c = case(at(Stage::EndOfData, Action::Stall), &[]).await;
    let (state, _, _) = c.letter().await;
    assert_eq!(state, "in_doubt");
    assert!(c
        .attempt()
        .await
        .reply
        .unwrap()
        .contains("no reply within 1 s at end_of_data"));
}

#[tokio::test]
async fn a_garbage_reply_defers() {
    let c = case(
        at(Stage::Mail, Action::Garbage(b"HELLO THERE\r\n".to_vec())),
        &[],
    )
    .await;
    c.assert_deferred("mail", None).await;
}

#[tokio::test]
async fn an_endless_reply_line_defers_instead_of_hanging() {
    // 1 MiB of digits and no line end: the client gives up at its line limit, well before
    // the 1 s send timeout would.
    let c = case(at(Stage::Rcpt, Action::Garbage(vec![b'2'; 1 << 20])), &[]).await;
    c.assert_deferred("rcpt", None).await;
    let reply = c.attempt().await.reply.unwrap();
    assert!(reply.contains("longer than"), "{reply}");
}

#[tokio::test]
async fn a_server_that_closes_idle_connections_costs_no_letter_an_attempt() {
    // The server drops every connection the moment it is reused, as one does that closes idle
    // connections: the client must reconnect, not defer letters.
    let server = ScriptedSmtp::start_with(|e: &Event| match e.stage {
        Stage::Mail if e.session_transaction >= 1 => Action::Close,
        _ => Action::Default,
    })
    .await;
    let app = ana_over_one_connection(&server).await;

    let summary = app.send_all().await;

    assert_eq!(summary.sent, 4);
    let attempts: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM attempts")
        .fetch_one(&app.db().await)
        .await
        .unwrap();
    assert_eq!(attempts, 4, "one attempt per letter");
    assert_eq!(server.sessions(), 4);
}

#[tokio::test]
async fn a_throttling_reply_pauses_the_relay_for_the_cool_down() {
    let server = ScriptedSmtp::start_with(|e: &Event| match e.stage {
        Stage::Rcpt if e.transaction == 0 => reply(451, "4.7.1 Too many messages, slow down"),
        _ => Action::Default,
    })
    .await;
    let app = spawn_app_with(&[
        ("MISSIVE_SMTP__URL", &server.url()),
        ("MISSIVE_SMTP__CONNECTIONS", "1"),
        ("MISSIVE_SENDING__THROTTLE_COOLDOWN_SECONDS", "1"),
    ])
    .await;
    app.sign(&signer("Ana", "Example", "ana@example.net"))
        .await
        .unwrap();

    let summary = app.send_all().await;

    assert_eq!((summary.deferred, summary.sent), (1, 3));
    let starts: Vec<i64> = sqlx::query_scalar("SELECT started_at FROM attempts ORDER BY id")
        .fetch_all(&app.db().await)
        .await
        .unwrap();
    assert!(
        starts[1] - starts[0] >= 1000,
        "the next letter waited out the cool-down: {starts:?}"
    );
}

#[tokio::test]
async fn in_doubt_letters_are_resent_only_when_an_organiser_says_so() {
    let c = case(
        |e: &Event| match e.stage {
            Stage::EndOfData if e.transaction == 0 => Action::Close,
            _ => Action::Default,
        },
        &[],
    )
    .await;
    assert_eq!(c.letter().await.0, "in_doubt");
    assert_eq!(
        c.app.send_all().await.sent,
        3,
        "the letter in doubt is not retried on its own"
    );

    let scope = missive::queue::Scope {
        letter: None,
        campaign: None,
    };
    let n = c
        .app
        .app
        .queue
        .resolve_in_doubt(&scope, true, now_millis())
        .await
        .unwrap();
    let summary = c.app.send_all().await;

    assert_eq!(n, 1);
    assert_eq!(summary.sent, 1);
    assert_eq!(c.server.received().len(), 4);
    let states: Vec<String> = sqlx::query_scalar("SELECT DISTINCT state FROM letters")
        .fetch_all(&c.app.db().await)
        .await
        .unwrap();
    assert_eq!(states, vec!["sent"]);
}
