//! Faults of the relay's session, scripted: a relay that cannot be reached, refuses the
//! greeting, EHLO, STARTTLS or the credentials, fails TLS, injects bytes after its `220` to
//! STARTTLS, cannot give what the configuration asks, or closes a reused connection while it
//! idled. None of them fails a letter or spends its attempts: letters stay queued, a batch
//! stops saying why (exit 2 from the binary), `serve` keeps its web side up and tries the relay
//! again, and one connection turned away among several backs off while the others send.

use crate::helpers::{run, signer, spawn_app_with, spawn_app_with_ana, TestApp, CAMPAIGN};
use crate::smtp_server::{reply, Action, Event, Options, ScriptedSmtp, Stage, TestCa};
use missive::mailer::FaultKind;
use missive::worker::RunSummary;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

/// Settings sending to `server` over `connections` connections, timeouts short.
fn relay_env(url: &str, connections: &str) -> Vec<(String, String)> {
    [
        ("MISSIVE_SMTP__URL", url),
        ("MISSIVE_SMTP__CONNECTIONS", connections),
        ("MISSIVE_SMTP__SEND_TIMEOUT_SECONDS", "1"),
        ("MISSIVE_SMTP__CONNECT_TIMEOUT_SECONDS", "1"),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_owned(), v.to_owned()))
    .collect()
}

/// Ana's four letters queued, sent in one batch to `url` over one connection.
async fn one_batch(url: &str, extra: &[(&str, &str)]) -> (TestApp, RunSummary) {
    let mut env = relay_env(url, "1");
    env.extend(extra.iter().map(|(k, v)| (k.to_string(), v.to_string())));
    let env: Vec<(&str, &str)> = env.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
    let app = spawn_app_with_ana(&env).await;
    let summary = tokio::time::timeout(Duration::from_secs(30), app.send_all())
        .await
        .expect("the batch ends");
    (app, summary)
}

/// Every letter is as it was queued: waiting, no attempt spent, no attempt recorded.
async fn assert_untouched(app: &TestApp) {
    let db = app.db().await;
    let rows: Vec<(String, i64)> = sqlx::query_as("SELECT state, attempts FROM letters")
        .fetch_all(&db)
        .await
        .unwrap();
    assert!(!rows.is_empty());
    for (state, attempts) in rows {
        assert_eq!((state.as_str(), attempts), ("queued", 0));
    }
    let recorded: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM attempts")
        .fetch_one(&db)
        .await
        .unwrap();
    assert_eq!(recorded, 0, "no attempt was recorded for the relay's fault");
}

