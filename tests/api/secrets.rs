//! Secrets stay secret: the real binary, logging at debug level, never writes the API key, the
//! form secret or the SMTP password to its output, and neither do the answers it gives a
//! client presenting a wrong key or a forged form. A database URL's password is shown as `***`
//! by `missive check` and in errors.

use crate::helpers::{run, spawn_app, spawn_app_with, TestApp, CAMPAIGN};
use missive::queue::QueueError;
use std::time::{Duration, Instant};

const API_KEY: &str = "api-key-never-printed-0123456789";
const SECRET: &str = "form-secret-never-printed-0123456789abc";
const PASSWORD: &str = "smtp-password-never-printed";

/// Every secret value, and a recognisable piece of each.
const SECRETS: [&str; 6] = [
    API_KEY,
    SECRET,
    PASSWORD,
    "api-key-never",
    "form-secret-never",
    "smtp-password-never",
];

fn assert_no_secret(what: &str, text: &str) {
    for secret in SECRETS {
        assert!(!text.contains(secret), "{what} shows `{secret}`:\n{text}");
    }
}

/// An app holding all three secrets, sending to a port nothing listens on.
async fn app_with_secrets(address: &str) -> TestApp {
    let closed = crate::web_helpers::free_port();
    spawn_app_with(&[
        ("MISSIVE_HTTP__BIND", address),
        ("MISSIVE_HTTP__BASE_URL", &format!("http://{address}")),
        ("MISSIVE_HTTP__API_KEYS", API_KEY),
        ("MISSIVE_HTTP__SECRET", SECRET),
        ("MISSIVE_SMTP__URL", &format!("smtp://127.0.0.1:{closed}")),
        ("MISSIVE_SMTP__USERNAME", "letters@example.org"),
        ("MISSIVE_SMTP__PASSWORD", PASSWORD),
        ("MISSIVE_SMTP__CONNECT_TIMEOUT_SECONDS", "2"),
    ])
    .await
}

/// One HTTP/1.1 request over a fresh connection; the whole response as text.
async fn http(address: &str, request: &str) -> String {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let exchange = async {
        let mut stream = tokio::net::TcpStream::connect(address).await?;
        stream.write_all(request.as_bytes()).await?;
        let mut response = Vec::new();
        stream.read_to_end(&mut response).await?;
        std::io::Result::Ok(response)
    };
    let response = tokio::time::timeout(Duration::from_secs(30), exchange)
        .await
        .expect("the server answers within 30 s")
        .unwrap();
    String::from_utf8_lossy(&response).into_owned()
}

