//! Crashes and stops: `missive send` killed with SIGKILL at random moments, again and again,
//! must lose no letter and send none twice without marking it in doubt; SIGTERM must stop a
//! batch cleanly with no letter left leased. `missive serve` killed while clients sign through
//! the API must keep every signature it acknowledged, each with all its letters.

use crate::helpers::{run, spawn_app_with, TestApp, CAMPAIGN};
use crate::smtp_server::{Action, Event, ScriptedSmtp, Stage};
use rand::Rng;
use std::collections::HashMap;
use std::process::{Child, Stdio};
use std::time::{Duration, Instant};

/// A slow server: every reply after the data waits a little, so kills land mid-conversation.
async fn slow_server(delay_ms: u64) -> ScriptedSmtp {
    ScriptedSmtp::start_with(move |e: &Event| match e.stage {
        Stage::EndOfData | Stage::Rcpt => Action::Delay(Duration::from_millis(delay_ms)),
        _ => Action::Default,
    })
    .await
}

async fn app_with_signers(server: &ScriptedSmtp, signers: usize) -> TestApp {
    let app = spawn_app_with(&[
        ("MISSIVE_SMTP__URL", &server.url()),
        ("MISSIVE_SMTP__CONNECTIONS", "4"),
        ("MISSIVE_SENDING__LEASE_SECONDS", "5"),
        ("MISSIVE_SENDING__CLAIM_BATCH", "16"),
    ])
    .await;
    let mut csv = String::from("first_name,last_name,email\n");
    for i in 0..signers {
        csv.push_str(&format!("Signer{i},Tester,signer{i}@example.net\n"));
    }
    let file = app.write("signers.csv", csv);
    let out = run(app.cli().args(["import", CAMPAIGN]).arg(&file));
    assert_eq!(out.code, 0, "{}", out.stderr);
    app
}

fn spawn_send(app: &TestApp) -> Child {
    app.cli()
        .arg("send")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("missive send starts")
}

async fn counts(app: &TestApp) -> HashMap<String, i64> {
    let rows: Vec<(String, i64)> =
        sqlx::query_as("SELECT state, COUNT(*) FROM letters GROUP BY state")
            .fetch_all(&app.db().await)
            .await
            .unwrap();
    rows.into_iter().collect()
}