/// The batch stopped because the relay is unusable, at `stage` with `code`; returns the fault.
fn unusable(summary: &RunSummary, stage: &str, code: Option<u16>) -> missive::mailer::RelayFault {
    let fault = summary
        .relay_unusable
        .clone()
        .unwrap_or_else(|| panic!("the relay was judged usable: {summary:?}"));
    assert_eq!(
        (fault.stage.as_str(), fault.code),
        (stage, code),
        "{fault:?}"
    );
    assert_eq!(summary.attempted(), 0, "{summary:?}");
    fault
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

/// The relay's health record, as `missive status` reads it.
async fn health(app: &TestApp) -> Option<(String, Option<i64>, Option<String>)> {
    sqlx::query_as("SELECT state, code, reply FROM relay_health")
        .fetch_optional(&app.db().await)
        .await
        .unwrap()
}

#[tokio::test]
async fn a_relay_that_refuses_connections_fails_no_letter_and_stops_the_batch() {
    let closed = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let url = format!("smtp://127.0.0.1:{}", closed.local_addr().unwrap().port());
    drop(closed);

    let (app, summary) = one_batch(&url, &[]).await;

    let fault = unusable(&summary, "connect", None);
    assert_eq!(fault.kind, FaultKind::Unreachable);
    assert!(fault.reply.contains("cannot connect"), "{fault:?}");
    assert!(fault.hint.unwrap().contains("smtp.url"));
    assert_untouched(&app).await;
    let (state, _, reply) = health(&app).await.expect("a health record");
    assert_eq!(state, "unusable");
    assert!(reply.unwrap().contains("cannot connect"));
}

#[tokio::test]
async fn a_554_at_the_greeting_makes_the_relay_unusable() {
    let server = ScriptedSmtp::start_with(at(
        Stage::Greeting,
        reply(554, "5.7.1 No SMTP service here"),
    ))
    .await;

    let (app, summary) = one_batch(&server.url(), &[]).await;

    let fault = unusable(&summary, "greeting", Some(554));
    assert_eq!(fault.kind, FaultKind::Unusable);
    assert!(fault.reply.contains("No SMTP service here"), "{fault:?}");
    assert_untouched(&app).await;
}

#[tokio::test]
async fn a_421_at_the_greeting_of_the_only_connection_stops_the_batch() {
    let server = ScriptedSmtp::start_with(at(
        Stage::Greeting,
        reply(421, "4.3.2 Too many connections"),
    ))
    .await;

    let (app, summary) = one_batch(&server.url(), &[]).await;

    let fault = unusable(&summary, "greeting", Some(421));
    assert_eq!(fault.kind, FaultKind::TurnedAway);
    assert_untouched(&app).await;
}

#[tokio::test]
async fn a_421_at_the_greeting_of_one_of_several_connections_backs_only_that_one_off() {
    // A relay capping its sessions: the first connection is turned away (a moment after the
    // others were greeted), the others go on.
    let server = ScriptedSmtp::start_with(|e: &Event| match e.stage {
        Stage::Greeting if e.session == 0 => Action::ReplyAfter(
            Duration::from_millis(100),
            421,
            "4.7.0 Too many sessions".into(),
        ),
        _ => Action::Default,
    })
    .await;
    let env = relay_env(&server.url(), "3");
    let env: Vec<(&str, &str)> = env.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
    let app = spawn_app_with(&env).await;
    for n in 0..3 {
        app.sign(&signer("Ana", "Example", &format!("ana{n}@example.net")))
            .await
            .unwrap();
    }

    let summary = tokio::time::timeout(Duration::from_secs(30), app.send_all())
        .await
        .unwrap();

    assert_eq!(summary.relay_unusable, None, "{summary:?}");
    assert_eq!((summary.sent, summary.deferred), (12, 0));
    let stages: Vec<String> = sqlx::query_scalar("SELECT DISTINCT stage FROM attempts")
        .fetch_all(&app.db().await)
        .await
        .unwrap();
    assert_eq!(
        stages,
        vec!["end_of_data"],
        "no letter paid for the greeting"
    );
    assert!(
        server.sessions() >= 4,
        "the turned-away connection came back"
    );
}

#[tokio::test]
async fn a_550_to_ehlo_makes_the_relay_unusable_and_names_ehlo() {
    let server =
        ScriptedSmtp::start_with(at(Stage::Ehlo, reply(550, "5.7.1 Client host rejected"))).await;

    let (app, summary) = one_batch(&server.url(), &[]).await;

    let fault = unusable(&summary, "ehlo", Some(550));
    assert!(fault.reply.contains("Client host rejected"), "{fault:?}");
    assert!(fault.hint.unwrap().contains("smtp.hello_name"));
    assert_untouched(&app).await;
}

#[tokio::test]
async fn a_relay_that_does_not_know_ehlo_is_unusable_and_says_so() {
    // lettre speaks EHLO only; a relay refusing it as unknown cannot be used.
    let server = ScriptedSmtp::start_with(at(
        Stage::Ehlo,
        reply(502, "5.5.2 Error: command not recognized"),
    ))
    .await;

    let (app, summary) = one_batch(&server.url(), &[]).await;

    unusable(&summary, "ehlo", Some(502));
    assert_untouched(&app).await;
}

#[tokio::test]
async fn a_454_at_auth_on_the_only_connection_stops_the_batch() {
    let server = ScriptedSmtp::start_with(at(
        Stage::Auth,
        reply(454, "4.7.0 Temporary authentication failure"),
    ))
    .await;

    let (app, summary) = one_batch(
        &server.url(),
        &[
            ("MISSIVE_SMTP__USERNAME", "letters"),
            ("MISSIVE_SMTP__PASSWORD", "secret"),
        ],
    )
    .await;

    let fault = unusable(&summary, "auth", Some(454));
    assert_eq!(fault.kind, FaultKind::TurnedAway);
    assert_untouched(&app).await;
}

// The binary runs while this test waits for it: the scripted server needs a thread of its own.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_535_at_auth_with_100_letters_queued_fails_none_and_exits_2() {
    let server = ScriptedSmtp::start_with(at(
        Stage::Auth,
        reply(535, "5.7.8 Authentication credentials invalid"),
    ))
    .await;
    let mut env = relay_env(&server.url(), "4");
    env.push(("MISSIVE_SMTP__USERNAME".into(), "letters".into()));
    env.push(("MISSIVE_SMTP__PASSWORD".into(), "wrong".into()));
    let env: Vec<(&str, &str)> = env.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
    let app = spawn_app_with(&env).await;
    for n in 0..25 {
        app.sign(&signer("Ana", "Example", &format!("ana{n}@example.net")))
            .await
            .unwrap();
    }

    let out = run(app.cli().arg("send"));

    assert_eq!(out.code, 2, "{}", out.stderr);
    assert!(
        out.stderr.contains(
            "error: the relay refused the credentials: 535 5.7.8 Authentication credentials invalid"
        ),
        "{}",
        out.stderr
    );
    assert!(
        out.stderr
            .contains("hint: check MISSIVE_SMTP__USERNAME and MISSIVE_SMTP__PASSWORD"),
        "{}",
        out.stderr
    );
    assert!(
        out.stdout.contains("sent 0, deferred 0, failed 0"),
        "{}",
        out.stdout
    );
    assert!(
        !out.stderr.contains("wrong"),
        "the password is never printed"
    );
    assert_untouched(&app).await;
    let letters: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM letters")
        .fetch_one(&app.db().await)
        .await
        .unwrap();
    assert_eq!(letters, 100);
    assert!(server.received().is_empty());

    // `missive status` says why and what to do.
    let status = run(app.cli().arg("status"));
    assert_eq!(status.code, 0, "{}", status.stderr);
    assert!(
        status.stdout.contains("unusable since")
            && status.stdout.contains("refused the credentials")
            && status.stdout.contains("hint: check MISSIVE_SMTP__USERNAME"),
        "{}",
        status.stdout
    );
}