fn api_request(address: &str, key: &str, email: &str) -> String {
    let body = crate::web_helpers::api_body(email);
    format!(
        "POST /api/v1/campaigns/{CAMPAIGN}/signatures HTTP/1.1\r\nHost: {address}\r\n\
         Authorization: Bearer {key}\r\nContent-Type: application/json\r\n\
         Content-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    )
}

// The client runs on this test's runtime while the binary runs: use worker threads.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn serve_check_and_send_never_print_the_api_key_the_form_secret_or_the_smtp_password() {
    let port = crate::web_helpers::free_port();
    let address = format!("127.0.0.1:{port}");
    let app = app_with_secrets(&address).await;
    // Logs go to files, not pipes: debug logs would fill a pipe nobody reads while it runs.
    let log_path = app.path().join("serve.log");
    let out_path = app.path().join("serve.out");
    let mut serve = app
        .cli()
        .args(["serve", "--no-worker"])
        .env("MISSIVE_LOG", "debug")
        .stdout(std::fs::File::create(&out_path).unwrap())
        .stderr(std::fs::File::create(&log_path).unwrap())
        .spawn()
        .expect("missive serve starts");
    let up = Instant::now() + Duration::from_secs(30);
    while tokio::net::TcpStream::connect(&address).await.is_err() {
        assert!(Instant::now() < up, "the server did not start listening");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }

    let accepted = http(&address, &api_request(&address, API_KEY, "ana@example.net")).await;
    let wrong_key = format!("{API_KEY}-but-wrong");
    let refused = http(
        &address,
        &api_request(&address, &wrong_key, "bo@example.net"),
    )
    .await;
    let page = http(
        &address,
        &format!("GET /c/{CAMPAIGN} HTTP/1.1\r\nHost: {address}\r\nConnection: close\r\n\r\n"),
    )
    .await;
    let form = "csrf=forged.token&first_name=Ana&last_name=Example&email=ana%40example.net\
                &consent_letter=yes";
    let forged = http(
        &address,
        &format!(
            "POST /c/{CAMPAIGN}/sign HTTP/1.1\r\nHost: {address}\r\nOrigin: http://{address}\r\n\
             Content-Type: application/x-www-form-urlencoded\r\nContent-Length: {}\r\n\
             Connection: close\r\n\r\n{form}",
            form.len()
        ),
    )
    .await;
    std::process::Command::new("kill")
        .args(["-TERM", &serve.id().to_string()])
        .status()
        .unwrap();
    let stopped_at = Instant::now();
    while serve.try_wait().unwrap().is_none() {
        assert!(
            stopped_at.elapsed() < Duration::from_secs(10),
            "serve did not stop within 10 s of SIGTERM"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let check = run(app.cli().arg("check").env("MISSIVE_LOG", "debug"));
    let send = run(app.cli().arg("send").env("MISSIVE_LOG", "debug"));

    assert!(accepted.starts_with("HTTP/1.1 201"), "{accepted}");
    assert!(refused.starts_with("HTTP/1.1 401"), "{refused}");
    assert!(page.starts_with("HTTP/1.1 200"), "{page}");
    assert!(forged.starts_with("HTTP/1.1 403"), "{forged}");
    for (what, text) in [
        ("the API's answer", &accepted),
        ("the API's refusal", &refused),
        ("the action page", &page),
        ("the refused form", &forged),
    ] {
        assert_no_secret(what, text);
    }
    let serve_log = std::fs::read_to_string(&log_path).unwrap();
    assert!(serve_log.contains("web intake listening"), "{serve_log}");
    assert_no_secret("serve's log", &serve_log);
    assert_no_secret(
        "serve's output",
        &std::fs::read_to_string(&out_path).unwrap(),
    );
    assert_eq!(check.code, 0, "{}", check.stderr);
    assert_no_secret("check's output", &check.stdout);
    assert_no_secret("check's log", &check.stderr);
    assert!(
        send.stderr.contains("127.0.0.1"),
        "send reports the relay it could not reach: {}",
        send.stderr
    );
    assert_no_secret("send's output", &send.stdout);
    assert_no_secret("send's log", &send.stderr);
}

/// A PostgreSQL URL with a password, on a port where nothing listens.
const DATABASE_URL: &str = "postgres://missive:hunter2@127.0.0.1:1/missive";
const DATABASE_SHOWN: &str = "postgres://missive:***@127.0.0.1:1/missive";

#[tokio::test]
async fn check_shows_the_database_url_with_its_password_replaced() {
    let app = spawn_app().await;

    let out = run(app
        .cli()
        .arg("check")
        .env("MISSIVE_DATABASE__URL", DATABASE_URL));

    assert_eq!(out.code, 0, "{}", out.stderr);
    assert!(
        out.stderr
            .contains(&format!("database: {DATABASE_SHOWN}\n")),
        "{}",
        out.stderr
    );
    assert!(!out.stdout.contains("hunter2") && !out.stderr.contains("hunter2"));
}

#[tokio::test]
async fn a_database_that_cannot_be_opened_is_named_with_its_password_replaced() {
    let app = spawn_app().await;

    let out = run(app
        .cli()
        .arg("status")
        .env("MISSIVE_DATABASE__URL", DATABASE_URL));
    let connect = QueueError::Connect {
        url: DATABASE_URL.to_owned(),
        source: sqlx::Error::PoolTimedOut,
    }
    .to_string();

    assert_eq!(out.code, 2, "{}", out.stderr);
    assert!(out.stderr.contains(DATABASE_SHOWN), "{}", out.stderr);
    assert!(!out.stderr.contains("hunter2"), "{}", out.stderr);
    assert!(connect.contains(DATABASE_SHOWN), "{connect}");
    assert!(!connect.contains("hunter2"), "{connect}");
}
