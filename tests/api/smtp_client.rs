//! The SMTP conversation (lettre's connection over Missive's sockets) against the scripted
//! server: MAIL, RCPT and DATA one at a time, a refusal recorded and the connection reset and
//! kept, STARTTLS and implicit TLS with a private CA (`smtp.ca_file`), AUTH PLAIN and LOGIN over
//! TLS, and the worker's gate (its `sending` record) running beside the envelope, the message
//! waiting for it.

use crate::helpers::{signer, spawn_app_with, TestApp};
use crate::smtp_server::{reply, Action, Event, Options, ScriptedSmtp, ServerTls, Stage, TestCa};
use std::sync::Arc;

#[derive(Debug, sqlx::FromRow)]
struct Attempt {
    stage: Option<String>,
    code: Option<i64>,
    outcome: String,
    reply: Option<String>,
}

async fn attempts(app: &TestApp) -> Vec<Attempt> {
    sqlx::query_as("SELECT stage, code, outcome, reply FROM attempts ORDER BY id")
        .fetch_all(&app.db().await)
        .await
        .unwrap()
}

/// An app sending through `server` on one connection, with extra settings; one signer's four
/// letters queued.
async fn app_with_letters(server: &ScriptedSmtp, extra: &[(&str, &str)]) -> TestApp {
    let url = server.url();
    let mut env = vec![
        ("MISSIVE_SMTP__URL", url.as_str()),
        ("MISSIVE_SMTP__CONNECTIONS", "1"),
    ];
    env.extend_from_slice(extra);
    let app = spawn_app_with(&env).await;
    app.sign(&signer("Ana", "Example", "ana@example.net"))
        .await
        .unwrap();
    app
}

#[tokio::test]
async fn commands_go_one_at_a_time_even_when_the_server_offers_pipelining() {
    let server = ScriptedSmtp::start().await;
    let app = app_with_letters(&server, &[]).await;

    let summary = app.send_all().await;

    assert_eq!(summary.sent, 4);
    let received = server.received();
    assert!(
        received.iter().all(|r| !r.pipelined),
        "each command waited for its reply"
    );
    assert!(received.iter().all(|r| r.text().contains("Ana")));
}

#[tokio::test]
async fn a_refused_mail_is_recorded_and_the_connection_is_reset_and_kept() {
    let server = ScriptedSmtp::start_with(|e: &Event| match e.stage {
        Stage::Mail if e.transaction == 0 => reply(451, "4.3.0 Try again later"),
        _ => Action::Default,
    })
    .await;
    let app = app_with_letters(&server, &[]).await;

    let summary = app.send_all().await;

    assert_eq!((summary.deferred, summary.sent), (1, 3));
    let first = &attempts(&app).await[0];
    assert_eq!(
        (first.stage.as_deref(), first.code, first.outcome.as_str()),
        (Some("mail"), Some(451), "deferred"),
        "{first:?}"
    );
    assert!(first.reply.as_deref().unwrap().contains("Try again later"));
    assert_eq!(server.sessions(), 1, "RSET, and the next letter went on");
}

#[tokio::test]
async fn a_refused_recipient_without_pipelining_keeps_the_connection() {
    let server = ScriptedSmtp::start_with_options(
        Options {
            pipelining: false,
            ..Options::default()
        },
        |e: &Event| match e.stage {
            Stage::Rcpt if e.transaction == 1 => reply(550, "5.1.1 No such user"),
            _ => Action::Default,
        },
    )
    .await;
    let app = app_with_letters(&server, &[]).await;

    let summary = app.send_all().await;

    assert_eq!((summary.failed, summary.sent), (1, 3));
    assert_eq!(server.sessions(), 1);
}

/// A server that accepts everything, encrypted as `tls` says.
async fn accepting_server(tls: ServerTls) -> ScriptedSmtp {
    ScriptedSmtp::start_with_options(
        Options {
            tls,
            ..Options::default()
        },
        |_| Action::Default,
    )
    .await
}