#[tokio::test]
async fn a_stall_at_the_greeting_stops_the_batch_after_the_timeout() {
    let server = ScriptedSmtp::start_with(at(Stage::Greeting, Action::Stall)).await;

    let (app, summary) = one_batch(&server.url(), &[]).await;

    let fault = unusable(&summary, "greeting", None);
    assert!(fault.reply.contains("no answer within 1 s"), "{fault:?}");
    assert_untouched(&app).await;
}

#[tokio::test]
async fn a_tls_handshake_failure_makes_the_relay_unusable() {
    // smtps:// to a server that speaks plain SMTP: the handshake cannot succeed.
    let server = ScriptedSmtp::start().await;
    let url = format!("smtps://127.0.0.1:{}", server.port());

    let (app, summary) = one_batch(&url, &[]).await;

    let fault = unusable(&summary, "tls", None);
    assert_eq!(fault.kind, FaultKind::Unusable);
    assert_untouched(&app).await;
}

#[tokio::test]
async fn starttls_required_but_not_offered_stops_and_says_why() {
    let server = ScriptedSmtp::start().await;

    let (app, summary) = one_batch(&server.url(), &[("MISSIVE_SMTP__STARTTLS", "required")]).await;

    let fault = unusable(&summary, "tls", None);
    assert!(fault.reply.contains("does not offer STARTTLS"), "{fault:?}");
    assert!(fault.hint.unwrap().contains("smtps://"));
    assert!(server.received().is_empty(), "nothing goes out in clear");
    assert_untouched(&app).await;
}