// The scripted server runs on this test's runtime while the binary runs: use worker threads.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn killing_send_at_random_moments_loses_nothing_and_never_doubles_silently() {
    let server = slow_server(3).await;
    let app = app_with_signers(&server, 150).await;
    let total = 600;
    let mut rng = rand::rng();

    // Kill `missive send` 25 times, each at a random moment of its run.
    let kills = 25;
    for _ in 0..kills {
        let mut child = spawn_send(&app);
        tokio::time::sleep(Duration::from_millis(rng.random_range(30..400))).await;
        child.kill().expect("SIGKILL");
        child.wait().unwrap();
    }
    // Then let it finish: leases of killed runs expire after 5 s and are recovered.
    let deadline = Instant::now() + Duration::from_secs(120);
    loop {
        let out = run(app.cli().arg("send"));
        assert!(out.code == 0 || out.code == 1, "{}", out.stderr);
        let c = counts(&app).await;
        let open: i64 = ["queued", "deferred", "claimed", "sending"]
            .iter()
            .map(|s| c.get(*s).copied().unwrap_or(0))
            .sum();
        if open == 0 {
            break;
        }
        if Instant::now() >= deadline {
            let why: Vec<(String, Option<String>, i64)> = sqlx::query_as(
                "SELECT state, last_reply, COUNT(*) FROM letters WHERE state NOT IN ('sent', 'in_doubt') GROUP BY 1, 2",
            )
            .fetch_all(&app.db().await)
            .await
            .unwrap();
            panic!("the queue did not drain: {c:?} {why:?}");
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }

    let c = counts(&app).await;
    let sent = c.get("sent").copied().unwrap_or(0);
    let in_doubt = c.get("in_doubt").copied().unwrap_or(0);
    let failed = c.get("failed").copied().unwrap_or(0);
    assert_eq!(
        sent + in_doubt + failed,
        total,
        "every letter is sent, failed or in doubt: {c:?}"
    );

    let mut per_id: HashMap<String, usize> = HashMap::new();
    for r in server.received() {
        *per_id.entry(r.header("Message-ID").unwrap()).or_default() += 1;
    }
    let duplicates: usize = per_id.values().map(|n| n - 1).sum();
    let sent_ids: Vec<String> =
        sqlx::query_scalar("SELECT message_id FROM letters WHERE state = 'sent'")
            .fetch_all(&app.db().await)
            .await
            .unwrap();
    let lost = sent_ids
        .iter()
        .filter(|id| !per_id.contains_key(*id))
        .count();
    let doubt_ids: Vec<String> =
        sqlx::query_scalar("SELECT message_id FROM letters WHERE state = 'in_doubt'")
            .fetch_all(&app.db().await)
            .await
            .unwrap();
    let doubt_delivered = doubt_ids
        .iter()
        .filter(|id| per_id.contains_key(*id))
        .count();
    eprintln!(
        "kill test: {kills} kills, {total} letters, {sent} sent, {in_doubt} in doubt, {failed} failed, \
         {lost} lost, {duplicates} duplicates received, {doubt_delivered} of the letters in doubt had in fact arrived"
    );
    assert_eq!(lost, 0, "every letter marked sent reached the server");
    assert!(
        duplicates as i64 <= in_doubt,
        "duplicates ({duplicates}) <= letters in doubt ({in_doubt})"
    );
    // Letters never received are exactly some of those in doubt.
    let never: i64 = total - per_id.len() as i64;
    assert!(
        never <= in_doubt,
        "letters the server never got ({never}) are all in doubt ({in_doubt})"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_stops_a_batch_cleanly_with_no_letter_left_leased() {
    let server = slow_server(10).await;
    let app = app_with_signers(&server, 100).await;
    let mut child = spawn_send(&app);
    let deadline = Instant::now() + Duration::from_secs(30);
    while server.received().len() < 20 {
        assert!(Instant::now() < deadline, "the batch did not start");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }

    let pid = child.id().to_string();
    std::process::Command::new("kill")
        .args(["-TERM", &pid])
        .status()
        .unwrap();
    let stopped_at = Instant::now();
    let status = loop {
        if let Some(status) = child.try_wait().unwrap() {
            break status;
        }
        assert!(
            stopped_at.elapsed() < Duration::from_secs(10),
            "send did not stop within 10 s of SIGTERM"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    };

    assert_eq!(status.code(), Some(0));
    let c = counts(&app).await;
    assert_eq!(c.get("claimed"), None, "{c:?}");
    assert_eq!(c.get("sending"), None, "{c:?}");
    assert_eq!(c.get("in_doubt"), None, "{c:?}");
    let sent = c.get("sent").copied().unwrap_or(0);
    assert!((20..400).contains(&sent), "{c:?}");
    assert_eq!(sent + c.get("queued").copied().unwrap_or(0), 400);
    assert_eq!(
        server.received().len() as i64,
        sent,
        "the server got exactly the letters marked sent"
    );
}

/// Posts one signature to the JSON API of a server at `address` over a fresh connection;
/// returns the HTTP status.
async fn post_signature(address: &str, key: &str, email: &str) -> std::io::Result<u16> {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let body = crate::web_helpers::api_body(email);
    let mut stream = tokio::net::TcpStream::connect(address).await?;
    let request = format!(
        "POST /api/v1/campaigns/{CAMPAIGN}/signatures HTTP/1.1\r\nHost: {address}\r\n\
         Authorization: Bearer {key}\r\nContent-Type: application/json\r\n\
         Content-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    );
    stream.write_all(request.as_bytes()).await?;
    let mut response = Vec::new();
    stream.read_to_end(&mut response).await?;
    std::str::from_utf8(&response)
        .ok()
        .and_then(|r| r.split(' ').nth(1))
        .and_then(|code| code.parse().ok())
        .ok_or_else(|| std::io::Error::other("no status line"))
}

// The clients run on this test's runtime while the binary runs: use worker threads.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn killing_serve_mid_intake_keeps_every_acknowledged_signature_with_all_its_letters() {
    let port = crate::web_helpers::free_port();
    let address = format!("127.0.0.1:{port}");
    let key = "crash-test-key-0123456789-abcdefgh";
    let base_url = format!("http://{address}");
    let app = spawn_app_with(&[
        ("MISSIVE_HTTP__BIND", &address),
        ("MISSIVE_HTTP__BASE_URL", &base_url),
        (
            "MISSIVE_HTTP__SECRET",
            "crash-test-secret-0123456789-abcdefghijkl",
        ),
        ("MISSIVE_HTTP__API_KEYS", key),
        ("MISSIVE_HTTP__API_PER_SECOND", "1000000"),
        ("MISSIVE_HTTP__API_BURST", "1000000"),
    ])
    .await;
    let targets = app.app.registry.get(CAMPAIGN).unwrap().targets.len() as i64;
    let mut rng = rand::rng();
    let mut acknowledged = Vec::new();
    let mut refused = 0;

    // Kill `missive serve --no-worker` 5 times while 8 clients sign as fast as they can.
    for round in 0..5 {
        let mut child = app
            .cli()
            .args(["serve", "--no-worker"])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("missive serve starts");
        let up = Instant::now() + Duration::from_secs(30);
        while tokio::net::TcpStream::connect(&address).await.is_err() {
            assert!(Instant::now() < up, "the server did not start listening");
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        let clients: Vec<_> = (0..8)
            .map(|c| {
                let (address, key) = (address.clone(), key.to_owned());
                tokio::spawn(async move {
                    let mut acknowledged = Vec::new();
                    let mut refused = 0;
                    for n in 0.. {
                        let email = format!("r{round}-c{c}-n{n}@example.net");
                        match post_signature(&address, &key, &email).await {
                            Ok(201) => acknowledged.push(email),
                            Ok(_) => refused += 1,
                            Err(_) => break,
                        }
                    }
                    (acknowledged, refused)
                })
            })
            .collect();
        tokio::time::sleep(Duration::from_millis(rng.random_range(100..600))).await;
        child.kill().expect("SIGKILL");
        child.wait().unwrap();
        for client in clients {
            let (ok, no) = client.await.unwrap();
            acknowledged.extend(ok);
            refused += no;
        }
    }

    assert_eq!(refused, 0, "no signature was refused while the server ran");
    assert!(
        !acknowledged.is_empty(),
        "some signatures were acknowledged"
    );
    let rows: Vec<(String, i64)> = sqlx::query_as(
        "SELECT s.email_normalized, COUNT(l.id) FROM signatures s
           LEFT JOIN letters l ON l.signature_id = s.id GROUP BY s.id",
    )
    .fetch_all(&app.db().await)
    .await
    .unwrap();
    let stored: HashMap<String, i64> = rows.into_iter().collect();
    let lost: Vec<&String> = acknowledged
        .iter()
        .filter(|e| !stored.contains_key(*e))
        .collect();
    let partial: Vec<(&String, &i64)> = stored.iter().filter(|(_, n)| **n != targets).collect();
    eprintln!(
        "intake kill test: 5 kills, {} signatures acknowledged, {} stored, {} lost, {} without all {targets} letters",
        acknowledged.len(),
        stored.len(),
        lost.len(),
        partial.len()
    );
    assert!(lost.is_empty(), "acknowledged but not stored: {lost:?}");
    assert!(
        partial.is_empty(),
        "stored without all their letters: {partial:?}"
    );
    // The database opens cleanly after the kills.
    let out = run(app.cli().arg("status"));
    assert_eq!(out.code, 0, "{}", out.stderr);
}