#[tokio::test]
async fn starttls_with_the_relays_ca_in_ca_file_encrypts_the_conversation() {
    let ca = TestCa::new();
    let server = accepting_server(ca.starttls()).await;
    let ca_file = ca.ca_file().display().to_string();
    let app = app_with_letters(
        &server,
        &[
            ("MISSIVE_SMTP__STARTTLS", "required"),
            ("MISSIVE_SMTP__CA_FILE", &ca_file),
        ],
    )
    .await;

    let summary = app.send_all().await;

    assert_eq!(summary.sent, 4);
    let received = server.received();
    assert_eq!(received.len(), 4);
    assert!(
        received.iter().all(|r| r.tls),
        "every message came over TLS"
    );
    assert_eq!(server.sessions(), 1);
}

#[tokio::test]
async fn implicit_tls_with_the_relays_ca_in_ca_file_sends() {
    let ca = TestCa::new();
    let server = accepting_server(ca.implicit()).await;
    assert!(server.url().starts_with("smtps://"));
    let ca_file = ca.ca_file().display().to_string();
    let app = app_with_letters(&server, &[("MISSIVE_SMTP__CA_FILE", &ca_file)]).await;

    let summary = app.send_all().await;

    assert_eq!(summary.sent, 4);
    assert!(server.received().iter().all(|r| r.tls));
}

/// Sends one signer's letters over STARTTLS to a server offering the AUTH mechanisms `auth`,
/// with credentials; returns the server.
async fn send_with_auth(auth: &'static str) -> ScriptedSmtp {
    let ca = TestCa::new();
    let server = ScriptedSmtp::start_with_options(
        Options {
            tls: ca.starttls(),
            auth,
            ..Options::default()
        },
        |_| Action::Default,
    )
    .await;
    let ca_file = ca.ca_file().display().to_string();
    let app = app_with_letters(
        &server,
        &[
            ("MISSIVE_SMTP__STARTTLS", "required"),
            ("MISSIVE_SMTP__CA_FILE", &ca_file),
            ("MISSIVE_SMTP__USERNAME", "letters@example.org"),
            ("MISSIVE_SMTP__PASSWORD", "s3cret pass"),
        ],
    )
    .await;
    assert_eq!(app.send_all().await.sent, 4);
    server
}

#[tokio::test]
async fn auth_plain_over_tls_presents_the_credentials() {
    let server = send_with_auth("PLAIN LOGIN").await;

    let auths = server.auths();
    assert_eq!(auths.len(), 1, "one login for the one connection");
    let a = &auths[0];
    assert_eq!(
        (
            a.mechanism.as_str(),
            a.username.as_str(),
            a.password.as_str()
        ),
        ("PLAIN", "letters@example.org", "s3cret pass")
    );
    assert!(a.tls, "the credentials went over TLS");
}

#[tokio::test]
async fn auth_login_over_tls_when_plain_is_not_offered() {
    let server = send_with_auth("LOGIN").await;

    let auths = server.auths();
    assert_eq!(auths.len(), 1);
    let a = &auths[0];
    assert_eq!(
        (
            a.mechanism.as_str(),
            a.username.as_str(),
            a.password.as_str()
        ),
        ("LOGIN", "letters@example.org", "s3cret pass")
    );
    assert!(a.tls);
}

/// The letter's own result; a fault of the relay's session fails the test.
fn attempted(handover: missive::mailer::Handover) -> missive::mailer::Delivery {
    match handover {
        missive::mailer::Handover::Attempted(delivery) => delivery,
        missive::mailer::Handover::Relay(fault) => panic!("the relay's session failed: {fault:?}"),
    }
}

/// A session straight to `server` (no queue), one connection, no TLS.
fn session(server: &ScriptedSmtp) -> missive::mailer::SmtpSession {
    let settings = missive::config::SmtpSettings {
        url: server.url(),
        starttls: missive::config::StartTls::Off,
        username: None,
        password: None,
        hello_name: "missive.example.org".into(),
        connect_timeout_seconds: 5,
        send_timeout_seconds: 10,
        connections: 1,
        max_messages_per_connection: 100,
        ca_file: Default::default(),
        smtputf8: false,
    };
    let endpoint = missive::mailer::SmtpEndpoint::from_settings(&settings).unwrap();
    missive::mailer::SmtpSession::new(Arc::new(endpoint))
}