#[tokio::test]
async fn bytes_sent_after_the_220_to_starttls_are_refused_as_response_injection() {
    let ca = TestCa::new();
    let server = ScriptedSmtp::start_with_options(
        Options {
            tls: ca.starttls(),
            ..Options::default()
        },
        at(
            Stage::StartTls,
            Action::Garbage(
                b"220 2.0.0 Ready to start TLS\r\n250-injected\r\n250 AUTH PLAIN\r\n".to_vec(),
            ),
        ),
    )
    .await;
    let ca_file = ca.ca_file().display().to_string();

    let (app, summary) = one_batch(
        &server.url(),
        &[
            ("MISSIVE_SMTP__STARTTLS", "required"),
            ("MISSIVE_SMTP__CA_FILE", &ca_file),
            ("MISSIVE_SMTP__USERNAME", "letters"),
            ("MISSIVE_SMTP__PASSWORD", "secret"),
        ],
    )
    .await;

    let fault = unusable(&summary, "tls", None);
    assert!(fault.reply.contains("injecting replies"), "{fault:?}");
    assert!(server.auths().is_empty(), "no credentials went out");
    assert!(server.received().is_empty());
    assert_untouched(&app).await;
}

#[tokio::test]
async fn an_untrusted_certificate_is_refused_at_the_tls_stage_and_says_why() {
    let ca = TestCa::new();
    let server = ScriptedSmtp::start_with_options(
        Options {
            tls: ca.starttls(),
            ..Options::default()
        },
        |_| Action::Default,
    )
    .await;
    // No smtp.ca_file: the test CA is not among the public roots.

    let (app, summary) = one_batch(&server.url(), &[("MISSIVE_SMTP__STARTTLS", "required")]).await;

    let fault = unusable(&summary, "tls", None);
    assert!(fault.reply.contains("smtp.ca_file"), "{fault:?}");
    assert!(server.received().is_empty(), "nothing was sent");
    assert!(server.auths().is_empty());
    assert_untouched(&app).await;
}

#[tokio::test]
async fn smtputf8_promised_but_not_offered_makes_the_relay_unusable() {
    let server = ScriptedSmtp::start_with_options(
        Options {
            eight_bit: false,
            ..Options::default()
        },
        |_| Action::Default,
    )
    .await;

    let (app, summary) = one_batch(&server.url(), &[("MISSIVE_SMTP__SMTPUTF8", "true")]).await;

    let fault = unusable(&summary, "ehlo", None);
    assert!(fault.reply.contains("SMTPUTF8"), "{fault:?}");
    assert_untouched(&app).await;
}

#[tokio::test]
async fn an_idle_421_on_a_reused_connection_sends_the_letter_on_a_new_one_at_no_cost() {
    // The relay closes a connection idle for 200 ms with a 421 (RFC 5321 4.5.3.2); letters
    // leave every 500 ms, so each one after the first finds its connection closed.
    let server = ScriptedSmtp::start_with_options(
        Options {
            idle_close: Some(Duration::from_millis(200)),
            ..Options::default()
        },
        |_| Action::Default,
    )
    .await;

    let (app, summary) = one_batch(
        &server.url(),
        &[
            ("MISSIVE_SENDING__RATE_PER_SECOND", "2"),
            ("MISSIVE_SENDING__BURST", "1"),
            ("MISSIVE_SENDING__THROTTLE_COOLDOWN_SECONDS", "60"),
        ],
    )
    .await;

    assert_eq!((summary.sent, summary.deferred), (4, 0), "{summary:?}");
    let db = app.db().await;
    let starts: Vec<i64> = sqlx::query_scalar("SELECT started_at FROM attempts ORDER BY id")
        .fetch_all(&db)
        .await
        .unwrap();
    assert_eq!(starts.len(), 4, "one attempt per letter");
    assert!(
        starts.windows(2).all(|w| w[1] - w[0] < 60_000),
        "no letter waited out a throttling cool-down: {starts:?}"
    );
    let attempts: Vec<i64> = sqlx::query_scalar("SELECT attempts FROM letters")
        .fetch_all(&db)
        .await
        .unwrap();
    assert!(attempts.iter().all(|n| *n == 1), "{attempts:?}");
    assert_eq!(server.sessions(), 4);
}

#[tokio::test]
async fn a_connection_idle_for_a_while_is_tested_with_noop_before_it_carries_a_letter() {
    let noops = Arc::new(AtomicUsize::new(0));
    let seen = noops.clone();
    let server = ScriptedSmtp::start_with(move |e: &Event| {
        if e.stage == Stage::Noop {
            seen.fetch_add(1, Ordering::SeqCst);
        }
        Action::Default
    })
    .await;
    // Two letters 3.5 s apart: past the idle spell after which a connection is tested.
    let mut env = relay_env(&server.url(), "1");
    env.push(("MISSIVE_SENDING__RATE_PER_SECOND".into(), "0.28".into()));
    env.push(("MISSIVE_SENDING__BURST".into(), "1".into()));
    let env: Vec<(&str, &str)> = env.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
    let app = spawn_app_with_ana(&env).await;

    let summary = app.send_up_to(2).await;

    assert_eq!(summary.sent, 2);
    assert_eq!(
        noops.load(Ordering::SeqCst),
        1,
        "one NOOP before the second letter"
    );
    assert_eq!(
        server.sessions(),
        1,
        "the connection answered and was reused"
    );
}

#[tokio::test]
async fn serve_keeps_its_web_side_up_while_the_relay_refuses_and_sends_once_it_accepts() {
    let refusing = Arc::new(AtomicBool::new(true));
    let refuse = refusing.clone();
    let server = ScriptedSmtp::start_with(move |e: &Event| match e.stage {
        Stage::Auth if refuse.load(Ordering::SeqCst) => {
            reply(535, "5.7.8 Authentication credentials invalid")
        }
        _ => Action::Default,
    })
    .await;
    let mut env = relay_env(&server.url(), "2");
    env.push(("MISSIVE_SMTP__USERNAME".into(), "letters".into()));
    env.push(("MISSIVE_SMTP__PASSWORD".into(), "secret".into()));
    env.push(("MISSIVE_HTTP__BIND".into(), "127.0.0.1:0".into()));
    let env: Vec<(&str, &str)> = env.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
    let app = spawn_app_with_ana(&env).await;
    let serve = missive::startup::Application::build(app.settings.clone())
        .await
        .unwrap();
    let port = serve.port();
    let stop = tokio_util::sync::CancellationToken::new();
    let running = tokio::spawn(serve.run_until_stopped(stop.clone()));

    // The worker finds the relay unusable and records it; no letter pays for it.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(15);
    while health(&app)
        .await
        .is_none_or(|(state, _, _)| state != "unusable")
    {
        assert!(tokio::time::Instant::now() < deadline, "no relay record");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let (_, code, reply) = health(&app).await.unwrap();
    assert_eq!(code, Some(535));
    assert!(reply.unwrap().contains("refused the credentials"));
    let attempts: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM attempts")
        .fetch_one(&app.db().await)
        .await
        .unwrap();
    assert_eq!(attempts, 0);
    // The web side still serves.
    let page = http_get(port, &format!("/c/{CAMPAIGN}")).await;
    assert!(page.starts_with("HTTP/1.1 200"), "{page}");

    // The relay accepts again: the worker notices at its next try, and sends.
    refusing.store(false, Ordering::SeqCst);
    let received = server.wait_for_received(4, Duration::from_secs(20)).await;
    assert_eq!(received.len(), 4);
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    while health(&app)
        .await
        .is_some_and(|(state, _, _)| state != "usable")
    {
        assert!(tokio::time::Instant::now() < deadline, "still unusable");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    stop.cancel();
    running.await.unwrap().unwrap();
    let sent: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM letters WHERE state = 'sent'")
        .fetch_one(&app.db().await)
        .await
        .unwrap();
    assert_eq!(sent, 4);
}

/// `GET path` on 127.0.0.1:`port`, the raw response's head.
async fn http_get(port: u16, path: &str) -> String {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut s = tokio::net::TcpStream::connect(("127.0.0.1", port))
        .await
        .unwrap();
    s.write_all(
        format!("GET {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n").as_bytes(),
    )
    .await
    .unwrap();
    let mut out = Vec::new();
    s.read_to_end(&mut out).await.unwrap();
    String::from_utf8_lossy(&out).into_owned()
}

#[tokio::test]
async fn an_idn_reply_to_goes_out_as_ascii_to_a_relay_without_smtputf8() {
    let server = ScriptedSmtp::start_with_options(
        Options {
            eight_bit: false,
            ..Options::default()
        },
        |_| Action::Default,
    )
    .await;
    let env = relay_env(&server.url(), "1");
    let env: Vec<(&str, &str)> = env.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
    let app = spawn_app_with(&env).await;
    app.sign(&signer("Zoë", "Example", "zoe@société.example"))
        .await
        .unwrap();

    let summary = app.send_all().await;

    assert_eq!(summary.sent, 4, "{summary:?}");
    for r in server.received() {
        assert!(r.data.is_ascii(), "no 8-bit byte without 8BITMIME");
        let reply_to = r.header("Reply-To").unwrap();
        assert!(
            reply_to.contains("<zoe@xn--socit-esab.example>"),
            "{reply_to}"
        );
    }
}

#[tokio::test]
async fn send_to_a_closed_port_exits_2_saying_it_cannot_connect() {
    let closed = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let url = format!("smtp://127.0.0.1:{}", closed.local_addr().unwrap().port());
    drop(closed);
    let env = relay_env(&url, "4");
    let env: Vec<(&str, &str)> = env.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
    let app = spawn_app_with_ana(&env).await;

    let out = run(app.cli().arg("send"));

    assert_eq!(out.code, 2, "{}{}", out.stdout, out.stderr);
    assert!(
        out.stderr
            .contains("error: cannot connect to the relay 127.0.0.1:"),
        "{}",
        out.stderr
    );
    assert!(
        out.stderr.contains("hint: check smtp.url"),
        "{}",
        out.stderr
    );
    assert!(
        out.stderr.contains("4 letter(s) stay queued"),
        "{}",
        out.stderr
    );
    assert_untouched(&app).await;
}

#[tokio::test]
async fn serve_logs_an_unusable_relay_once_however_often_it_tries_again() {
    let closed = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let url = format!("smtp://127.0.0.1:{}", closed.local_addr().unwrap().port());
    drop(closed);
    let mut env = relay_env(&url, "2");
    env.push(("MISSIVE_HTTP__BIND".into(), "127.0.0.1:0".into()));
    let env: Vec<(&str, &str)> = env.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
    let app = spawn_app_with_ana(&env).await;
    let log = app.path().join("serve.log");
    let mut child = app
        .cli()
        .arg("serve")
        .stdout(std::process::Stdio::null())
        .stderr(std::fs::File::create(&log).unwrap())
        .spawn()
        .expect("missive serve starts");

    // Wait until the worker has tried the relay again twice (each failed try moves the next).
    let mut tries = std::collections::HashSet::new();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    while tries.len() < 3 {
        assert!(
            tokio::time::Instant::now() < deadline,
            "tries seen: {tries:?}"
        );
        let retry_at: Option<Option<i64>> = sqlx::query_scalar("SELECT retry_at FROM relay_health")
            .fetch_optional(&app.db().await)
            .await
            .unwrap();
        if let Some(Some(at)) = retry_at {
            tries.insert(at);
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    std::process::Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status()
        .unwrap();
    let status = child.wait().unwrap();

    assert_eq!(status.code(), Some(0));
    let log = std::fs::read_to_string(&log).unwrap();
    assert_eq!(
        log.matches("the relay is unusable").count(),
        1,
        "one line for one change: {log}"
    );
    assert!(log.contains("cannot connect"), "{log}");
    assert_untouched(&app).await;
}

#[tokio::test]
async fn status_warns_when_deferred_letters_near_their_maximum_age() {
    let app = spawn_app_with_ana(&[]).await;
    // One letter deferred since 110 hours ago: within a day of the default 120.
    let queued_at = missive::queue::now_millis() - 110 * 3_600_000;
    sqlx::query(
        "UPDATE letters SET state = 'deferred', attempts = 3, queued_at = $1
          WHERE id = (SELECT MIN(id) FROM letters)",
    )
    .bind(queued_at)
    .execute(&app.db().await)
    .await
    .unwrap();

    let out = run(app.cli().arg("status"));
    let json = run(app.cli().args(["status", "--json"]));

    assert_eq!(out.code, 0, "{}", out.stderr);
    assert!(
        out.stderr.contains(
            "warning: 1 deferred letter(s) are within a day of sending.max_age_hours (120 h)"
        ),
        "{}",
        out.stderr
    );
    let report: serde_json::Value = serde_json::from_str(&json.stdout).unwrap();
    assert_eq!(report["near_expiry"]["letters"], 1, "{report}");
    assert_eq!(report["near_expiry"]["oldest_queued_at"], queued_at);
    assert!(
        report["by_state"]["queued"].is_number(),
        "the report's own keys stay"
    );
}