fn letter() -> missive::domain::Letter {
    use missive::domain::{EmailAddress, LanguageTag, Letter};
    Letter {
        target_id: "office".into(),
        recipient: EmailAddress::parse("office@example.org").unwrap(),
        recipient_name: "The Office".into(),
        from_name: "Ana Example".into(),
        from_address: EmailAddress::parse("letters@example.org").unwrap(),
        reply_to: EmailAddress::parse("ana@example.net").unwrap(),
        language: LanguageTag::parse("en").unwrap(),
        subject: "Please act".into(),
        body_text: "Dear Office,\nplease act.\n".into(),
        body_html: None,
        template_hash: "test".into(),
    }
}

/// The worker's record that a letter may go (`sending`) is written while MAIL, RCPT and DATA
/// travel, not after them; but no byte of the message leaves before it is done.
#[tokio::test]
async fn the_gate_runs_beside_the_envelope_and_the_message_waits_for_it() {
    use std::time::{Duration, Instant};
    let data_seen = Arc::new(std::sync::Mutex::new(None::<Instant>));
    let seen = data_seen.clone();
    let server = ScriptedSmtp::start_with(move |e| {
        if e.stage == Stage::Data {
            *seen.lock().unwrap() = Some(Instant::now());
        }
        Action::Default
    })
    .await;
    let letter = letter();
    let message = missive::mailer::build_message(&letter, "<gate-1@example.org>").unwrap();
    let mut session = session(&server);

    let started = Instant::now();
    let gate_started = Arc::new(std::sync::Mutex::new(None::<Instant>));
    let gate_start = gate_started.clone();
    let gate = async move {
        *gate_start.lock().unwrap() = Some(Instant::now());
        tokio::time::sleep(Duration::from_millis(300)).await;
        true
    };
    let delivery = attempted(session.send(&letter, &message, gate).await);

    assert_eq!(delivery.code, Some(250), "{delivery:?}");
    let gate_started = gate_started.lock().unwrap().expect("the gate ran");
    let data_seen = data_seen.lock().unwrap().expect("the server saw DATA");
    // The gate began before the server had even seen DATA: it ran beside the envelope...
    assert!(gate_started < data_seen);
    // ...and the message, which the server records on arrival, waited for it.
    assert!(started.elapsed() >= Duration::from_millis(300));
    assert_eq!(server.received().len(), 1);
    session.close().await;
}

#[tokio::test]
async fn a_gate_that_says_no_transmits_nothing() {
    let server = ScriptedSmtp::start().await;
    let letter = letter();
    let message = missive::mailer::build_message(&letter, "<gate-2@example.org>").unwrap();
    let mut session = session(&server);

    let delivery = attempted(session.send(&letter, &message, async { false }).await);

    assert_eq!(delivery.code, None);
    assert!(delivery.reply.contains("lease"), "{delivery:?}");
    assert_ne!(delivery.verdict, missive::mailer::Verdict::Accepted);
    // The server never got a message; the next letter goes on a fresh connection.
    assert!(server.received().is_empty());
    let delivery = attempted(session.send(&letter, &message, async { true }).await);
    assert_eq!(delivery.code, Some(250), "{delivery:?}");
    assert_eq!(server.received().len(), 1);
    assert_eq!(server.sessions(), 2);
    session.close().await;
}

#[tokio::test]
async fn a_signer_with_utf8_before_the_at_is_written_with_smtputf8_when_the_relay_offers_it() {
    let mails = Arc::new(std::sync::Mutex::new(Vec::new()));
    let seen = mails.clone();
    let server = ScriptedSmtp::start_with(move |e: &Event| {
        if e.stage == Stage::Mail {
            seen.lock().unwrap().push(e.argument.clone());
        }
        Action::Default
    })
    .await;
    let app = spawn_app_with(&[
        ("MISSIVE_SMTP__URL", &server.url()),
        ("MISSIVE_SMTP__CONNECTIONS", "1"),
        ("MISSIVE_SMTP__SMTPUTF8", "true"),
    ])
    .await;
    app.sign(&signer("José", "Núñez", "josé@example.net"))
        .await
        .unwrap();

    let summary = app.send_all().await;

    assert_eq!(summary.sent, 4, "{summary:?}");
    let mails = mails.lock().unwrap().clone();
    assert_eq!(mails.len(), 4);
    assert!(mails.iter().all(|m| m.contains("SMTPUTF8")), "{mails:?}");
    for r in server.received() {
        let reply_to = r.header("Reply-To").unwrap();
        assert!(reply_to.contains("<josé@example.net>"), "{reply_to}");
    }
}
